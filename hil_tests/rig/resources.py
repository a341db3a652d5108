"""Resources: the things a bench has, found again after every power cycle.

A USB serial port is named by the adapter's serial number, not by its /dev path: the path of
a board's USB console changes when it re-enumerates after a power cycle. In simulation the
path is fixed (a pty that survives power cycles).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from serial.tools import list_ports

from hil_tests.rig.errors import RigInfraError


@dataclass(frozen=True)
class SerialPort:
    """A serial port by USB serial number (benches) or by fixed path (simulation)."""

    serial_number: str | None = None
    path: str | None = None

    def find(self, timeout: float = 5.0) -> str:
        """The port's current path; waits for a board that is still enumerating."""
        if self.path is not None:
            return self.path
        deadline = time.monotonic() + timeout
        while True:
            for info in list_ports.comports():
                if info.serial_number == self.serial_number:
                    return str(info.device)
            if time.monotonic() >= deadline:
                raise RigInfraError(f"no serial port with USB serial number {self.serial_number!r} after {timeout}s")
            time.sleep(0.1)  # re-enumeration takes a moment after power-on
