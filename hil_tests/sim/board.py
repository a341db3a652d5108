"""A virtual board: the MicroPython unix port running one simulated device.

The supervisor (`VirtualBoard`) plays the parts of a board that are not the firmware: the
flash chip (a host directory that is the interpreter's working directory), the boot ROM
(`romboot.py`, outside the flash), the GPIO pins (a control socket), the USB-UART console
(a pty pair with a stable slave path) and the power switch. Each of those is a part in
hil_tests/sim/vboard/ (flash, power, console, uart, control socket, pins, band, readings),
all sharing one lock and one supervisor thread (vboard/core.py); this class composes them
and keeps the board's public API in one place.

Boot. `power_on()` starts `micropython romboot.py` with the flash directory as its cwd and
MICROPYPATH=":lib", so `sys.path` is ['', 'lib'] like a board's ['', '/lib']. The ROM runs
/boot.py, then /main.py, then leaves the interpreter at the REPL, as a board does. When the
interpreter exits on its own (Ctrl-D at the friendly REPL, `sys.exit()` or
`machine.soft_reset()` in the app, Ctrl-D in an empty raw REPL) the supervisor treats it as
a soft reset: it starts the interpreter again, which prints "MPY: soft reboot" and boots.
A reset taken from the raw REPL comes back in the raw REPL after boot.py (main.py is not
run), like a board's, so `mpremote` without `resume` (which soft-resets first) works too.
`power_cut()` kills the interpreter (SIGKILL) and nothing restarts it until `power_on()`.
The flash directory survives both.

Console. The interpreter's stdin/stdout/stderr and controlling terminal is the slave of a
private pty (raw mode, no output post-processing, ISIG on once the ROM runs, so a 0x03 from
the console raises KeyboardInterrupt in the running app). A bridge thread copies bytes
between that pty's master and the master of a second pty whose slave path
(`console_path`) stays the same for the life of the `VirtualBoard`; `mpremote connect
<console_path> resume ...` and any serial terminal use it. Everything the board prints is
also appended to `console_log_path`, with power-on, reset and power-cut markers.
The bridge never blocks the board: writes to the console side are non-blocking and what
does not fit is dropped and counted (a UART nobody listens to loses bytes). The supervisor
holds the console slave open itself. Linux otherwise reports POLLHUP on the master without
end while no one has the slave open, and keeps accepting writes (about 20 KB) that it
replays to the next process that opens the slave. Because of that, output that stays
unread for `console_idle_discard` seconds (no reader is making progress) is discarded and
counted, and `drain_console()` discards whatever is pending at once, so a reader that
opens the console later does not get a pile of stale output. Console input that arrives
while the board is off is dropped. The console pty survives power cycles, so a terminal can
stay connected across them. Two differences from a board: the app's print() ends lines
with "\n" only (the REPL itself writes "\r\n"), and a Ctrl-C that arrives in the ~20 ms
before the ROM runs is an ordinary character, not an interrupt (a board ignores one before
its runtime is up, too): wait for the app's first output before interrupting it.

Virtual pins. The supervisor listens on an AF_UNIX stream socket whose path the device gets
in $GE_VBOARD_CTRL (device side: firmware/hal/unix.py). ASCII, one message per line ending
in "\\n", fields separated by one space:

    supervisor -> board   in <pin> <0|1> [<ms>]  input level: button, tamper (1 = pressed/open);
                                             <ms>: when it changed, the supervisor's monotonic
                                             clock; changes the board reads together keep
                                             their spacing
    board -> supervisor   out <pin> <0|1>    output level: led_r, led_g, led_b, buzzer
                          out <pin> <0|1> <pin> <0|1> ...   several outputs changed at once

A board made with `air=(host, port)` is a wristband: it has a radio whose adverts go to the
virtual air there (hil_tests/sim/air.py; $GE_VBOARD_AIR), the input "strap" (1 = strap open),
and values the supervisor sends:

    supervisor -> board   pos <x> <y>          where the band is, metres (`set_position()`)
                          bat <percent>        battery, 0-100 or 255 unknown (`set_battery()`)
                          acc <x> <y> <z>      one accelerometer sample, milli-g (`accel()`)

A board made with `sensors=(name, ...)` is a venue sensor with those channels; the
supervisor sends each channel's reading (an integer in the channel's unit, docs/protocol.md
7.1) once it has one:

    supervisor -> board   val <name> <integer>  a channel's reading (`set_value()`)

On every connection the supervisor first sends `in` for every input with its current level
(a wristband's `in strap`, `pos` and `bat` go before the others; a sensor's `val` lines after);
the board answers with `out` for every output. Input levels belong to the supervisor and
persist across power cycles (a held button stays held); outputs drop to 0 when the
interpreter stops (power cut or reset), as a real board's GPIOs do. Several connections may
be open at once: inputs go to all of them, outputs are taken from any. A malformed line
(unknown verb or pin, a level other than 0 or 1, more than 128 bytes without a newline) is
counted and logged by the side that receives it and otherwise ignored.

UART. A board made with `uart=True` has a serial line to the gateway, bridged like the
console: the interpreter opens the slave of a private pty whose path it gets in
$GE_VBOARD_UART (device side: `Board.uart()` in firmware/hal/unix.py), and a bridge copies
bytes between that pty's master and the master of a second pty whose slave the gateway opens.
That host side is reached through `uart_path`, a symlink in the work directory (like a
/dev/serial/by-id/ link) that stays the same across power cycles and is removed by close(),
when the port disappears as an unplugged USB adapter does. Like a UART, the bridge never
blocks: bytes that find no room, or arrive for a board that is off, are dropped and counted
(`uart_dropped`); a new interpreter starts with an empty line.

Other environment variables the device gets: $GE_VBOARD_UID (hex of `board_uid(name)`, 8
bytes derived from the board name: the board's unique id), $GE_VBOARD_NAME, and $GE_VBOARD_RESET ("power", "soft"
or "raw": why this interpreter was started; read by the ROM).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from hil_tests.sim.tools import require_micropython
from hil_tests.sim.vboard.band import Band
from hil_tests.sim.vboard.console import Console
from hil_tests.sim.vboard.control import ControlSocket
from hil_tests.sim.vboard.core import BoardError, BoardTimeout, Core, Part
from hil_tests.sim.vboard.flash import Flash
from hil_tests.sim.vboard.pins import BAND_INPUTS, INPUT_PINS, LED_COLOURS, OUTPUT_PINS, OutputChange, Pins, led_colour
from hil_tests.sim.vboard.power import ROMBOOT, Power
from hil_tests.sim.vboard.readings import Readings
from hil_tests.sim.vboard.uart import Uart

__all__ = [
    "BAND_INPUTS",
    "INPUT_PINS",
    "LED_COLOURS",
    "OUTPUT_PINS",
    "ROMBOOT",
    "BoardError",
    "BoardTimeout",
    "OutputChange",
    "VirtualBoard",
    "board_uid",
    "led_colour",
]


def board_uid(name: str) -> bytes:
    """The 8-byte unique id the virtual board `name` reports (`hal.Board().uid()`)."""
    return hashlib.sha256(b"ge-vboard:" + name.encode()).digest()[:8]


class VirtualBoard:
    """One simulated device: the MicroPython unix port plus pins, console and power.

    Args:
        name: board name; the board's unique id derives from it.
        workdir: directory for the flash directory, the console log and the control socket.
        micropython: path of the unix port; found with `require_micropython()` if omitted.
        env: extra environment variables for the interpreter.
        console_idle_discard: seconds console output may stay unread before it is dropped.
        uart: give the board a UART to the gateway (see `uart_path`).
        air: (host, port) of the virtual air: the board is a wristband (see the module docstring).
        sensors: a venue sensor's channel names (see `set_value()`).
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        micropython: str | None = None,
        env: Mapping[str, str] | None = None,
        console_idle_discard: float = 1.0,
        uart: bool = False,
        air: tuple[str, int] | None = None,
        sensors: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.micropython = micropython or require_micropython()
        self.console_log_path = self.workdir / "console.log"
        core = self._core = Core(name)
        self._flash = Flash(name, self.workdir / "flash")
        self.flash_dir = self._flash.root
        self._band = Band(core, air, send=self._send) if air is not None else None
        self._pins = Pins(core, INPUT_PINS + (BAND_INPUTS if air is not None else ()), send=self._send)
        self._readings = Readings(core, sensors, send=self._send)
        made: list[Part] = []
        try:
            self._control = ControlSocket(
                core, self.workdir / "ctrl.sock", greeting=self._greeting, on_line=self._pins.board_line
            )
            made.append(self._control)
            self.control_path = self._control.path
            self._console = Console(core, self.console_log_path, console_idle_discard)
            made.append(self._console)
            self.console_path = self._console.path
            self._uart = Uart(self.workdir / "uart") if uart else None
        except BaseException:
            for part in reversed(made):
                part.shutdown()
            core.release()
            raise
        self.uart_path: Path | None = self._uart.path if self._uart is not None else None
        """Host-side path of the board's UART (a symlink to a pty), None without one."""
        self._power = Power(
            core,
            micropython=self.micropython,
            cwd=self.flash_dir,
            env=self._env(dict(env or {})),
            console=self._console,
            uart=self._uart,
            outputs_off=self._pins.outputs_off,
        )
        self._console.marker("supervisor start")
        # the loop shuts them down in this order: the interpreter first, the console (and
        # its log, which gets the last marker) last
        uart_part = [self._uart] if self._uart is not None else []
        core.start([self._power, self._control, *uart_part, self._console])

    def _send(self, line: bytes) -> None:
        self._control.broadcast(line)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C",
            "MICROPYPATH": ":lib",
            "GE_VBOARD_CTRL": str(self.control_path),
            "GE_VBOARD_NAME": self.name,
            "GE_VBOARD_UID": board_uid(self.name).hex(),
        }
        if self._band is not None:
            env.update(self._band.env())
        return env | extra

    def _greeting(self) -> bytes:
        # every input first, a wristband's strap, position and battery before the others
        # (the device's hal reads the button and tamper lines before its app starts)
        band = self._pins.greeting(BAND_INPUTS) + self._band.greeting() if self._band is not None else b""
        return band + self._pins.greeting(INPUT_PINS) + self._readings.greeting()

    # ----------------------------------------------------------------- flash

    def install(
        self,
        src: Path | Mapping[str, str | bytes | Path],
        config: Mapping[str, object] | None = None,
        erase: bool = False,
    ) -> None:
        """Factory-flash files into the flash directory, keeping their relative paths.

        Args:
            src: a directory whose tree is copied (``__pycache__`` and ``*.pyc`` skipped),
                or a mapping from device path (``"lib/x.py"`` or ``"/lib/x.py"``) to file
                content or to a host file to copy.
            config: written as ``/config.json`` when given.
            erase: empty the flash directory first.

        Raises:
            BoardError: the board is powered, or a device path leaves the flash directory.
        """
        with self._core.cond:
            if self._power.powered or self._power.pid is not None:
                raise BoardError(f"{self.name}: cannot flash a powered board; power_cut() first")
        self._flash.install(src, config, erase)

    # ----------------------------------------------------------------- power

    def power_on(self, timeout: float = 5.0) -> None:
        """Switch the board on: the interpreter starts and boots. No-op if already on.

        Raises:
            BoardError: the interpreter could not be started.
        """
        self._power.on(timeout)

    def power_cut(self, timeout: float = 5.0) -> None:
        """Cut the power: SIGKILL the interpreter; the flash directory stays as it is."""
        self._power.cut(timeout)

    @property
    def running(self) -> bool:
        """True while an interpreter process is alive (including during a soft reset)."""
        return self._power.running

    @property
    def powered(self) -> bool:
        """True between power_on() and power_cut()."""
        return self._power.powered

    @property
    def pid(self) -> int | None:
        """Process id of the current interpreter, if one runs."""
        return self._power.pid

    @property
    def resets(self) -> int:
        """How many times the interpreter exited on its own and was restarted."""
        return self._power.resets

    # ----------------------------------------------------------------- pins

    def set_input(self, pin: str, level: int) -> None:
        """Drive an input pin (button, tamper; strap on a wristband); the device sees it at its next service()."""
        self._pins.set_input(pin, level)

    def press(self, pin: str = "button") -> None:
        """Press (and keep pressed) a button; for tamper: open the enclosure."""
        self.set_input(pin, 1)

    def release(self, pin: str = "button") -> None:
        """Release a button; for tamper: close the enclosure."""
        self.set_input(pin, 0)

    def hold(self, ms: int, pin: str = "button") -> None:
        """Press, keep pressed for `ms` milliseconds, release (blocks for that long)."""
        self.press(pin)
        try:
            time.sleep(ms / 1000)  # the press itself: the button is held this long
        finally:
            self.release(pin)

    def click(self, ms: int = 150, pin: str = "button") -> None:
        """A short press of `ms` milliseconds."""
        self.hold(ms, pin)

    @property
    def inputs(self) -> dict[str, int]:
        """Current input levels (a copy)."""
        return self._pins.inputs

    @property
    def outputs(self) -> dict[str, int]:
        """Current output levels as last reported by the device (a copy)."""
        return self._pins.outputs

    @property
    def output_history(self) -> list[OutputChange]:
        """Every output change since the supervisor started, oldest first (a copy)."""
        return self._pins.history

    @property
    def led(self) -> str:
        """Colour of the RGB LED: off, red, green, blue, amber, cyan, magenta or white."""
        return self._pins.led

    @property
    def led_history(self) -> list[tuple[float, str]]:
        """(monotonic time, colour) each time the LED colour changed, oldest first; pin
        changes from one control line (one `Board.rgb()`) count as one change."""
        return self._pins.led_history

    @property
    def connected(self) -> bool:
        """True while the device holds a control-socket connection."""
        with self._core.cond:
            return self._control.connected

    @property
    def malformed_lines(self) -> int:
        """Malformed control lines received from the device."""
        with self._core.cond:
            return self._control.malformed

    # ----------------------------------------------------------------- wristband, sensor

    def set_position(self, x: float, y: float) -> None:
        """Move a wristband to (x, y), metres; its next adverts go out from there."""
        self._wristband().set_position(x, y)

    def set_battery(self, percent: int) -> None:
        """A wristband's battery level, 0-100 (255: unknown)."""
        self._wristband().set_battery(percent)

    def accel(self, x: int, y: int, z: int) -> None:
        """One accelerometer sample (milli-g) for a wristband; the device stamps it on arrival."""
        self._wristband().accel(x, y, z)

    def _wristband(self) -> Band:
        if self._band is None:
            raise BoardError(f"{self.name}: not a wristband (made without air=...)")
        return self._band

    def set_value(self, sensor: str, value: int) -> None:
        """A venue sensor channel's reading; the device sees it at its next service()."""
        self._readings.set_value(sensor, value)

    @property
    def values(self) -> dict[str, int | None]:
        """The sensor channels' current readings (None: not set yet), a copy."""
        return self._readings.values

    # ----------------------------------------------------------------- waits

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Wait until `predicate()` is true; it is re-checked whenever the board's state
        (outputs, connection, process, console output) changes.

        Raises:
            BoardTimeout: still false after `timeout` seconds.
        """
        with self._core.cond:
            if not self._core.wait(predicate, timeout):
                raise BoardTimeout(
                    f"{self.name}: timed out after {timeout}s waiting for "
                    f"{what or getattr(predicate, '__name__', 'a condition')}; "
                    f"led={self.led} outputs={self.outputs} running={self.pid is not None} "
                    f"resets={self.resets}; console tail: {self._console.output(self._console.offset - 300)!r}"
                )

    def wait_led(self, colour: str, timeout: float = 5.0) -> None:
        """Wait until the LED shows `colour` (see `led`)."""
        if colour not in LED_COLOURS.values():
            raise ValueError(f"unknown colour {colour!r}")
        self.wait_for(lambda: self.led == colour, timeout, f"LED {colour}")

    def wait_output(self, pin: str, level: int, timeout: float = 5.0) -> None:
        """Wait until output `pin` is at `level`."""
        if pin not in OUTPUT_PINS:
            raise ValueError(f"unknown output pin {pin!r}")
        self.wait_for(lambda: self._pins.output(pin) == level, timeout, f"{pin}={level}")

    def wait_connected(self, timeout: float = 5.0) -> None:
        """Wait until the device has connected to the control socket."""
        self.wait_for(lambda: self.connected, timeout, "a control connection")

    def wait_console(self, text: bytes | str, timeout: float = 5.0, since: int = 0) -> int:
        """Wait until the board prints `text` at or after console offset `since`.

        Returns:
            The console offset just after the match (pass it as `since` to a later wait).
        """
        needle = text.encode() if isinstance(text, str) else text
        found = -1

        def seen() -> bool:
            nonlocal found
            found = self._console.find(needle, since)
            return found >= 0

        self.wait_for(seen, timeout, f"console output {needle!r}")
        return found

    # ----------------------------------------------------------------- console

    @property
    def console_offset(self) -> int:
        """How many bytes the board has printed since the supervisor started."""
        with self._core.cond:
            return self._console.offset

    def console_output(self, since: int = 0) -> bytes:
        """What the board printed from offset `since` (the last MiB at most)."""
        with self._core.cond:
            return self._console.output(since)

    def drain_console(self) -> int:
        """Discard console output nobody has read yet; returns how many bytes."""
        with self._core.cond:
            self._core.check_open()
            return self._console.drain()

    @property
    def console_pending(self) -> int:
        """Bytes of board output waiting in the console for a reader."""
        with self._core.cond:
            self._core.check_open()
            return self._console.pending

    @property
    def console_dropped(self) -> int:
        """Bytes of board output dropped because no one read the console."""
        with self._core.cond:
            return self._console.dropped

    @property
    def input_dropped(self) -> int:
        """Console input bytes dropped (board off, or its input buffer full)."""
        with self._core.cond:
            return self._console.input_dropped

    @property
    def uart_dropped(self) -> int:
        """UART bytes dropped (no room on the other side, or the board off)."""
        with self._core.cond:
            return self._uart.dropped if self._uart is not None else 0

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Kill the interpreter, stop the bridge, close the ptys and remove the socket."""
        with self._core.cond:
            if self._core.closed:
                return
            self._power.kill()
        self._core.stop()

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VirtualBoard({self.name!r}, console={self.console_path}, led={self.led})"
