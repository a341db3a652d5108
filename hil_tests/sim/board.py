"""A virtual board: the MicroPython unix port running one simulated device.

The supervisor (`VirtualBoard`) plays the parts of a board that are not the firmware: the
flash chip (a host directory that is the interpreter's working directory), the boot ROM
(`romboot.py`, outside the flash), the GPIO pins (a control socket), the USB-UART console
(a pty pair with a stable slave path) and the power switch.

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

import array
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from hil_tests.sim.tools import require_micropython

_log = logging.getLogger(__name__)

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
ROMBOOT = Path(__file__).resolve().with_name("romboot.py")

_MAX_LINE = 128
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes; leave room
_MIN_RESTART_INTERVAL = 0.1  # a boot loop restarts at most 10 times a second
_CONSOLE_CHECK_INTERVAL = 0.1
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_FRIENDLY_PROMPT = b"\r\n>>> "
_FRIENDLY_BANNER = b'Type "help()" for more information.'
_CONSOLE_KEEP = 1 << 20  # bytes of console output kept in memory for wait_console()


class BoardError(RuntimeError):
    """The virtual board could not do what was asked; the message says why."""


class BoardTimeout(BoardError, TimeoutError):
    """A wait on the virtual board passed its deadline."""


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


def board_uid(name: str) -> bytes:
    """The 8-byte unique id the virtual board `name` reports (`hal.Board().uid()`)."""
    return hashlib.sha256(b"ge-vboard:" + name.encode()).digest()[:8]


class _Client:
    """One control-socket connection from the device."""

    __slots__ = ("dead", "rx", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rx = b""
        self.dead = False


class _Run:
    """One interpreter process and the private pty it talks through."""

    __slots__ = ("eof", "master", "pidfd", "proc", "started", "uart_master", "uart_slave")

    def __init__(
        self, proc: subprocess.Popen[bytes], master: int, pidfd: int | None, uart: tuple[int, int] = (-1, -1)
    ) -> None:
        self.proc = proc
        self.master = master
        self.pidfd = pidfd
        self.eof = False
        self.started = time.monotonic()
        self.uart_master, self.uart_slave = uart  # the device side of the UART, -1 without one

    def close_uart(self) -> None:
        for fd in (self.uart_master, self.uart_slave):
            if fd >= 0:
                os.close(fd)
        self.uart_master = self.uart_slave = -1


def _set_ctty() -> None:
    # runs in the child between fork and exec; start_new_session made it a session leader
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _raw(fd: int, isig: bool) -> None:
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    if isig:
        attrs[3] |= termios.ISIG
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _queued(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return int(buf[0])


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
        self._air = air
        self._values: dict[str, int | None] = dict.fromkeys(sensors)
        self._input_names = INPUT_PINS + (BAND_INPUTS if air is not None else ())
        self._pos = (0.0, 0.0)
        self._battery = 100
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_dir = self.workdir / "flash"
        self.flash_dir.mkdir(exist_ok=True)
        self.console_log_path = self.workdir / "console.log"
        self.micropython = micropython or require_micropython()
        self._extra_env = dict(env or {})
        self._idle_discard = console_idle_discard

        self._cond = threading.Condition(threading.RLock())
        self._inputs = dict.fromkeys(self._input_names, 0)
        self._outputs = dict.fromkeys(OUTPUT_PINS, 0)
        self._history: list[OutputChange] = []
        self._clients: list[_Client] = []
        self._run: _Run | None = None
        self._powered = False
        self._start_kind: str | None = None  # "power", "soft" or "raw" while a start is due
        self._restart_at = 0.0
        self._spawn_error: BaseException | None = None
        self._closing = False
        self._closed = False
        self._resets = 0
        self._lines = 0  # control lines from the board that changed outputs
        self._spawns = 0
        self._malformed = 0
        self._console_dropped = 0
        self._input_dropped = 0
        self._console_out = bytearray()
        self._console_base = 0  # absolute offset of _console_out[0]
        self._tail = b""
        self._raw_repl = False
        self._want_raw_entry = False
        self._con_prev_queued = 0
        self._con_written = 0
        self._con_stale_since: float | None = None
        self._con_next_check = 0.0
        self._uart_master = -1  # host side of the UART: the master of the pty the gateway opens
        self._uart_hold = -1
        self._uart_dropped = 0
        self.uart_path: Path | None = None
        """Host-side path of the board's UART (a symlink to a pty), None without one."""

        self._sock_dir: str | None = None
        ctrl = self.workdir / "ctrl.sock"
        if len(os.fsencode(ctrl)) > _SUN_PATH_MAX:
            self._sock_dir = tempfile.mkdtemp(prefix="ge-vb-")
            ctrl = Path(self._sock_dir) / "ctrl.sock"
        self.control_path = ctrl
        with contextlib.suppress(FileNotFoundError):
            ctrl.unlink()

        with contextlib.ExitStack() as undo:
            if self._sock_dir is not None:
                undo.callback(shutil.rmtree, self._sock_dir, True)
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            undo.callback(self._listener.close)
            self._listener.bind(str(ctrl))
            undo.callback(ctrl.unlink)
            self._listener.listen(8)
            self._listener.setblocking(False)

            self._con_master, con_slave = os.openpty()
            undo.callback(os.close, self._con_master)
            undo.callback(os.close, con_slave)
            _raw(con_slave, isig=False)
            self.console_path = os.ttyname(con_slave)
            # Held open for the board's lifetime: see the module docstring.
            self._con_hold = con_slave
            os.set_blocking(self._con_master, False)
            os.set_blocking(self._con_hold, False)

            if uart:
                self._uart_master, uart_slave = os.openpty()
                undo.callback(os.close, self._uart_master)
                undo.callback(os.close, uart_slave)
                _raw(uart_slave, isig=False)
                os.set_blocking(self._uart_master, False)
                # held open like the console's slave, so the master never reports a hangup
                self._uart_hold = uart_slave
                link = self.workdir / "uart"
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(os.ttyname(uart_slave))
                undo.callback(link.unlink)
                self.uart_path = link

            self._wake_r, self._wake_w = os.pipe()
            undo.callback(os.close, self._wake_r)
            undo.callback(os.close, self._wake_w)
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._log = self.console_log_path.open("ab")
            undo.pop_all()
        self._marker("supervisor start")
        self._thread = threading.Thread(target=self._loop, name=f"vboard-{name}", daemon=True)
        self._thread.start()

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
        with self._cond:
            if self._powered or self._run is not None:
                raise BoardError(f"{self.name}: cannot flash a powered board; power_cut() first")
        if erase:
            shutil.rmtree(self.flash_dir)
            self.flash_dir.mkdir()
        if isinstance(src, Mapping):
            for dev_path, content in src.items():
                dest = self._device_path(dev_path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, dest)
                elif isinstance(content, bytes):
                    dest.write_bytes(content)
                else:
                    dest.write_text(content)
        else:
            root = Path(src)
            if not root.is_dir():
                raise BoardError(f"{self.name}: {root} is not a directory")
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if "__pycache__" in rel.parts or path.suffix == ".pyc" or path.is_dir():
                    continue
                dest = self._device_path(rel.as_posix())
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        if config is not None:
            (self.flash_dir / "config.json").write_text(json.dumps(config, sort_keys=True))

    def _device_path(self, dev_path: str) -> Path:
        rel = PurePosixPath(dev_path.lstrip("/"))
        if not rel.parts or any(part in ("..", "") for part in rel.parts):
            raise BoardError(f"{self.name}: bad device path {dev_path!r}")
        return self.flash_dir.joinpath(*rel.parts)

    # ----------------------------------------------------------------- power

    def power_on(self, timeout: float = 5.0) -> None:
        """Switch the board on: the interpreter starts and boots. No-op if already on.

        Raises:
            BoardError: the interpreter could not be started.
        """
        with self._cond:
            self._check_open()
            if self._powered:
                return
            self._powered = True
            self._spawn_error = None
            self._start_kind = "power"
            self._restart_at = 0.0
            spawns = self._spawns
            self._wake()
            started = self._wait(lambda: self._spawns > spawns or self._spawn_error is not None, timeout)
            if self._spawn_error is not None:
                raise BoardError(f"{self.name}: cannot start: {self._spawn_error}")
            if not started:
                raise BoardTimeout(f"{self.name}: interpreter not started after {timeout}s")

    def power_cut(self, timeout: float = 5.0) -> None:
        """Cut the power: SIGKILL the interpreter; the flash directory stays as it is."""
        with self._cond:
            was_powered, self._powered = self._powered, False
            self._start_kind = None
            run = self._run
            if run is None:
                if was_powered:  # cut while restarting after a reset
                    self._marker("power cut")
                return
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signal.SIGKILL)
            self._wake()
            self._wait(lambda: self._run is not run, timeout)

    @property
    def running(self) -> bool:
        """True while an interpreter process is alive (including during a soft reset)."""
        with self._cond:
            return self._run is not None or self._start_kind is not None

    @property
    def powered(self) -> bool:
        """True between power_on() and power_cut()."""
        with self._cond:
            return self._powered

    @property
    def pid(self) -> int | None:
        """Process id of the current interpreter, if one runs."""
        with self._cond:
            return self._run.proc.pid if self._run else None

    @property
    def resets(self) -> int:
        """How many times the interpreter exited on its own and was restarted."""
        with self._cond:
            return self._resets

    # ----------------------------------------------------------------- pins

    def set_input(self, pin: str, level: int) -> None:
        """Drive an input pin (button, tamper; strap on a wristband); the device sees it at its next service()."""
        if pin not in self._input_names:
            raise ValueError(f"unknown input pin {pin!r}; inputs are {', '.join(self._input_names)}")
        if level not in (0, 1):
            raise ValueError(f"level must be 0 or 1, not {level!r}")
        with self._cond:
            self._inputs[pin] = level
            # stamped with the supervisor's time: the board keeps the spacing of changes it
            # reads together (firmware/hal/unix.py Board._feed)
            line = f"in {pin} {level} {time.monotonic_ns() // 1_000_000}\n".encode()
            for client in self._clients:
                self._send(client, line)
            self._cond.notify_all()

    def set_position(self, x: float, y: float) -> None:
        """Move a wristband to (x, y), metres; its next adverts go out from there."""
        self._band_line(f"pos {x:.2f} {y:.2f}\n".encode(), pos=(x, y))

    def set_battery(self, percent: int) -> None:
        """A wristband's battery level, 0-100 (255: unknown)."""
        if not (0 <= percent <= 100 or percent == 255):
            raise ValueError(f"battery must be 0-100 or 255, not {percent!r}")
        self._band_line(f"bat {percent}\n".encode(), battery=percent)

    def accel(self, x: int, y: int, z: int) -> None:
        """One accelerometer sample (milli-g) for a wristband; the device stamps it on arrival."""
        self._band_line(f"acc {int(x)} {int(y)} {int(z)}\n".encode())

    def set_value(self, sensor: str, value: int) -> None:
        """A venue sensor channel's reading; the device sees it at its next service()."""
        if sensor not in self._values:
            known = ", ".join(self._values) or "none"
            raise ValueError(f"{self.name}: no sensor channel {sensor!r} (channels: {known})")
        if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 31) <= value < 1 << 31:
            raise ValueError(f"{self.name}: reading for {sensor} must be a 32-bit integer, not {value!r}")
        with self._cond:
            self._values[sensor] = value
            line = f"val {sensor} {value}\n".encode()
            for client in self._clients:
                self._send(client, line)

    @property
    def values(self) -> dict[str, int | None]:
        """The sensor channels' current readings (None: not set yet), a copy."""
        with self._cond:
            return dict(self._values)

    def _band_line(self, line: bytes, pos: tuple[float, float] | None = None, battery: int | None = None) -> None:
        if self._air is None:
            raise BoardError(f"{self.name}: not a wristband (made without air=...)")
        with self._cond:
            if pos is not None:
                self._pos = pos
            if battery is not None:
                self._battery = battery
            for client in self._clients:
                self._send(client, line)

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
            time.sleep(ms / 1000)
        finally:
            self.release(pin)

    def click(self, ms: int = 150, pin: str = "button") -> None:
        """A short press of `ms` milliseconds."""
        self.hold(ms, pin)

    @property
    def inputs(self) -> dict[str, int]:
        """Current input levels (a copy)."""
        with self._cond:
            return dict(self._inputs)

    @property
    def outputs(self) -> dict[str, int]:
        """Current output levels as last reported by the device (a copy)."""
        with self._cond:
            return dict(self._outputs)

    @property
    def output_history(self) -> list[OutputChange]:
        """Every output change since the supervisor started, oldest first (a copy)."""
        with self._cond:
            return list(self._history)

    @property
    def led(self) -> str:
        """Colour of the RGB LED: off, red, green, blue, amber, cyan, magenta or white."""
        with self._cond:
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
        changes = [c for c in self.output_history if c.pin in levels]
        for i, change in enumerate(changes):
            levels[change.pin] = change.level
            if change.line and i + 1 < len(changes) and changes[i + 1].line == change.line:
                continue
            new = led_colour(levels["led_r"], levels["led_g"], levels["led_b"])
            if new != colour:
                colour = new
                out.append((change.time, new))
        return out

    @property
    def connected(self) -> bool:
        """True while the device holds a control-socket connection."""
        with self._cond:
            return any(not c.dead for c in self._clients)

    @property
    def malformed_lines(self) -> int:
        """Malformed control lines received from the device."""
        with self._cond:
            return self._malformed

    # ----------------------------------------------------------------- waits

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Wait until `predicate()` is true; it is re-checked whenever the board's state
        (outputs, connection, process, console output) changes.

        Raises:
            BoardTimeout: still false after `timeout` seconds.
        """
        with self._cond:
            if not self._wait(predicate, timeout):
                raise BoardTimeout(
                    f"{self.name}: timed out after {timeout}s waiting for "
                    f"{what or getattr(predicate, '__name__', 'a condition')}; "
                    f"led={self.led} outputs={self._outputs} running={self._run is not None} "
                    f"resets={self._resets}; console tail: {bytes(self._console_out[-300:])!r}"
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
        self.wait_for(lambda: self._outputs[pin] == level, timeout, f"{pin}={level}")

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
            start = max(since - self._console_base, 0)
            pos = self._console_out.find(needle, start)
            if pos >= 0:
                found = self._console_base + pos + len(needle)
            return pos >= 0

        self.wait_for(seen, timeout, f"console output {needle!r}")
        return found

    @property
    def console_offset(self) -> int:
        """How many bytes the board has printed since the supervisor started."""
        with self._cond:
            return self._console_base + len(self._console_out)

    def console_output(self, since: int = 0) -> bytes:
        """What the board printed from offset `since` (the last MiB at most)."""
        with self._cond:
            return bytes(self._console_out[max(since - self._console_base, 0) :])

    # ----------------------------------------------------------------- console

    def drain_console(self) -> int:
        """Discard console output nobody has read yet; returns how many bytes."""
        with self._cond:
            self._check_open()
            pending = _queued(self._con_hold)
            termios.tcflush(self._con_hold, termios.TCIFLUSH)
            self._con_prev_queued = 0
            self._con_written = 0
            self._con_stale_since = None
            self._console_dropped += pending
            return pending

    @property
    def console_pending(self) -> int:
        """Bytes of board output waiting in the console for a reader."""
        with self._cond:
            self._check_open()
            return _queued(self._con_hold)

    @property
    def console_dropped(self) -> int:
        """Bytes of board output dropped because no one read the console."""
        with self._cond:
            return self._console_dropped

    @property
    def uart_dropped(self) -> int:
        """UART bytes dropped (no room on the other side, or the board off)."""
        with self._cond:
            return self._uart_dropped

    @property
    def input_dropped(self) -> int:
        """Console input bytes dropped (board off, or its input buffer full)."""
        with self._cond:
            return self._input_dropped

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Kill the interpreter, stop the bridge, close the ptys and remove the socket."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._powered = False
            self._start_kind = None
            if self._run is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._run.proc.send_signal(signal.SIGKILL)
            self._wake()
        self._thread.join(10)
        if self._thread.is_alive():  # pragma: no cover - the loop never blocks
            raise BoardError(f"{self.name}: bridge thread did not stop")

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

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise BoardError(f"{self.name}: board is closed")

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        # caller holds self._cond
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _marker(self, what: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"\n--- vboard {self.name}: {what} at {stamp} ---\n".encode())
        self._log.flush()

    def _send(self, client: _Client, line: bytes) -> None:
        # caller holds self._cond; never blocks, a stuck client is dropped by the loop
        if client.dead:
            return
        try:
            sent = client.sock.send(line)
        except OSError as exc:
            _log.warning("%s: control connection lost: %s", self.name, exc)
            client.dead = True
            self._wake()
            return
        if sent != len(line):
            _log.warning("%s: control connection not reading; dropping it", self.name)
            client.dead = True
            self._wake()

    def _spawn(self, kind: str) -> None:
        # loop thread, holding self._cond
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C",
            "MICROPYPATH": ":lib",
            "GE_VBOARD_CTRL": str(self.control_path),
            "GE_VBOARD_NAME": self.name,
            "GE_VBOARD_UID": board_uid(self.name).hex(),
            "GE_VBOARD_RESET": kind,
        }
        if self._air is not None:
            env["GE_VBOARD_AIR"] = f"{self._air[0]}:{self._air[1]}"
        env.update(self._extra_env)
        uart = (-1, -1)
        if self._uart_master >= 0:
            uart = os.openpty()
            _raw(uart[1], isig=False)
            os.set_blocking(uart[0], False)
            env["GE_VBOARD_UART"] = os.ttyname(uart[1])
        master, slave = os.openpty()
        try:
            # ISIG stays off until the ROM runs: a 0x03 that arrives while the interpreter
            # initialises (no SIGINT handler yet) would kill it instead of interrupting.
            _raw(slave, isig=False)
            proc = subprocess.Popen(
                [self.micropython, str(ROMBOOT)],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.flash_dir,
                env=env,
                start_new_session=True,
                preexec_fn=_set_ctty,  # noqa: PLW1509 - the child only calls one ioctl
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(master)
            os.close(slave)
            for fd in uart:
                if fd >= 0:
                    os.close(fd)
            self._spawn_error = exc
            self._powered = False
            self._cond.notify_all()
            return
        os.close(slave)
        os.set_blocking(master, False)
        pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(proc.pid)
        self._run = _Run(proc, master, pidfd, uart)
        self._spawns += 1
        self._raw_repl = False
        self._tail = b""
        self._want_raw_entry = kind == "raw"
        self._marker("power on" if kind == "power" else f"reset ({kind}), restart #{self._resets}")
        self._cond.notify_all()

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closing:
                        break
                    self._reap_clients()
                    run = self._run
                    if run is not None and run.pidfd is None and run.proc.poll() is not None:
                        self._exited(run)  # no pidfd on this system: polled
                    now = time.monotonic()
                    kind = self._start_kind
                    if kind is not None and self._run is None and now >= self._restart_at:
                        self._start_kind = None
                        self._spawn(kind)
                    fds = self._poll_set()
                    timeout = self._poll_timeout(now)
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                events = poller.poll(timeout)
                for fd, _ in events:
                    self._dispatch(fd)
                self._check_console()
        except Exception:  # pragma: no cover - a bug here must not hang the tests silently
            _log.exception("%s: bridge thread failed", self.name)
            raise
        finally:
            self._shutdown()

    def _poll_set(self) -> list[int]:
        fds = [self._wake_r, self._con_master, self._listener.fileno()]
        if self._uart_master >= 0:
            fds.append(self._uart_master)
        run = self._run
        if run is not None:
            if not run.eof:
                fds.append(run.master)
            if run.pidfd is not None:
                fds.append(run.pidfd)
            if run.uart_master >= 0:
                fds.append(run.uart_master)
        for client in self._clients:
            if client.dead:
                continue
            fds.append(client.sock.fileno())
        return fds

    def _poll_timeout(self, now: float) -> int | None:
        waits: list[float] = []
        if self._start_kind is not None and self._run is None:
            waits.append(self._restart_at - now)
        if self._con_prev_queued or self._con_written:
            waits.append(_CONSOLE_CHECK_INTERVAL)
        if self._run is not None and self._run.pidfd is None:
            waits.append(0.05)
        if not waits:
            return None
        return max(0, int(min(waits) * 1000) + 1)

    def _dispatch(self, fd: int) -> None:
        with self._cond:
            run = self._run
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif fd == self._con_master:
                self._console_input()
            elif fd == self._listener.fileno():
                self._accept()
            elif run is not None and fd == run.master:
                self._board_output(run)
            elif run is not None and fd == run.pidfd:
                self._exited(run)
            elif fd == self._uart_master:
                self._uart_from_host(run)
            elif run is not None and fd == run.uart_master:
                self._uart_from_board(run)
            else:
                for client in self._clients:
                    if not client.dead and client.sock.fileno() == fd:
                        self._client_input(client)

    def _console_input(self) -> None:
        try:
            data = os.read(self._con_master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # pragma: no cover - we hold the slave open
            _log.warning("%s: console read failed: %s", self.name, exc)
            return
        run = self._run
        if run is None or run.eof:
            self._input_dropped += len(data)
            return
        try:
            written = os.write(run.master, data)
        except BlockingIOError:
            written = 0
        except OSError:
            written = 0
        self._input_dropped += len(data) - written

    def _uart_from_host(self, run: _Run | None) -> None:
        try:
            data = os.read(self._uart_master, 4096)
        except OSError:  # BlockingIOError included; the slave is held, so no hangup
            return
        written = 0
        if run is not None and run.uart_master >= 0:
            with contextlib.suppress(OSError):
                written = os.write(run.uart_master, data)
        self._uart_dropped += len(data) - written

    def _uart_from_board(self, run: _Run) -> None:
        while True:
            try:
                data = os.read(run.uart_master, 4096)
            except OSError:
                return
            if not data:
                return
            written = 0
            with contextlib.suppress(OSError):
                written = os.write(self._uart_master, data)
            self._uart_dropped += len(data) - written

    def _board_output(self, run: _Run) -> None:
        while True:
            try:
                data = os.read(run.master, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    _log.warning("%s: board pty read failed: %s", self.name, exc)
                run.eof = True  # the interpreter closed its terminal: it is exiting
                return
            if not data:
                run.eof = True
                return
            self._log.write(data)
            self._log.flush()
            self._console_out += data
            if len(self._console_out) > _CONSOLE_KEEP:
                cut = len(self._console_out) - _CONSOLE_KEEP
                del self._console_out[:cut]
                self._console_base += cut
            self._track_repl(run, data)
            try:
                written = os.write(self._con_master, data)
            except BlockingIOError:
                written = 0
            self._con_written += written
            self._console_dropped += len(data) - written
            self._cond.notify_all()

    def _track_repl(self, run: _Run, data: bytes) -> None:
        # Which REPL is the interpreter in? Needed to restart a reset from the raw REPL in
        # the raw REPL, as a board does (mpremote waits for "raw REPL" after its soft reset).
        buf = self._tail + data
        self._tail = buf[-64:]
        raw_at = buf.rfind(_RAW_BANNER)
        friendly_at = max(buf.rfind(_FRIENDLY_PROMPT), buf.rfind(_FRIENDLY_BANNER))
        if raw_at > friendly_at:
            self._raw_repl = True
        elif friendly_at > raw_at:
            self._raw_repl = False
        if self._want_raw_entry and buf.endswith(b">>> "):
            self._want_raw_entry = False
            with contextlib.suppress(OSError):
                os.write(run.master, b"\x01")  # Ctrl-A: into the raw REPL again

    def _exited(self, run: _Run) -> None:
        if self._run is not run:
            return
        rc = run.proc.wait()
        self._board_output(run)  # what it printed last (e.g. the raw REPL's "OK")
        if run.uart_master >= 0:
            self._uart_from_board(run)  # what it wrote last
        run.close_uart()
        os.close(run.master)
        if run.pidfd is not None:
            os.close(run.pidfd)
        self._run = None
        self._lines += 1  # the outputs drop together when the interpreter stops
        now = time.monotonic()
        for pin in OUTPUT_PINS:
            self._set_output(pin, 0, now, self._lines)
        if self._powered and not self._closing:
            self._resets += 1
            self._start_kind = "raw" if self._raw_repl else "soft"
            self._restart_at = run.started + _MIN_RESTART_INTERVAL
            self._marker(f"interpreter exited (status {rc}): reset")
        else:
            self._marker("power cut")
        self._cond.notify_all()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        client = _Client(sock)
        self._clients.append(client)
        if self._air is not None:
            x, y = self._pos
            for pin in BAND_INPUTS:
                self._send(client, f"in {pin} {self._inputs[pin]}\n".encode())
            self._send(client, f"pos {x:.2f} {y:.2f}\nbat {self._battery}\n".encode())
        for pin in INPUT_PINS:
            self._send(client, f"in {pin} {self._inputs[pin]}\n".encode())
        for sensor, value in self._values.items():
            if value is not None:
                self._send(client, f"val {sensor} {value}\n".encode())
        self._cond.notify_all()

    def _client_input(self, client: _Client) -> None:
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
            self._control_line(line)
        if len(client.rx) > _MAX_LINE:
            self._bad_line(client.rx[:_MAX_LINE], "line too long")
            client.rx = b""

    def _control_line(self, line: bytes) -> None:
        parts = line.split(b" ")
        if len(parts) < 3 or len(parts) % 2 == 0 or parts[0] != b"out":
            self._bad_line(line, "expected 'out <pin> <0|1> [<pin> <0|1> ...]'")
            return
        changes = []
        for i in range(1, len(parts), 2):
            pin = parts[i].decode("ascii", "replace")
            if pin not in OUTPUT_PINS:
                self._bad_line(line, "unknown output pin")
                return
            if parts[i + 1] not in (b"0", b"1"):
                self._bad_line(line, "level must be 0 or 1")
                return
            changes.append((pin, int(parts[i + 1])))
        self._lines += 1
        now = time.monotonic()
        for pin, level in changes:
            self._set_output(pin, level, now, self._lines)

    def _bad_line(self, line: bytes, why: str) -> None:
        self._malformed += 1
        _log.warning("%s: malformed control line %r: %s", self.name, line[:_MAX_LINE], why)
        self._cond.notify_all()

    def _set_output(self, pin: str, level: int, now: float, line: int = 0) -> None:
        if self._outputs[pin] == level:
            return
        self._outputs[pin] = level
        self._history.append(OutputChange(now, pin, level, line))
        self._cond.notify_all()

    def _reap_clients(self) -> None:
        dead = [c for c in self._clients if c.dead]
        if not dead:
            return
        self._clients = [c for c in self._clients if not c.dead]
        for client in dead:
            client.sock.close()
        self._cond.notify_all()

    def _check_console(self) -> None:
        # Drop output that no reader is consuming, so a late reader does not get it.
        with self._cond:
            if self._closing:
                return
            now = time.monotonic()
            if now < self._con_next_check:
                return
            self._con_next_check = now + _CONSOLE_CHECK_INTERVAL
            queued = _queued(self._con_hold)
            consumed = self._con_prev_queued + self._con_written - queued
            self._con_written = 0
            if queued == 0:
                self._con_stale_since = None
            elif consumed > 0 or self._con_stale_since is None:
                self._con_stale_since = now
            elif now - self._con_stale_since >= self._idle_discard:
                termios.tcflush(self._con_hold, termios.TCIFLUSH)
                self._console_dropped += queued
                self._con_stale_since = None
                queued = 0
                self._cond.notify_all()
            self._con_prev_queued = queued

    def _shutdown(self) -> None:
        with self._cond:
            run, self._run = self._run, None
            if run is not None:
                with contextlib.suppress(ProcessLookupError):
                    run.proc.kill()
                run.proc.wait()
                with contextlib.suppress(OSError):
                    self._board_output(run)
                run.close_uart()
                os.close(run.master)
                if run.pidfd is not None:
                    os.close(run.pidfd)
                self._marker("power cut (board closed)")
            for client in self._clients:
                client.sock.close()
            self._clients = []
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.control_path.unlink()
            if self._sock_dir is not None:
                shutil.rmtree(self._sock_dir, ignore_errors=True)
            for fd in (self._con_master, self._con_hold, self._wake_r, self._wake_w):
                os.close(fd)
            if self.uart_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.uart_path.unlink()
                os.close(self._uart_master)
                os.close(self._uart_hold)
            self._log.close()
            self._closed = True
            self._cond.notify_all()
