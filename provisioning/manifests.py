"""Freeze manifests (firmware/manifests/<port>.py) written from the apps' import closures.

A MicroPython image built with one of these manifests holds the apps' modules frozen: their
bytecode and constants run from flash instead of being loaded into the heap. Each manifest
freezes exactly what the bundles of the kinds that port's image serves carry
(provisioning/closure.py), with the port's hal module and the drivers of the parts its board
files name; boot.py and main.py stay on the filesystem (the start-up runs them by name).

    python -m provisioning.manifests          rewrite firmware/manifests/*.py
    python -m provisioning.manifests --check  exit 1 when a manifest differs from its closure

tests/provisioning/test_manifests.py holds the files equal to what this writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from provisioning.boards import list_boards, load_board
from provisioning.bundle import FIRMWARE_DIR, SOURCE_FILES, source_files

# port -> the device kinds its image serves (docs/boards.md: the boards per product)
SERVES: dict[str, tuple[str, ...]] = {
    "esp32": ("alarm_post", "sensor"),
    "rp2": ("alarm_post", "sensor"),
    "zephyr": ("wristband",),
}


def port_parts(port: str, root: Path = FIRMWARE_DIR) -> tuple[str, ...]:
    """The part drivers the port's board files name (their union)."""
    parts: set[str] = set()
    for name in list_boards(root):
        board = load_board(name, root)
        if board.port == port:
            parts.update(board.parts)
    return tuple(sorted(parts))


def frozen_files(port: str, root: Path = FIRMWARE_DIR) -> list[str]:
    """Firmware-relative paths the port's image freezes, sorted."""
    parts = port_parts(port, root)
    want: set[str] = set()
    for kind in SERVES[port]:
        want |= {p for p, _ in source_files(kind, root, port, parts)}
    return sorted(want - set(SOURCE_FILES))


def _call(fn: str, first: str, files: list[str], base: str) -> str:
    one = f'{fn}({first}, files={json.dumps(files)}, base_path="{base}")'
    if len(one) <= 120:
        return one + "\n"
    inner = "".join(f'        "{f}",\n' for f in files)
    return f'{fn}(\n    {first},\n    files=[\n{inner}    ],\n    base_path="{base}",\n)\n'


def render(port: str, root: Path = FIRMWARE_DIR) -> str:
    """The manifest text for the port's image."""
    files = frozen_files(port, root)
    kinds = ", ".join(SERVES[port])
    parts = port_parts(port, root)
    head = f"""\
# Frozen modules for the {port} port's Guardian Edge image ({kinds}): the apps' import closure
# on this port (provisioning/closure.py), written by `python -m provisioning.manifests`; do not
# edit (tests/provisioning/test_manifests.py keeps the two equal). Frozen, the modules' bytecode
# and constants run from flash instead of the heap. Build with
#   make -C ports/{port} BOARD=<board> FROZEN_MANIFEST=<this file>   (MicroPython source tree)
# boot.py, main.py, config.json and boards/<board>.json stay on the filesystem.
# The port's own frozen modules come first.
include("$(PORT_DIR)/boards/manifest.py")
"""
    out = [head]
    lib = [f[len("lib/") :] for f in files if f.startswith("lib/")]
    out.append("\n# lib/: the pure modules\n")
    out += [f'module("{f}", base_path="../lib")\n' for f in lib]
    hal = [f[len("hal/") :] for f in files if f.startswith("hal/")]
    what = f",\n# and the drivers of the parts its boards name ({', '.join(parts)})" if parts else ""
    out.append(f"\n# the hardware layer: hal/__init__.py, the port's module and what it imports{what}\n")
    out.append(_call("package", '"hal"', hal, ".."))
    apps = [f[len("apps/") :] for f in files if f.startswith("apps/")]
    out.append("\n# the apps this image serves, and the self-test\n")
    out.append(_call("package", '"apps"', apps, ".."))
    rest = [f for f in files if "/" not in f]
    out += [f'module("{f}", base_path="..")\n' for f in rest]
    other = [f for f in files if "/" in f and f.split("/", 1)[0] not in ("lib", "hal", "apps")]
    if other:
        raise ValueError(f"{port}: no manifest section for {other}")
    return "".join(out)


def manifest_path(port: str, root: Path = FIRMWARE_DIR) -> Path:
    return Path(root) / "manifests" / f"{port}.py"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m provisioning.manifests", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a manifest differs")
    ap.add_argument("--firmware", type=Path, default=FIRMWARE_DIR, help="firmware tree (default: the project's)")
    args = ap.parse_args(argv)
    stale = []
    for port in SERVES:
        path = manifest_path(port, args.firmware)
        text = render(port, args.firmware)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"{path}: written")
    if args.check and stale:
        print(f"stale: {', '.join(map(str, stale))}; run python -m provisioning.manifests", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
