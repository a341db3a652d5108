"""Runs the firmware test modules (tests/firmware/fw_*.py) under the MicroPython unix port
and under CPython, one subprocess per module and interpreter, one pytest case per function.
A module whose subject exists only on MicroPython says so with a line
`RUNS_ON = ("micropython",)` and runs there only (fwmp_lost_press.py: select.poll() of a
stream-protocol object, which CPython's poll cannot hold)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil_tests.sim.tools import FIRMWARE_DIR, find_micropython

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parent / "vectors"
MODULES = sorted(p.stem for p in HERE.glob("fw*_*.py") if p.stem.startswith(("fw_", "fwmp_")))
MICROPYTHON = find_micropython()
INTERPRETERS = ["micropython", "cpython"]


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for mod in MODULES:
        text = (HERE / f"{mod}.py").read_text()
        names = re.findall(r"^def (test_\w+)\(", text, re.M)
        only = re.search(r"^RUNS_ON = \(\"(\w+)\",\)$", text, re.M)
        for interp in INTERPRETERS:
            if only is None or only.group(1) == interp:
                cases.extend((interp, mod, name) for name in names)
    return cases


_results: dict[tuple[str, str], dict[str, str]] = {}


def _run_module(interp: str, mod: str, tmp_root: Path) -> dict[str, str]:
    key = (interp, mod)
    if key in _results:
        return _results[key]
    scratch = tmp_root / f"{interp}-{mod}"
    scratch.mkdir(parents=True, exist_ok=True)
    path_entries = [str(HERE), str(FIRMWARE_DIR / "lib"), str(FIRMWARE_DIR)]
    env = dict(os.environ, GE_VECTORS=str(VECTORS), GE_SCRATCH=str(scratch))
    if interp == "micropython":
        assert MICROPYTHON is not None
        cmd = [MICROPYTHON, str(HERE / "fwtest.py"), mod]
        # MicroPython needs a bigger heap for the property-test inputs.
        cmd[1:1] = ["-X", "heapsize=8M"]
        # ".frozen" as on a board: MicroPython's built-in Python modules (ssl is one)
        env["MICROPYPATH"] = ":".join([".frozen", *path_entries])
    else:
        cmd = [sys.executable, str(HERE / "fwtest.py"), mod]
        env["PYTHONPATH"] = os.pathsep.join(path_entries)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150, check=False)
    results: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in proc.stdout.splitlines():
        if current is not None:
            if line == f"end {current}":
                results[current] = "\n".join(lines)
                current, lines = None, []
            else:
                lines.append(line)
        elif line.startswith("ok "):
            results[line[3:]] = "ok"
        elif line.startswith("FAIL "):
            current = line[5:]
    if not any(line.startswith("done ") for line in proc.stdout.splitlines()):
        results["__crash__"] = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    _results[key] = results
    return results


@pytest.mark.parametrize(("interp", "mod", "name"), _cases())
def test_firmware(interp: str, mod: str, name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if interp == "micropython" and MICROPYTHON is None:
        pytest.skip(
            "NO MICROPYTHON: firmware tests ran under CPython only; install the unix port "
            "or pass MICROPYTHON=/path/to/micropython"
        )
    results = _run_module(interp, mod, tmp_path_factory.getbasetemp() / "fw")
    if "__crash__" in results:
        pytest.fail(f"{mod} crashed under {interp}:\n{results['__crash__']}")
    assert name in results, f"{name} did not run under {interp}"
    if results[name] != "ok":
        pytest.fail(f"{mod}.{name} failed under {interp}:\n{results[name]}")
