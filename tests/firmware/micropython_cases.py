"""Runs a firmware case module (tests/firmware/cases_*.py) under the MicroPython unix port.

A CPython test writes the cases it computed with an oracle (cbor2, the cobs package, the
gateway's own code) to a JSON file; the case module's test_cases() reads it on the device
interpreter and checks the firmware against every case.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hil_tests.sim.tools import FIRMWARE_DIR, find_micropython

HERE = Path(__file__).resolve().parent


def run_cases(module: str, cases: Any, workdir: Path, heap: str = "8M", note: str = "") -> None:
    """Run `module`'s test_cases() on MicroPython with `cases` as its GE_CASES file.

    Skips when there is no MicroPython; fails with the device's output (and `note`, e.g. the
    seed to replay with) when a case does not hold.
    """
    micropython = find_micropython()
    if micropython is None:
        pytest.skip(f"NO MICROPYTHON: {module} ran under CPython only")
    path = workdir / f"{module}.json"
    path.write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    env = dict(
        os.environ,
        GE_CASES=str(path),
        GE_VECTORS=str(HERE.parent / "vectors"),
        MICROPYPATH=f"{HERE}:{FIRMWARE_DIR / 'lib'}",
    )
    proc = subprocess.run(
        [micropython, "-X", f"heapsize={heap}", str(HERE / "fwtest.py"), module],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{note}\n{proc.stdout}\n{proc.stderr}"
    assert "ok test_cases" in proc.stdout
