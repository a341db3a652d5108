"""A wristband's parts besides its pins: where it is, its battery and its accelerometer.

The band's radio sends its adverts to the virtual air at `air` (hil_tests/sim/air.py; the
device gets it in $GE_VBOARD_AIR) from the position the supervisor last sent. The supervisor
sends "pos <x> <y>" (metres), "bat <percent>" (0-100, 255 unknown) and accelerometer
samples "acc <x> <y> <z>" (milli-g, stamped by the device on arrival). Position and battery
persist across power cycles and are sent first on every connection.
"""

from __future__ import annotations

from collections.abc import Callable

from hil_tests.sim.vboard.core import Core


class Band:
    """The band's position, battery and accelerometer feed; `send` reaches the device."""

    def __init__(self, core: Core, air: tuple[str, int], *, send: Callable[[bytes], None]) -> None:
        self._core = core
        self._send = send
        self.air = air
        self._pos = (0.0, 0.0)
        self._battery = 100

    def env(self) -> dict[str, str]:
        """What the device's radio needs to find the air."""
        return {"GE_VBOARD_AIR": f"{self.air[0]}:{self.air[1]}"}

    def greeting(self) -> bytes:
        x, y = self._pos
        return f"pos {x:.2f} {y:.2f}\nbat {self._battery}\n".encode()

    def set_position(self, x: float, y: float) -> None:
        """Move the band to (x, y), metres; its next adverts go out from there."""
        with self._core.cond:
            self._pos = (x, y)
            self._send(f"pos {x:.2f} {y:.2f}\n".encode())

    def set_battery(self, percent: int) -> None:
        """The battery level, 0-100 (255: unknown)."""
        if not (0 <= percent <= 100 or percent == 255):
            raise ValueError(f"battery must be 0-100 or 255, not {percent!r}")
        with self._core.cond:
            self._battery = percent
            self._send(f"bat {percent}\n".encode())

    def accel(self, x: int, y: int, z: int) -> None:
        """One accelerometer sample, milli-g."""
        with self._core.cond:
            self._send(f"acc {int(x)} {int(y)} {int(z)}\n".encode())
