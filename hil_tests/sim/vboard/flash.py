"""The board's flash chip: a host directory that is the interpreter's working directory.

It survives power cuts and resets; `install()` factory-flashes files into it (the board must
be off, which the caller checks), keeping their relative paths.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from hil_tests.sim.vboard.core import BoardError


class Flash:
    """The flash directory `root` of the board `name`."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        root.mkdir(exist_ok=True)

    def install(
        self,
        src: Path | Mapping[str, str | bytes | Path],
        config: Mapping[str, object] | None = None,
        erase: bool = False,
    ) -> None:
        """Copy files in; see VirtualBoard.install()."""
        if erase:
            shutil.rmtree(self.root)
            self.root.mkdir()
        if isinstance(src, Mapping):
            for dev_path, content in src.items():
                dest = self.path(dev_path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, dest)
                elif isinstance(content, bytes):
                    dest.write_bytes(content)
                else:
                    dest.write_text(content)
        else:
            root = Path(src)
            if not root.is_dir():
                raise BoardError(f"{self.name}: {root} is not a directory")
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if "__pycache__" in rel.parts or path.suffix == ".pyc" or path.is_dir():
                    continue
                dest = self.path(rel.as_posix())
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        if config is not None:
            (self.root / "config.json").write_text(json.dumps(config, sort_keys=True))

    def path(self, dev_path: str) -> Path:
        """The host path of the device path `dev_path` ("lib/x.py" or "/lib/x.py")."""
        rel = PurePosixPath(dev_path.lstrip("/"))
        if not rel.parts or any(part in ("..", "") for part in rel.parts):
            raise BoardError(f"{self.name}: bad device path {dev_path!r}")
        return self.root.joinpath(*rel.parts)
