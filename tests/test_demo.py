"""`make demo` runs as a newcomer runs it: a subprocess, exit status and what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hil_tests.sim.tools import REPO_ROOT


def test_demo_verifies_every_alarm_and_exits_zero(micropython: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hil_tests.demo", "--plain", "--workdir", str(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200"},  # one table row per line
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "venue demo: passed" in out
    # per alarm: verified at central with its latency; per post: the LED after the receipts
    rows = re.findall(r"PASS .* ALARM from (AP-000\d) within 5 s .* (\d+) ms boot 1 seq 2", out)
    assert sorted(r[0] for r in rows) == ["AP-0001", "AP-0002", "AP-0003"], out
    assert all(0 < int(ms) < 5000 for _, ms in rows)
    for post in ("AP-0001", "AP-0002", "AP-0003"):
        assert re.search(rf"^{post}: LED amber( -> blue)? -> green$", out, re.M), out
    # the kitchen's smoke sensor: SMOKE verified at central, red while the smoke lasted, then clear
    assert re.search(r"PASS .* SMOKE from VS-0001 within 4 s .* boot 1 seq 2", out), out
    assert re.search(r"PASS .* SENSOR_CLEAR from VS-0001 within 4 s .* boot 1 seq 3", out), out
    assert re.search(r"^VS-0001: LED (amber -> )?red -> green$", out, re.M), out
    assert "FAIL" not in out
    # every process it started is gone: none still runs from the demo's directories
    left = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if str(cwd.readlink()).startswith(str(tmp_path)):
                left.append(cwd.parent.name)
        except OSError:
            continue
    assert left == [], f"processes left running: {left}"
