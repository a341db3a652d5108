"""The control socket: the AF_UNIX stream socket the device's hal (firmware/hal/unix.py)
connects to, one ASCII line per message (protocol in hil_tests/sim/board.py's docstring).

This part is the transport only: it accepts connections, greets each one with the board's
current input state (`greeting()`), hands every line the device sends to `on_line`, which
returns why a line is malformed (or None), and sends the supervisor's lines to every
connection (`broadcast()`). Several connections may be open at once. Sending never blocks:
a connection that does not take a whole line is dropped. A malformed line (`on_line`'s
verdict, or more than 128 bytes without a newline) is counted and logged, and otherwise
ignored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from hil_tests.sim.vboard.core import Core, Part, log

_MAX_LINE = 128
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes; leave room


class _Client:
    """One control-socket connection from the device."""

    __slots__ = ("dead", "rx", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rx = b""
        self.dead = False


class ControlSocket(Part):
    """The listening socket at `path` and the device's connections to it."""

    def __init__(
        self, core: Core, path: Path, *, greeting: Callable[[], bytes], on_line: Callable[[bytes], str | None]
    ) -> None:
        self._core = core
        self._greeting = greeting
        self._on_line = on_line
        self._clients: list[_Client] = []
        self.malformed = 0
        self._sock_dir: str | None = None
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            self._sock_dir = tempfile.mkdtemp(prefix="ge-vb-")
            path = Path(self._sock_dir) / path.name
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.ExitStack() as undo:
            if self._sock_dir is not None:
                undo.callback(shutil.rmtree, self._sock_dir, True)
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            undo.callback(self._listener.close)
            self._listener.bind(str(path))
            undo.callback(path.unlink)
            self._listener.listen(8)
            self._listener.setblocking(False)
            undo.pop_all()

    @property
    def connected(self) -> bool:
        """True while the device holds a connection."""
        return any(not c.dead for c in self._clients)

    def broadcast(self, line: bytes) -> None:
        """Send one line to every connection (caller holds the lock)."""
        for client in self._clients:
            self._send(client, line)

    # --- loop hooks --------------------------------------------------------------------

    def fds(self) -> list[int]:
        return [self._listener.fileno()] + [c.sock.fileno() for c in self._clients if not c.dead]

    def handle(self, fd: int) -> bool:
        if fd == self._listener.fileno():
            self._accept()
            return True
        for client in self._clients:
            if not client.dead and client.sock.fileno() == fd:
                self._receive(client)
                return True
        return False

    def service(self, now: float) -> None:
        dead = [c for c in self._clients if c.dead]
        if not dead:
            return
        self._clients = [c for c in self._clients if not c.dead]
        for client in dead:
            client.sock.close()
        self._core.cond.notify_all()

    def shutdown(self) -> None:
        for client in self._clients:
            client.sock.close()
        self._clients = []
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)

    # --- connections -------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        client = _Client(sock)
        self._clients.append(client)
        self._send(client, self._greeting())
        self._core.cond.notify_all()

    def _receive(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            client.dead = True
            return
        client.rx += data
        while b"\n" in client.rx:
            line, client.rx = client.rx.split(b"\n", 1)
            why = self._on_line(line)
            if why is not None:
                self._bad_line(line, why)
        if len(client.rx) > _MAX_LINE:
            self._bad_line(client.rx[:_MAX_LINE], "line too long")
            client.rx = b""

    def _bad_line(self, line: bytes, why: str) -> None:
        self.malformed += 1
        log.warning("%s: malformed control line %r: %s", self._core.name, line[:_MAX_LINE], why)
        self._core.cond.notify_all()

    def _send(self, client: _Client, line: bytes) -> None:
        # never blocks; a stuck client is dropped by the loop
        if client.dead:
            return
        try:
            sent = client.sock.send(line)
        except OSError as exc:
            log.warning("%s: control connection lost: %s", self._core.name, exc)
            client.dead = True
            self._core.wake()
            return
        if sent != len(line):
            log.warning("%s: control connection not reading; dropping it", self._core.name)
            client.dead = True
            self._core.wake()
