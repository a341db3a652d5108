"""The freeze manifests (firmware/manifests/<port>.py) list exactly the apps' import closure.

Each manifest is run as MicroPython's makemanifest runs it (plain Python calling include(),
module(), package()), with those functions recording what would be frozen; the result must
be the bundles' modules for the kinds that port serves (boot.py and main.py stay on the
filesystem). The hardware layer is compared once the tree has the port's hal module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.bundle import FIRMWARE_DIR, source_files

SERVES = {"esp32": ("alarm_post", "sensor"), "rp2": ("alarm_post", "sensor"), "zephyr": ("wristband",)}


def frozen(manifest: Path) -> set[str]:
    """Firmware-relative paths the manifest freezes (the port's own include is not ours)."""
    got: set[str] = set()
    here = manifest.parent

    def module(path: str, base_path: str = ".", opt: int | None = None) -> None:
        got.add((here / base_path / path).resolve().relative_to(FIRMWARE_DIR).as_posix())

    def package(name: str, files: list[str] | None = None, base_path: str = ".", opt: int | None = None) -> None:
        assert files is not None, "list the files: a whole package would freeze other kinds' apps"
        for f in files:
            got.add((here / base_path / name / f).resolve().relative_to(FIRMWARE_DIR).as_posix())

    def include(path: str) -> None:
        assert path.startswith("$(PORT_DIR)"), path

    exec(
        compile(manifest.read_text(), str(manifest), "exec"), {"module": module, "package": package, "include": include}
    )
    return got


@pytest.mark.parametrize("port", sorted(SERVES))
def test_manifest_freezes_the_import_closure(port: str) -> None:
    manifest = FIRMWARE_DIR / "manifests" / f"{port}.py"
    got = frozen(manifest)
    has_hal = (FIRMWARE_DIR / "hal" / f"{port}.py").is_file()
    want: set[str] = set()
    for kind in SERVES[port]:
        want |= {p for p, _ in source_files(kind, FIRMWARE_DIR, port if has_hal else "unix")}
    want -= {"boot.py", "main.py"}
    if not has_hal:  # the port's hardware layer is not in this tree yet: compare the rest
        want = {p for p in want if not p.startswith("hal/")}
        got = {p for p in got if not p.startswith("hal/")}
    assert got == want, (sorted(got - want), sorted(want - got))
