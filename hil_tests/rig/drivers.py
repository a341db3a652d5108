"""Drivers: what a test can do with the bench's resources, the same on real and simulated rigs.

- ConsoleDriver: a device's serial console; drain, marker, expect with timeouts, and one log
  file per device per test.
- FixtureDriver: the fixture's line protocol (firmware/lib/fixture_proto.py) over serial:
  press, release, hold, power, LED.
- FlasherDriver (hil_tests/rig/flasher.py): flashes a device on its console port through the
  provisioning code; the ConsoleDriver releases the port for it and reopens it after.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import serial

from hil_tests.rig.errors import FixtureError, RigInfraError
from hil_tests.rig.resources import SerialPort


class ConsoleDriver:
    """A device console; everything read is appended to the current log file."""

    def __init__(self, name: str, port: SerialPort, baudrate: int = 115200) -> None:
        self.name = name
        self.port = port
        self.baudrate = baudrate
        self._ser: serial.Serial | None = None
        self._buf = b""
        self._log: Path | None = None

    def open(self) -> None:
        if self._ser is not None:
            return
        path = self.port.find()
        try:
            self._ser = serial.Serial(path, self.baudrate, timeout=0.05)
        except serial.SerialException as exc:
            raise RigInfraError(f"{self.name}: cannot open console {path}: {exc}") from exc

    def close(self) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def release(self) -> None:
        """Let go of the port for another user of it (the flasher) until open() or the next read.

        What is pending goes into the log first; output read but not yet matched by expect()
        is forgotten, so nothing printed before is taken for what the device prints after.
        """
        if self._ser is not None:
            with contextlib.suppress(RigInfraError):
                self.drain()
        self._buf = b""
        self.close()

    def log_to(self, path: Path | None) -> None:
        """Append what is read from now on to `path` (one file per device per test)."""
        self._log = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> bytes:
        if self._ser is None:
            self.open()
        assert self._ser is not None
        try:
            data: bytes = self._ser.read(4096)
        except serial.SerialException as exc:
            # a port that vanished (USB re-enumeration): find it again next time
            self.close()
            raise RigInfraError(f"{self.name}: console read failed: {exc}") from exc
        if data and self._log is not None:
            with self._log.open("ab") as f:
                f.write(data)
        return data

    def drain(self) -> int:
        """Discard what is pending, so a test never sees an earlier test's output."""
        n = len(self._buf)
        self._buf = b""
        while True:
            data = self._read()
            if not data:
                return n
            n += len(data)

    def read_available(self) -> bytes:
        """What arrived since the last read (waits up to 50 ms for something); logged as always.
        For a reader that keeps the whole output itself (the bench scenario runner)."""
        return self._read()

    def marker(self, text: str) -> None:
        """Write a marker into this device's log (not to the device)."""
        if self._log is not None:
            with self._log.open("ab") as f:
                f.write(f"\n==== {text} ====\n".encode())

    def expect(self, pattern: str | bytes, timeout: float) -> re.Match[bytes]:
        """Wait for `pattern` (a regex) in the console output; consumes up to its end."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self._buf)
            if m is not None:
                self._buf = self._buf[m.end() :]
                return m
            if time.monotonic() >= deadline:
                tail = self._buf[-200:]
                raise AssertionError(f"{self.name}: {rx.pattern!r} not seen within {timeout}s; last output {tail!r}")
            self._buf += self._read()


class FixtureDriver:
    """The fixture's line protocol over a serial port."""

    def __init__(self, port: SerialPort, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self._ser: serial.Serial | None = None
        self.channels = 0
        # one command at a time on the line: the bench runner's LED sampler and its actions
        # share the fixture
        self._lock = threading.Lock()

    def open(self) -> None:
        path = self.port.find()
        try:
            self._ser = serial.Serial(path, 115200, timeout=self.timeout)
        except serial.SerialException as exc:
            raise RigInfraError(f"fixture: cannot open {path}: {exc}") from exc
        self._ser.reset_input_buffer()
        reply = self.command("PING")
        parts = reply.split()
        if len(parts) != 4 or parts[1] != "fixture":
            raise FixtureError(f"fixture: unexpected PING answer {reply!r}")
        self.channels = int(parts[3])

    def close(self) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def command(self, line: str, timeout: float | None = None) -> str:
        """Send one command; the fixture's "OK ..." answer, or FixtureError."""
        if self._ser is None:
            raise FixtureError("fixture: not open")
        with self._lock:
            try:
                self._ser.timeout = timeout or self.timeout
                self._ser.write(line.encode("ascii") + b"\n")
                reply = self._ser.readline()
            except serial.SerialException as exc:
                raise FixtureError(f"fixture: {line!r}: {exc}") from exc
        if not reply.endswith(b"\n"):
            raise FixtureError(f"fixture: no answer to {line!r} within {timeout or self.timeout}s")
        text = str(reply.decode("ascii", "replace")).strip()
        if not text.startswith("OK"):
            raise FixtureError(f"fixture: {line!r}: {text}")
        return text

    def press(self, ch: int, pin: str = "button") -> None:
        self.command(f"PRESS {ch} {pin}")

    def release(self, ch: int, pin: str = "button") -> None:
        self.command(f"RELEASE {ch} {pin}")

    def hold(self, ch: int, ms: int) -> None:
        self.command(f"HOLD {ch} {ms}", timeout=ms / 1000 + self.timeout)

    def click(self, ch: int) -> None:
        self.hold(ch, 150)

    def set_value(self, ch: int, sensor: str, value: int) -> None:
        """Feed a venue sensor channel's reading (a DAC or a switched divider on the fixture)."""
        self.command(f"SET {ch} {sensor} {value}")

    def power(self, ch: int, on: bool) -> None:
        self.command(f"POWER {ch} {'ON' if on else 'OFF'}", timeout=self.timeout + 5)

    def led(self, ch: int) -> str:
        """The LED colour as the phototransistors see it."""
        _, r, g, b = self.command(f"LED {ch}").split()
        return _COLOURS[(r == "1", g == "1", b == "1")]

    def wait_led(self, ch: int, colour: str, timeout: float) -> None:
        """Poll the LED until it shows `colour`; AssertionError (a product failure) if not."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            now = self.led(ch)
            if not seen or seen[-1] != now:
                seen.append(now)
            if now == colour:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"channel {ch}: LED never {colour} within {timeout}s (saw {' -> '.join(seen)})")
            time.sleep(0.02)  # the fixture samples the phototransistors; 50 Hz is plenty


_COLOURS = {
    (False, False, False): "off",
    (True, False, False): "red",
    (False, True, False): "green",
    (False, False, True): "blue",
    (True, True, False): "amber",
    (False, True, True): "cyan",
    (True, False, True): "magenta",
    (True, True, True): "white",
}
