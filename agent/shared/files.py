"""Durable files: every file the agent, central's tools and provisioning keep is written here.

- `write_atomic`: a new file next to the target (every byte written, fsync), renamed over it,
  then the directory fsynced: after a power cut the path holds the old or the new content,
  never a mix, and the rename itself survives.
- `write_new_private`: a secret that must not replace anything: O_EXCL, mode 0600, fsync of
  the file and the directory.
- `write_all`: os.write until every byte is written (a write may be short on a full disk, a
  signal or a pipe).
- `fsync_dir`: makes renames and creations in a directory durable.

The standard library has no atomic replace with fsync (Path.write_text neither fsyncs nor
replaces); these few lines are written here once instead of in each caller.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.shared.errors import ConfigError


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, however many os.write calls it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that entries created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write, fsync, rename over `path`, fsync the directory: the old or the new file, never a mix.

    The file gets exactly `mode` (whatever the umask); the temporary file `<path>.tmp` is created
    with it too, so a secret is never readable by others, not even while being written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves the old file and no half-written copy
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_new_private(path: Path, data: bytes, exists: str) -> None:
    """Create `path` with mode 0600, never over an existing file (`exists` says why), durably."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: {exists}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        path.unlink(missing_ok=True)  # a half-written secret is worse than none: the next run creates it again
        raise
    finally:
        os.close(fd)
    fsync_dir(path.parent)
