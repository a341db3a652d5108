"""main.py on a board the hardware layer cannot drive: one clear line, then the REPL, never a
reset loop (the MicroPython unix port running the real firmware tree in a scratch flash)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hil_tests.sim.tools import FIRMWARE_DIR


def _flash(tmp_path: Path, config: dict[str, object], boards: dict[str, object] | None = None) -> Path:
    flash = tmp_path / "flash"
    for sub in ("lib", "hal", "apps"):
        shutil.copytree(FIRMWARE_DIR / sub, flash / sub)
    for name in ("main.py", "launch.py"):
        shutil.copy(FIRMWARE_DIR / name, flash / name)
    (flash / "config.json").write_text(json.dumps(config))
    if boards:
        (flash / "boards").mkdir()
        for name, doc in boards.items():
            (flash / "boards" / f"{name}.json").write_text(json.dumps(doc))
    return flash


def _run(micropython: str, flash: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MICROPYPATH=":lib")
    env.pop("GE_VBOARD_CTRL", None)
    return subprocess.run(
        [micropython, "main.py"], cwd=flash, env=env, capture_output=True, text=True, timeout=30, check=False
    )


CFG = {"kind": "alarm_post", "id": "AP-0001", "key": "00" * 32, "broker": "127.0.0.1", "port": 1}


@pytest.mark.parametrize(
    ("boards", "board", "line"),
    [
        ({}, "nope", "main: hal: boards/nope.json: no such board file (config.json names board 'nope')"),
        (
            {"post": {"board": "post", "port": "esp32", "button": {"pin": 9}}},
            "post",
            "main: hal: boards/post.json: port: this pin map is for esp32, the firmware runs on unix",
        ),
        ({"post": {"board": "post", "port": "unix"}}, "../post", "main: hal: config.json: board must be a board"),
    ],
)
def test_a_board_that_does_not_fit_stops_at_the_repl_with_one_line(
    tmp_path: Path, micropython: str, boards: dict[str, object], board: str, line: str
) -> None:
    proc = _run(micropython, _flash(tmp_path, {**CFG, "board": board}, boards))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr  # returned to the REPL: no reset
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert "reset" not in proc.stdout and "Traceback" not in proc.stderr
