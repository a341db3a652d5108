"""One agent per data directory: a lock held for the agent's lifetime, naming its pid.

Two agents on one buffer would each take the other's client id off both brokers, and each
would seal batches on the same hash chain: central would see forks and broken chains. So
`guardian-agent run` takes `flock(LOCK_EX | LOCK_NB)` on `<data_dir>/agent.lock` before it
opens anything there, and a second one refuses to start, naming the first one's pid (written
into the file). The kernel drops a flock when its holder dies, however it dies (kill -9, a
power cut), so a stale file never blocks a restart. The file is never deleted: deleting it
would let a third process lock a new file while the second still holds the old one.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

from agent.shared.errors import AgentError

log = logging.getLogger(__name__)

LOCK_NAME = "agent.lock"


class DataDirInUse(AgentError):
    """Another agent holds the data directory; the message names its pid."""


class DataDirLock:
    """`with DataDirLock(data_dir):` the data directory is this process's until the block ends."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # O_CLOEXEC: a process the agent starts must not inherit (and outlive it holding) the lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataDirInUse(f"{self.path}: cannot open the data directory's lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DataDirInUse(
                f"{self.data_dir} is in use by another guardian-agent ({holder}); two agents on one buffer "
                "would knock each other off the brokers and fork the batch chain. Stop that one first "
                "(systemctl stop guardian-agent), or give this one another [gateway] data_dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the lock holds all the same, only the pid is missing
            log.warning("data_dir_lock_pid_unwritten path=%s reason=%r", self.path, exc.strerror)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def running_holder(data_dir: Path) -> int | None:
    """The pid the lock file names when that process is alive (an agent runs there, most
    likely); None otherwise. Reads only: takes no lock, creates nothing."""
    try:
        text = (Path(data_dir) / LOCK_NAME).read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit() or int(text) == os.getpid():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return int(text)


def _holder(fd: int) -> str:
    """`pid N` from the lock file, as its holder wrote it."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown: the lock file holds no pid"
