"""Helpers for the provisioning tests: the tools as real subprocesses, virtual boards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PASSPHRASE = "correct horse battery staple"


def run_tool(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m provisioning|agent ARGS` with the test passphrase in its environment."""
    full_env = {**os.environ, "GE_PROVISION_PASSPHRASE": PASSPHRASE, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def provision(home: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return run_tool("provisioning", "--home", str(home), *args, **kw)  # type: ignore[arg-type]


def assert_user_error(proc: subprocess.CompletedProcess[str], prog: str, *needles: str) -> None:
    """Exit 1, one `prog: message` line naming every needle, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"{prog}: "), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
