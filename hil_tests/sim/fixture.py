"""The rig fixture, simulated: the fixture's line protocol (firmware/lib/fixture_proto.py) on a
pty, acting on virtual boards through their control sockets and power switch.

On a real bench a Raspberry Pi Pico running firmware/apps/rig_fixture presses buttons through
optocouplers, switches DUT power and reads LEDs through phototransistors, answering on USB
serial. Here the same protocol is answered on a pty, so the host's serial fixture driver
(hil_tests/rig/drivers.py) runs unchanged in CI. The protocol parser is the firmware's own.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
import tty
from collections.abc import Sequence

from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import fixture_proto as proto  # firmware module, found through the path above


class SimFixture:
    """Answers the fixture protocol on `port` (a pty path) for `boards` (channel = index)."""

    def __init__(self, boards: Sequence[VirtualBoard]) -> None:
        self.boards = list(boards)
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave  # held open: the host may open and close the port at will
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-fixture", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self.master, b"")
        self._thread.join(2)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self.master, 256)
            except OSError:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = self.handle(line.decode("ascii", "replace"))
                with contextlib.suppress(OSError):
                    os.write(self.master, reply.encode() + b"\n")
            if len(buf) > proto.MAX_LINE:
                buf = b""
                self.errors += 1
                with contextlib.suppress(OSError):
                    os.write(self.master, proto.err("line too long").encode() + b"\n")

    def handle(self, line: str) -> str:
        """One command line -> one reply line."""
        try:
            verb, ch, arg = proto.parse(line, len(self.boards))
        except proto.ProtoError as exc:
            self.errors += 1
            return str(proto.err(str(exc)))
        if verb == "PING":
            return str(proto.ok("fixture", proto.VERSION, len(self.boards)))
        board = self.boards[ch]
        if verb in ("PRESS", "RELEASE"):
            board.set_input(arg, 1 if verb == "PRESS" else 0)
        elif verb == "HOLD":
            board.set_input("button", 1)
            time.sleep(arg / 1000)  # the fixture holds the optocoupler closed this long
            board.set_input("button", 0)
        elif verb == "POWER":
            if arg:
                board.power_on()
            else:
                board.power_cut()
        elif verb == "LED":
            out = board.outputs
            return str(proto.ok(out["led_r"], out["led_g"], out["led_b"]))
        else:
            name, value = arg
            if name not in board.values:
                self.errors += 1
                return str(proto.err(f"channel {ch} has no sensor input {name!r}"))
            board.set_value(name, value)
        return str(proto.ok())
