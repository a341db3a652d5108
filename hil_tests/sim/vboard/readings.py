"""A venue sensor's channel readings: an integer per channel in the channel's unit
(docs/protocol.md 7.1), sent to the device as "val <name> <integer>" when set and on every
new connection once the channel has one (None before: the device reads None too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hil_tests.sim.vboard.core import Core


class Readings:
    """The channels' current readings; `send` reaches the device."""

    def __init__(self, core: Core, channels: Sequence[str], *, send: Callable[[bytes], None]) -> None:
        self._core = core
        self._send = send
        self._values: dict[str, int | None] = dict.fromkeys(channels)

    def set_value(self, sensor: str, value: int) -> None:
        """A channel's reading; the device sees it at its next service()."""
        if sensor not in self._values:
            known = ", ".join(self._values) or "none"
            raise ValueError(f"{self._core.name}: no sensor channel {sensor!r} (channels: {known})")
        if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 31) <= value < 1 << 31:
            raise ValueError(f"{self._core.name}: reading for {sensor} must be a 32-bit integer, not {value!r}")
        with self._core.cond:
            self._values[sensor] = value
            self._send(f"val {sensor} {value}\n".encode())

    def greeting(self) -> bytes:
        return b"".join(f"val {name} {v}\n".encode() for name, v in self._values.items() if v is not None)

    @property
    def values(self) -> dict[str, int | None]:
        """Every channel's reading (None: not set yet), a copy."""
        with self._core.cond:
            return dict(self._values)
