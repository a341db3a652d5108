"""What the parts of one virtual board share: one lock, a wake pipe, and the supervisor thread.

Every part keeps its state under `Core.cond` (a condition on a re-entrant lock), so a test's
thread and the supervisor thread see one consistent board, and a change any part makes
wakes every `wait()`. The supervisor thread (`Core.run`) is one poll loop over the file
descriptors of all parts: each round it lets every part do its timed work (`Part.service`),
polls the parts' descriptors (`Part.fds`) for input until the earliest deadline a part
asked for (`Part.due`), and hands each ready descriptor to the part that owns it now
(`Part.handle`). Nothing in the loop blocks: parts read and write non-blocking descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence

# one logger for every part of a board, named after the module tests know
log = logging.getLogger("hil_tests.sim.board")


class BoardError(RuntimeError):
    """The virtual board could not do what was asked; the message says why."""


class BoardTimeout(BoardError, TimeoutError):
    """A wait on the virtual board passed its deadline."""


class Part:
    """One part of the board as the supervisor loop sees it; every hook runs holding the lock."""

    def fds(self) -> list[int]:
        """Descriptors to poll for input this round."""
        return []

    def handle(self, fd: int) -> bool:
        """`fd` is readable: act on it and return True if it is (still) this part's."""
        return False

    def due(self, now: float) -> float | None:
        """Seconds until this part needs the loop to come round, or None."""
        return None

    def service(self, now: float) -> None:
        """Timed work, once every round before polling."""

    def shutdown(self) -> None:
        """Release everything; the loop is ending (the board is being closed)."""


class Core:
    """The lock, the wake pipe and the lifetime flags of one board."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition(threading.RLock())
        self.closing = False  # close() asked the loop to end
        self.closed = False  # the loop ended and every part let go of its resources
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    def check_open(self) -> None:
        if self.closing or self.closed:
            raise BoardError(f"{self.name}: board is closed")

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; the caller holds `cond`. False after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.cond.wait(remaining)
        return True

    def wake(self) -> None:
        """Make the loop start a new round now (its poll set or deadlines changed); the
        caller holds `cond`, so the pipe cannot close meanwhile."""
        if self.closed:
            return
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # --- the supervisor thread -------------------------------------------------------

    def start(self, parts: Sequence[Part]) -> None:
        self._thread = threading.Thread(target=self._run, args=(parts,), name=f"vboard-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait for it; the parts shut down in the loop's thread. Again
        after that: nothing."""
        with self.cond:
            if self.closed:
                return
            self.closing = True
            self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - the loop never blocks
                raise BoardError(f"{self.name}: bridge thread did not stop")

    def _run(self, parts: Sequence[Part]) -> None:
        try:
            while True:
                with self.cond:
                    if self.closing:
                        break
                    now = time.monotonic()
                    for part in parts:
                        part.service(now)
                    fds = [self._wake_r] + [fd for part in parts for fd in part.fds()]
                    timeout = self._timeout(parts, time.monotonic())
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                for fd, _ in poller.poll(timeout):
                    self._dispatch(parts, fd)
        except Exception:  # pragma: no cover - a bug here must not hang the tests silently
            log.exception("%s: bridge thread failed", self.name)
            raise
        finally:
            with self.cond:
                for part in parts:
                    part.shutdown()
                self.release()
                self.cond.notify_all()

    def release(self) -> None:
        """Close the wake pipe; the board is closed (or was never finished)."""
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self.closed = True

    @staticmethod
    def _timeout(parts: Sequence[Part], now: float) -> int | None:
        waits = [w for w in (part.due(now) for part in parts) if w is not None]
        if not waits:
            return None
        return max(0, int(min(waits) * 1000) + 1)

    def _dispatch(self, parts: Sequence[Part], fd: int) -> None:
        with self.cond:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                return
            # asked again now, not when polled: an earlier handler this round may have
            # closed a descriptor and another taken its number
            for part in parts:
                if part.handle(fd):
                    return


def raw_tty(fd: int, isig: bool) -> None:
    """Raw mode on a pty slave; `isig` keeps Ctrl-C as SIGINT for the process on it."""
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    if isig:
        attrs[3] |= termios.ISIG
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def open_pty() -> tuple[int, int]:
    """A pty pair, the slave in raw mode without signals, the master non-blocking."""
    master, slave = os.openpty()
    try:
        raw_tty(slave, isig=False)
        os.set_blocking(master, False)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave
