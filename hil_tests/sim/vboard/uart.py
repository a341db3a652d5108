"""The board's serial line to the gateway, bridged like the console.

The interpreter opens the slave of a private pty (made by `attach()` for every interpreter
started; the device finds it in $GE_VBOARD_UART), and the bridge copies bytes between that
pty's master and the master of a second pty whose slave the gateway opens. That host side is
reached through `path`, a symlink in the work directory (like a /dev/serial/by-id/ link)
that stays the same across power cycles and is removed at shutdown, when the port
disappears as an unplugged USB adapter does. Like a UART, the bridge never blocks: bytes
that find no room, or arrive for a board that is off, are dropped and counted (`dropped`);
a new interpreter starts with an empty line.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from hil_tests.sim.vboard.core import Part, open_pty


class Uart(Part):
    """Both ptys of the line and the bridge between them."""

    def __init__(self, link: Path) -> None:
        self.dropped = 0
        self._board = (-1, -1)  # the running interpreter's pty (master, slave); -1 without one
        self._master, self._hold = open_pty()
        try:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(os.ttyname(self._hold))
        except BaseException:
            os.close(self._master)
            os.close(self._hold)
            raise
        # the slave is held open like the console's, so the master never reports a hangup
        self.path = link

    def attach(self) -> str:
        """A new interpreter's end of the line: the path of its pty."""
        self._board = open_pty()
        return os.ttyname(self._board[1])

    def drain_board(self) -> None:
        """Pass on what the interpreter wrote last."""
        if self._board[0] >= 0:
            self._from_board()

    def detach(self) -> None:
        """The interpreter is gone: its end of the line closes."""
        for fd in self._board:
            if fd >= 0:
                os.close(fd)
        self._board = (-1, -1)

    def fds(self) -> list[int]:
        return [self._master] + ([self._board[0]] if self._board[0] >= 0 else [])

    def handle(self, fd: int) -> bool:
        if fd == self._master:
            self._from_host()
        elif fd == self._board[0] and fd >= 0:
            self._from_board()
        else:
            return False
        return True

    def shutdown(self) -> None:
        self.detach()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._master)
        os.close(self._hold)

    def _from_host(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:  # BlockingIOError included; the slave is held, so no hangup
            return
        written = 0
        if self._board[0] >= 0:
            with contextlib.suppress(OSError):
                written = os.write(self._board[0], data)
        self.dropped += len(data) - written

    def _from_board(self) -> None:
        while True:
            try:
                data = os.read(self._board[0], 4096)
            except OSError:
                return
            if not data:
                return
            written = 0
            with contextlib.suppress(OSError):
                written = os.write(self._master, data)
            self.dropped += len(data) - written
