"""`make demo` runs as a newcomer runs it: a subprocess, exit status and what it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hil_tests.sim.tools import REPO_ROOT


def test_demo_verifies_every_alarm_and_exits_zero(micropython: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hil_tests.demo", "--workdir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = re.findall(r"^(AP-000\d) .* ALARM boot 1 seq 2 P0 batch \d+ +(\d+)ms +(.*)$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["AP-0001", "AP-0002", "AP-0003"], proc.stdout
    for _, latency, leds in rows:
        assert 0 < int(latency) < 5000
        assert leds.startswith("amber") and leds.endswith("green"), leds
    assert "every alarm verified at central" in proc.stdout
    # every process it started is gone: none still runs from the demo's directories
    left = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if str(cwd.readlink()).startswith(str(tmp_path)):
                left.append(cwd.parent.name)
        except OSError:
            continue
    assert left == [], f"processes left running: {left}"
