"""The freeze manifests (firmware/manifests/<port>.py) list exactly the apps' import closure.

Each manifest is run as MicroPython's makemanifest runs it (plain Python calling include(),
module(), package()), with those functions recording what would be frozen; the result must
be the bundles' modules for the kinds that port serves, with the port's hal module and the
drivers of the parts its board files name (boot.py and main.py stay on the filesystem). The
files are also exactly what `python -m provisioning.manifests` writes, so a change of the
closure that was not carried into them fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from provisioning.bundle import FIRMWARE_DIR, source_files
from provisioning.manifests import SERVES, main, manifest_path, port_parts, render


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
    manifest = manifest_path(port)
    got = frozen(manifest)
    want: set[str] = set()
    for kind in SERVES[port]:
        want |= {p for p, _ in source_files(kind, FIRMWARE_DIR, port, port_parts(port))}
    want -= {"boot.py", "main.py"}
    assert got == want, (sorted(got - want), sorted(want - got))
    assert f"hal/{port}.py" in got and "hal/machineboard.py" in got and "hal/unix.py" not in got
    assert ("hal/lis3dh.py" in got) == (port == "zephyr")  # only the band's board has the accelerometer


@pytest.mark.parametrize("port", sorted(SERVES))
def test_manifest_is_what_the_generator_writes(port: str) -> None:
    assert manifest_path(port).read_text() == render(port), "run: python -m provisioning.manifests"


def test_check_mode_reports_a_stale_manifest_and_the_generator_rewrites_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "fw"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    assert main(["--check", "--firmware", str(tree)]) == 0
    (tree / "lib" / "extra.py").write_text("X = 1\n")
    (tree / "hal" / "rp2.py").write_text((tree / "hal" / "rp2.py").read_text() + "import extra\n")
    assert main(["--check", "--firmware", str(tree)]) == 1
    assert "rp2.py" in capsys.readouterr().err
    assert main(["--firmware", str(tree)]) == 0
    assert 'module("extra.py", base_path="../lib")' in (tree / "manifests" / "rp2.py").read_text()
    assert 'module("extra.py"' not in (tree / "manifests" / "esp32.py").read_text()
    assert main(["--check", "--firmware", str(tree)]) == 0
