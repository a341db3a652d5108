"""A small, real filesystem for disk-full tests and benchmarks: tmpfs of a given size, or an ext4
image on a loop device (what a Pi's SD card holds), mounted on a directory and unmounted after.

Mounting needs CAP_SYS_ADMIN (root, as in CI and this project's sandbox). `unavailable()` says
why a mount cannot be made here, once per process, so that a test can skip with that reason
instead of faking ENOSPC. `hog()` fills what is left with a file of allocated blocks, as a
runaway log would, and `free_hog()` gives it back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

KINDS = ("tmpfs", "ext4")
_HOG = ".hog"


class MountError(RuntimeError):
    """mount/umount failed; carries the command's output."""


def _run(*args: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise MountError(f"{' '.join(args)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")


# kind -> None (mountable) or why not, for each kind probed in this process
PROBED: dict[str, str | None] = {}


def unavailable(kind: str = "tmpfs") -> str | None:
    """None when a `kind` filesystem can be mounted here; otherwise why not (probed once)."""
    if kind not in PROBED:
        PROBED[kind] = _probe(kind)
    return PROBED[kind]


def _probe(kind: str) -> str | None:
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    if kind == "ext4" and shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (e2fsprogs)"
    probe = Path(tempfile.mkdtemp(prefix="ge-mount-probe-"))
    try:
        with SmallFilesystem(probe / "fs", 1 << 20, kind):
            pass
    except (MountError, OSError) as exc:
        return f"cannot mount a {kind} filesystem here ({exc}); it needs CAP_SYS_ADMIN (root)"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return None


class SmallFilesystem:
    """`with SmallFilesystem(dir, size):` a `size`-byte filesystem mounted on `dir`."""

    def __init__(self, mountpoint: Path, size: int, kind: str = "tmpfs") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind: one of {KINDS}")
        self.mountpoint = Path(mountpoint)
        self.size = size
        self.kind = kind
        self._image: Path | None = None
        self._mounted = False

    def __enter__(self) -> SmallFilesystem:
        self.mount()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unmount()

    def mount(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if self.kind == "tmpfs":
            _run("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.mountpoint))
        else:
            # the image lives next to the mount point, not on it; -m 0: no blocks kept for root
            self._image = self.mountpoint.with_name(self.mountpoint.name + ".img")
            with self._image.open("wb") as f:
                f.truncate(self.size)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", str(self._image))
            _run("mount", "-o", "loop", str(self._image), str(self.mountpoint))
        self._mounted = True

    def unmount(self) -> None:
        if self._mounted:
            self._mounted = False
            try:
                _run("umount", str(self.mountpoint))
            except MountError:
                _run("umount", "-l", str(self.mountpoint))  # a process still has a file open there
        if self._image is not None:
            self._image.unlink(missing_ok=True)
            self._image = None

    def free(self) -> int:
        st = os.statvfs(self.mountpoint)
        return st.f_bavail * st.f_frsize

    def hog(self, leave: int = 0) -> int:
        """Allocate a file over all the free space but `leave` bytes (a runaway log); its size."""
        path = self.mountpoint / _HOG
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            step = 1 << 20
            while step >= 4096:
                want = self.free() - leave
                if want < step:
                    step //= 2
                    continue
                try:
                    os.posix_fallocate(fd, size, step)
                    size += step
                except OSError:
                    os.ftruncate(fd, size)
                    step //= 2
            return size
        finally:
            os.close(fd)

    def free_hog(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.mountpoint / _HOG).unlink()
