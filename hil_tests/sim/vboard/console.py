"""The board's USB-UART console: the interpreter's private pty bridged to a stable one.

The interpreter's stdin/stdout/stderr and controlling terminal is the slave of a private pty
(`attach()` makes one for every interpreter started). The bridge copies bytes between that
pty's master and the master of a second pty whose slave path (`path`) stays the same for the
life of the board; mpremote and any serial terminal use it. Everything the board prints is
also appended to the console log, with power-on, reset and power-cut markers (`marker()`),
and the last MiB is kept for `find()` and `output()`.

The bridge never blocks the board: writes to the console side are non-blocking and what does
not fit is dropped and counted. The stable slave is held open here (Linux otherwise reports
POLLHUP on the master without end while no one has it open, and keeps ~20 KB of writes to
replay to the next opener), so output that stays unread for `idle_discard` seconds is
discarded and counted, and `drain()` discards what is pending at once. Input that arrives
while no interpreter runs is dropped and counted.

Which REPL the interpreter shows is tracked from its output: a reset taken in the raw REPL
restarts in the raw REPL (`attach(raw_entry=True)` types Ctrl-A at the first prompt), as a
board does, so mpremote's soft reset works.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import termios
import time
from pathlib import Path

from hil_tests.sim.vboard.core import Core, Part, log, open_pty

_CHECK_INTERVAL = 0.1
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_FRIENDLY_PROMPT = b"\r\n>>> "
_FRIENDLY_BANNER = b'Type "help()" for more information.'
_KEEP = 1 << 20  # bytes of console output kept in memory for find()


def _queued(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return int(buf[0])


class Console(Part):
    """The console pty pair, the bridge to the running interpreter, the log and what was kept."""

    def __init__(self, core: Core, log_path: Path, idle_discard: float) -> None:
        self._core = core
        self.log_path = log_path
        self._idle_discard = idle_discard
        self._kept = bytearray()
        self._base = 0  # absolute offset of _kept[0]
        self.dropped = 0  # board output nobody read
        self.input_dropped = 0  # console input with no interpreter to take it
        self._prev_queued = 0
        self._written = 0
        self._stale_since: float | None = None
        self._next_check = 0.0
        self._board = -1  # master of the running interpreter's pty; -1 while none runs
        self._board_eof = False
        self._tail = b""
        self.raw_repl = False  # the interpreter shows the raw REPL
        self._want_raw_entry = False
        self._master, self._hold = open_pty()
        try:
            # Held open for the board's lifetime: see the module docstring.
            os.set_blocking(self._hold, False)
            self.path = os.ttyname(self._hold)
            self._log = log_path.open("ab")
        except BaseException:
            os.close(self._master)
            os.close(self._hold)
            raise

    # --- the interpreter's side ------------------------------------------------------

    def attach(self, raw_entry: bool) -> int:
        """A terminal for a new interpreter: returns the slave, which the caller closes once
        the process has it. `raw_entry`: type Ctrl-A at its first prompt (a raw-REPL reset)."""
        # ISIG stays off until the ROM runs: a 0x03 that arrives while the interpreter
        # initialises (no SIGINT handler yet) would kill it instead of interrupting.
        self._board, slave = open_pty()
        self._board_eof = False
        self.raw_repl = False
        self._tail = b""
        self._want_raw_entry = raw_entry
        return slave

    def detach(self) -> None:
        """The interpreter is gone: close its terminal (after `drain_board()`)."""
        if self._board >= 0:
            os.close(self._board)
            self._board = -1

    def drain_board(self) -> None:
        """Take what the interpreter printed last (e.g. the raw REPL's "OK")."""
        if self._board >= 0:
            self._from_board()

    # --- loop hooks --------------------------------------------------------------------

    def fds(self) -> list[int]:
        return [self._master] + ([self._board] if self._board >= 0 and not self._board_eof else [])

    def handle(self, fd: int) -> bool:
        if fd == self._master:
            self._from_terminal()
        elif fd == self._board and fd >= 0:
            self._from_board()
        else:
            return False
        return True

    def due(self, now: float) -> float | None:
        return _CHECK_INTERVAL if self._prev_queued or self._written else None

    def service(self, now: float) -> None:
        # Drop output that no reader is consuming, so a late reader does not get it.
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_INTERVAL
        queued = _queued(self._hold)
        consumed = self._prev_queued + self._written - queued
        self._written = 0
        if queued == 0:
            self._stale_since = None
        elif consumed > 0 or self._stale_since is None:
            self._stale_since = now
        elif now - self._stale_since >= self._idle_discard:
            termios.tcflush(self._hold, termios.TCIFLUSH)
            self.dropped += queued
            self._stale_since = None
            queued = 0
            self._core.cond.notify_all()
        self._prev_queued = queued

    def shutdown(self) -> None:
        self.detach()
        for fd in (self._master, self._hold):
            os.close(fd)
        self._log.close()

    # --- the bridge --------------------------------------------------------------------

    def _from_terminal(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # pragma: no cover - we hold the slave open
            log.warning("%s: console read failed: %s", self._core.name, exc)
            return
        if self._board < 0 or self._board_eof:
            self.input_dropped += len(data)
            return
        try:
            written = os.write(self._board, data)
        except OSError:  # BlockingIOError included: the interpreter's input is full
            written = 0
        self.input_dropped += len(data) - written

    def _from_board(self) -> None:
        while True:
            try:
                data = os.read(self._board, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    log.warning("%s: board pty read failed: %s", self._core.name, exc)
                self._board_eof = True  # the interpreter closed its terminal: it is exiting
                return
            if not data:
                self._board_eof = True
                return
            self._log.write(data)
            self._log.flush()
            self._kept += data
            if len(self._kept) > _KEEP:
                cut = len(self._kept) - _KEEP
                del self._kept[:cut]
                self._base += cut
            self._track_repl(data)
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                written = 0
            self._written += written
            self.dropped += len(data) - written
            self._core.cond.notify_all()

    def _track_repl(self, data: bytes) -> None:
        # Which REPL is the interpreter in? Needed to restart a reset from the raw REPL in
        # the raw REPL, as a board does (mpremote waits for "raw REPL" after its soft reset).
        buf = self._tail + data
        self._tail = buf[-64:]
        raw_at = buf.rfind(_RAW_BANNER)
        friendly_at = max(buf.rfind(_FRIENDLY_PROMPT), buf.rfind(_FRIENDLY_BANNER))
        if raw_at > friendly_at:
            self.raw_repl = True
        elif friendly_at > raw_at:
            self.raw_repl = False
        if self._want_raw_entry and buf.endswith(b">>> "):
            self._want_raw_entry = False
            with contextlib.suppress(OSError):
                os.write(self._board, b"\x01")  # Ctrl-A: into the raw REPL again

    # --- what the board printed --------------------------------------------------------

    def marker(self, what: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"\n--- vboard {self._core.name}: {what} at {stamp} ---\n".encode())
        self._log.flush()

    @property
    def offset(self) -> int:
        """Bytes printed since the board was made."""
        return self._base + len(self._kept)

    def output(self, since: int = 0) -> bytes:
        """What was printed from offset `since` (the last MiB at most)."""
        return bytes(self._kept[max(since - self._base, 0) :])

    def find(self, needle: bytes, since: int) -> int:
        """Offset just after the first `needle` printed at or after `since`, or -1."""
        pos = self._kept.find(needle, max(since - self._base, 0))
        return self._base + pos + len(needle) if pos >= 0 else -1

    # --- the terminal side -------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes of output waiting in the console for a reader."""
        return _queued(self._hold)

    def drain(self) -> int:
        """Discard output nobody has read yet; returns how many bytes."""
        pending = _queued(self._hold)
        termios.tcflush(self._hold, termios.TCIFLUSH)
        self._prev_queued = 0
        self._written = 0
        self._stale_since = None
        self.dropped += pending
        return pending
