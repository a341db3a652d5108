"""The alarms' disk reserve: a preallocated file in the data directory the buffer gives up when the disk is full.

SQLite cannot set space aside inside its own file, and a full filesystem stops it twice over:
a commit appends to the write-ahead log (the log must grow), and a checkpoint copies the log
into the database file (the file must grow, or the log can never be reset). Both fail with
SQLITE_FULL at the same moment, and nothing the agent then writes, not even the deletes that
would evict telemetry, fits. So the space alarms need is held as a file of allocated blocks
(`posix_fallocate`, so the filesystem counts them as used): truncating it hands blocks back at
once, for the checkpoint and the alarms' commits, and it is allocated again when the
filesystem has room (agent/gateway/planner.py decides when, agent/gateway/buffer.py does it).

The reserve is not fsynced: after a power cut it may be shorter, and the next start (or the
next check with room) allocates it again.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Allocation step: a failed step is truncated off again, so a full filesystem keeps whatever
# the reserve had before.
_CHUNK = 64 * 1024
# The default reserve: 16 MiB, or 1/16 of a smaller filesystem.
DEFAULT_RESERVE = 16 * 1024 * 1024
_DEFAULT_SHARE = 16


@dataclass(frozen=True, slots=True)
class Filesystem:
    """What statvfs says of the filesystem holding the data directory."""

    free: int  # bytes an unprivileged writer may still allocate (f_bavail)
    size: int  # bytes in all


def filesystem(path: Path) -> Filesystem:
    st = os.statvfs(path)
    return Filesystem(free=st.f_bavail * st.f_frsize, size=st.f_blocks * st.f_frsize)


def default_reserve(data_dir: Path) -> int:
    """16 MiB, or 1/16 of the data filesystem when that is smaller."""
    return min(DEFAULT_RESERVE, filesystem(data_dir).size // _DEFAULT_SHARE)


class SpaceReserve:
    """The reserve file: `size` bytes allocated now, `target` when whole."""

    def __init__(self, path: Path, target: int) -> None:
        self.path = Path(path)
        self.target = target
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            self.size = 0

    @property
    def deficit(self) -> int:
        return max(0, self.target - self.size)

    def fill(self) -> int:
        """Allocate the reserve up to its target, as far as the filesystem allows; its size."""
        if self.size == self.target:
            return self.size
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # no inode left, or the directory went read-only
            log.error("reserve_unusable path=%s reason=%r", self.path, exc.strerror)
            return self.size
        try:
            self.size = self._grow(fd)
        except OSError as exc:  # an I/O error on the card: the reserve is what it is
            log.error("reserve_unusable path=%s reason=%r", self.path, exc.strerror)
        finally:
            os.close(fd)
        return self.size

    def _grow(self, fd: int) -> int:
        size = min(os.fstat(fd).st_size, self.target)
        os.ftruncate(fd, size)  # a reserve above its target (the setting went down) gives the rest back
        while size < self.target:
            step = min(_CHUNK, self.target - size)
            try:
                os.posix_fallocate(fd, size, step)
            except OSError as exc:
                os.ftruncate(fd, size)  # blocks a failed step allocated go back
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise
                break
            size += step
        return size

    def release(self, nbytes: int) -> int:
        """Give `nbytes` of the reserve back to the filesystem (all that is left at most); how many."""
        give = min(max(0, nbytes), self.size)
        if give == 0:
            return 0
        try:
            os.truncate(self.path, self.size - give)
        except FileNotFoundError:  # removed by hand: it held nothing any more
            self.size = 0
            return 0
        except OSError as exc:
            log.error("reserve_unusable path=%s reason=%r", self.path, exc.strerror)
            return 0
        self.size -= give
        return give
