"""The board's digital pins: inputs the supervisor drives, outputs the device reports.

Input levels belong to the supervisor and persist across power cycles (a held button stays
held); every change goes to the device stamped with the supervisor's clock, so changes the
board reads together keep their spacing (firmware/hal/unix.py Board._feed). Outputs come
from the device's "out" lines and drop to 0 when the interpreter stops, as a real board's
GPIOs do; every change is kept in the output history, from which the LED's colour history
is derived.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hil_tests.sim.vboard.core import Core

INPUT_PINS = ("button", "tamper")
BAND_INPUTS = ("strap",)  # a wristband's (air=...) extra input: the strap contact, 1 = open
OUTPUT_PINS = ("led_r", "led_g", "led_b", "buzzer")
LED_COLOURS = {
    (0, 0, 0): "off",
    (1, 0, 0): "red",
    (0, 1, 0): "green",
    (0, 0, 1): "blue",
    (1, 1, 0): "amber",
    (0, 1, 1): "cyan",
    (1, 0, 1): "magenta",
    (1, 1, 1): "white",
}


@dataclass(frozen=True)
class OutputChange:
    """One change of an output pin.

    Attributes:
        time: `time.monotonic()` when the supervisor saw it.
        pin: output pin name.
        level: new level, 0 or 1.
        line: number of the control line that carried it; changes from one line (several
            pins set together, e.g. an RGB colour) share it.
    """

    time: float
    pin: str
    level: int
    line: int = 0


def led_colour(r: int, g: int, b: int) -> str:
    """Colour name shown by an RGB LED with these pin levels."""
    return LED_COLOURS[(1 if r else 0, 1 if g else 0, 1 if b else 0)]


class Pins:
    """Input and output levels and the output history; `send` reaches the device."""

    def __init__(self, core: Core, inputs: Sequence[str], *, send: Callable[[bytes], None]) -> None:
        self._core = core
        self._send = send
        self.input_names = tuple(inputs)
        self._inputs = dict.fromkeys(self.input_names, 0)
        self._outputs = dict.fromkeys(OUTPUT_PINS, 0)
        self._history: list[OutputChange] = []
        self._lines = 0  # control lines from the board that changed outputs

    # --- inputs ------------------------------------------------------------------------

    def set_input(self, pin: str, level: int) -> None:
        """Drive an input pin; the device sees it at its next service()."""
        if pin not in self.input_names:
            raise ValueError(f"unknown input pin {pin!r}; inputs are {', '.join(self.input_names)}")
        if level not in (0, 1):
            raise ValueError(f"level must be 0 or 1, not {level!r}")
        with self._core.cond:
            self._inputs[pin] = level
            # stamped with the supervisor's time: the board keeps the spacing of changes it
            # reads together (firmware/hal/unix.py Board._feed)
            line = f"in {pin} {level} {time.monotonic_ns() // 1_000_000}\n".encode()
            self._send(line)
            self._core.cond.notify_all()

    def greeting(self, pins: Sequence[str]) -> bytes:
        """The current level of `pins`, for a new connection (unstamped: not a change)."""
        return b"".join(f"in {pin} {self._inputs[pin]}\n".encode() for pin in pins)

    @property
    def inputs(self) -> dict[str, int]:
        """Current input levels (a copy)."""
        with self._core.cond:
            return dict(self._inputs)

    # --- outputs -----------------------------------------------------------------------

    def board_line(self, line: bytes) -> str | None:
        """One line from the device: "out <pin> <0|1> [<pin> <0|1> ...]"; why it is malformed, or None."""
        parts = line.split(b" ")
        if len(parts) < 3 or len(parts) % 2 == 0 or parts[0] != b"out":
            return "expected 'out <pin> <0|1> [<pin> <0|1> ...]'"
        changes = []
        for i in range(1, len(parts), 2):
            pin = parts[i].decode("ascii", "replace")
            if pin not in OUTPUT_PINS:
                return "unknown output pin"
            if parts[i + 1] not in (b"0", b"1"):
                return "level must be 0 or 1"
            changes.append((pin, int(parts[i + 1])))
        self._lines += 1
        now = time.monotonic()
        for pin, level in changes:
            self._set_output(pin, level, now, self._lines)
        return None

    def outputs_off(self) -> None:
        """The interpreter stopped: every output drops to 0, together."""
        self._lines += 1
        now = time.monotonic()
        for pin in OUTPUT_PINS:
            self._set_output(pin, 0, now, self._lines)

    def _set_output(self, pin: str, level: int, now: float, line: int = 0) -> None:
        if self._outputs[pin] == level:
            return
        self._outputs[pin] = level
        self._history.append(OutputChange(now, pin, level, line))
        self._core.cond.notify_all()

    def output(self, pin: str) -> int:
        """The level of one output (caller holds the lock, e.g. in a wait predicate)."""
        return self._outputs[pin]

    @property
    def outputs(self) -> dict[str, int]:
        """Current output levels as last reported by the device (a copy)."""
        with self._core.cond:
            return dict(self._outputs)

    @property
    def history(self) -> list[OutputChange]:
        """Every output change since the board was made, oldest first (a copy)."""
        with self._core.cond:
            return list(self._history)

    @property
    def led(self) -> str:
        """Colour of the RGB LED."""
        with self._core.cond:
            o = self._outputs
            return led_colour(o["led_r"], o["led_g"], o["led_b"])

    @property
    def led_history(self) -> list[tuple[float, str]]:
        """(monotonic time, colour) each time the LED colour changed, oldest first.

        Pin changes carried by one control line (the device set the colour with one
        `Board.rgb()`) count as one change, so no in-between colour appears.
        """
        levels = dict.fromkeys(("led_r", "led_g", "led_b"), 0)
        colour = "off"
        out: list[tuple[float, str]] = []
        changes = [c for c in self.history if c.pin in levels]
        for i, change in enumerate(changes):
            levels[change.pin] = change.level
            if change.line and i + 1 < len(changes) and changes[i + 1].line == change.line:
                continue
            new = led_colour(levels["led_r"], levels["led_g"], levels["led_b"])
            if new != colour:
                colour = new
                out.append((change.time, new))
        return out
