"""The virtual board's parts on their own (hil_tests/sim/vboard/), without an interpreter: the
flash keeps device paths inside it, the pins read the device's output lines and derive the
LED's colours, and the control socket greets, reads and broadcasts over a real AF_UNIX socket
driven by the supervisor loop. tests/test_virtual_board.py runs them together with the
MicroPython unix port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.sim.vboard.control import ControlSocket
from hil_tests.sim.vboard.core import BoardError, Core
from hil_tests.sim.vboard.flash import Flash
from hil_tests.sim.vboard.pins import INPUT_PINS, Pins


def test_flash_keeps_device_paths_inside_it(tmp_path: Path) -> None:
    flash = Flash("B", tmp_path / "flash")
    flash.install({"/lib/a.py": "x = 1\n", "main.py": b"print(1)\n"}, config={"id": "B"})
    assert (flash.root / "lib" / "a.py").read_text() == "x = 1\n"
    assert (flash.root / "config.json").read_text() == '{"id": "B"}'
    for bad in ("../escape.py", "lib/../../x", "", "/"):
        with pytest.raises(BoardError, match="bad device path"):
            flash.install({bad: "x"})
    assert not (tmp_path / "escape.py").exists()
    flash.install({"only.py": "y"}, erase=True)
    assert sorted(p.name for p in flash.root.iterdir()) == ["only.py"]


def test_pins_read_output_lines_and_one_line_is_one_colour() -> None:
    sent: list[bytes] = []
    core = Core("B")
    pins = Pins(core, INPUT_PINS, send=sent.append)
    core.cond.acquire()  # as in the supervisor loop, which calls board_line() and outputs_off()
    for line, why in [
        (b"out led_r", "expected 'out <pin> <0|1> [<pin> <0|1> ...]'"),
        (b"in led_r 1", "expected 'out <pin> <0|1> [<pin> <0|1> ...]'"),
        (b"out led_x 1", "unknown output pin"),
        (b"out led_r 2", "level must be 0 or 1"),
        (b"out led_r 1 led_g", "expected 'out <pin> <0|1> [<pin> <0|1> ...]'"),
    ]:
        assert pins.board_line(line) == why
    assert pins.history == []
    assert pins.board_line(b"out led_r 1 led_g 1") is None  # amber in one step
    assert pins.board_line(b"out led_g 0") is None
    pins.outputs_off()
    core.cond.release()
    assert [c for _, c in pins.led_history] == ["amber", "red", "off"]
    assert pins.outputs == dict.fromkeys(("led_r", "led_g", "led_b", "buzzer"), 0)
    pins.set_input("button", 1)
    assert sent[-1].startswith(b"in button 1 ") and sent[-1].endswith(b"\n")  # stamped
    assert pins.greeting(INPUT_PINS) == b"in button 1\nin tamper 0\n"  # the level, unstamped


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[Core, ControlSocket, list[bytes]]]:
    core = Core("B")
    lines: list[bytes] = []

    def on_line(line: bytes) -> str | None:
        lines.append(line)
        return None if line.startswith(b"ok") else "not ok"

    workdir = tmp_path / ("d" * 120)
    workdir.mkdir()
    ctl = ControlSocket(core, workdir / "ctrl.sock", greeting=lambda: b"hello\n", on_line=on_line)
    core.start([ctl])
    yield core, ctl, lines
    core.stop()


def test_control_socket_greets_reads_counts_and_broadcasts(control: tuple[Core, ControlSocket, list[bytes]]) -> None:
    core, ctl, lines = control
    assert len(str(ctl.path)) < 108, "a path too long for sun_path moves to a short temporary one"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dev:
        dev.settimeout(5)
        dev.connect(str(ctl.path))
        assert dev.recv(100) == b"hello\n"
        dev.sendall(b"ok 1\nbad\n" + b"z" * 200)
        with core.cond:
            assert core.wait(lambda: ctl.malformed == 2, 5), ctl.malformed  # "bad" and the overlong rest
        assert lines == [b"ok 1", b"bad"]
        with core.cond:
            assert ctl.connected
            ctl.broadcast(b"in button 1\n")
        assert dev.recv(100) == b"in button 1\n"
    with core.cond:
        assert core.wait(lambda: not ctl.connected, 5)
    path = ctl.path
    core.stop()
    assert not path.exists() and core.closed
