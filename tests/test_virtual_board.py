"""The virtual board: the MicroPython unix port as one simulated device (hil_tests/sim/board.py)
and the device-side hal for it (firmware/hal/unix.py).

Real parts throughout: the real interpreter, real ptys, real mpremote as a subprocess, real
AF_UNIX sockets. The test app is tests/boards/mirror (button -> led_g, tamper -> led_r,
parity of the press count -> led_b, a boot counter in flash).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import queue
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hil_tests.sim.board import BoardError, VirtualBoard, board_uid
from hil_tests.sim.tools import FIRMWARE_DIR

MIRROR = Path(__file__).resolve().parent / "boards" / "mirror"
MPREMOTE = Path(sys.executable).parent / "mpremote"

MakeBoard = Callable[..., VirtualBoard]


def _firmware_base() -> dict[str, str | bytes | Path]:
    # lib/ and hal/ from the real firmware tree; boot.py and main.py come from the test app
    files: dict[str, str | bytes | Path] = {}
    for sub in ("lib", "hal"):
        for path in sorted((FIRMWARE_DIR / sub).glob("*.py")):
            files[f"{sub}/{path.name}"] = path
    return files


@pytest.fixture
def make_board(tmp_path: Path, micropython: str) -> Iterator[MakeBoard]:
    boards: list[VirtualBoard] = []

    def make(name: str = "AP-T1", config: dict[str, Any] | None = None, **kw: Any) -> VirtualBoard:
        board = VirtualBoard(name, tmp_path / name, micropython=micropython, **kw)
        boards.append(board)
        board.install(_firmware_base())
        board.install(MIRROR, config={"name": name, **(config or {})})
        return board

    yield make
    for board in boards:
        board.close()


def boot(board: VirtualBoard, count: int = 1) -> None:
    """Power on and wait until the test app is ready (it prints its boot line last)."""
    board.power_on()
    board.wait_console(f"main.py: {board.name} boot {count} uid {board_uid(board.name).hex()}\n")


def mpremote(board: VirtualBoard, *args: str) -> str:
    if not MPREMOTE.exists():
        pytest.skip(f"mpremote is not installed next to {sys.executable} (pip install mpremote)")
    proc = subprocess.run(
        [str(MPREMOTE), "connect", board.console_path, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, (
        f"mpremote {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n"
        f"console: {board.console_output()[-600:]!r}"
    )
    return proc.stdout


def console_write(board: VirtualBoard, data: bytes) -> None:
    """Type bytes on the board's console, like a terminal would."""
    fd = os.open(board.console_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def poll_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """For kernel state nothing signals (pty queues): check with a deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- boot


def test_boot_runs_boot_py_then_main_py(make_board: MakeBoard) -> None:
    board = make_board("AP-T1")
    assert (board.flash_dir / "lib" / "cbor.py").is_file()
    assert (board.flash_dir / "hal" / "unix.py").is_file()
    assert b'"name": "AP-T1"' in (board.flash_dir / "config.json").read_bytes()
    board.power_on()
    board.wait_console(f"main.py: AP-T1 boot 1 uid {board_uid('AP-T1').hex()}")
    out = board.console_output()
    assert out.index(b"boot.py: ran") < out.index(b"main.py: AP-T1")
    board.wait_connected()
    assert board.running
    assert board.resets == 0
    log = board.console_log_path.read_bytes()
    assert log.index(b"power on") < log.index(b"boot.py: ran")


def test_app_exit_is_a_soft_reset(make_board: MakeBoard) -> None:
    board = make_board(config={"exit_boots": 1})
    board.power_on()
    board.wait_console("main.py: AP-T1 boot 2")
    assert board.resets == 1
    out = board.console_output()
    assert out.index(b"sys.exit() on boot 1") < out.index(b"MPY: soft reboot")
    assert out.count(b"boot.py: ran") == 2
    assert b"reset" in board.console_log_path.read_bytes()


# ----------------------------------------------------------------------------- pins


def test_inputs_reach_the_app_and_outputs_reach_the_supervisor(make_board: MakeBoard) -> None:
    board = make_board()
    boot(board)
    board.press()
    board.wait_led("cyan")  # led_g mirrors the button, led_b: one press so far
    board.release()
    board.wait_led("blue")
    board.press("tamper")
    board.wait_led("magenta")
    board.release("tamper")
    board.wait_led("blue")
    board.press()
    board.wait_led("green")  # second press: led_b back to 0
    board.release()
    board.wait_led("off")
    assert board.inputs == {"button": 0, "tamper": 0}
    greens = [c.level for c in board.output_history if c.pin == "led_g"]
    assert greens == [1, 0, 1, 0]
    # the app sets led_g before led_b: the history keeps the transient colours
    assert [colour for _, colour in board.led_history] == [
        "green", "cyan", "blue", "magenta", "blue", "cyan", "green", "off",
    ]  # fmt: skip
    assert board.malformed_lines == 0
    with pytest.raises(ValueError, match="unknown input pin"):
        board.set_input("led_r", 1)
    with pytest.raises(ValueError, match="level must be 0 or 1"):
        board.set_input("button", 2)


def test_a_click_shorter_than_the_app_loop_is_seen_through_the_pin_irq(
    make_board: MakeBoard,
) -> None:
    board = make_board(config={"busy_ms": 300})
    boot(board)
    board.click(ms=5)  # press and release both arrive while the app sleeps
    board.wait_led("blue")


def test_malformed_control_lines_are_counted_and_ignored(make_board: MakeBoard) -> None:
    board = make_board()
    boot(board)
    board.press()
    board.wait_led("cyan")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rogue:
        rogue.settimeout(5)
        rogue.connect(str(board.control_path))
        greeting = b""
        while greeting.count(b"\n") < 2:
            greeting += rogue.recv(100)
        assert greeting == b"in button 1\nin tamper 0\n"
        rogue.sendall(b"bogus\nout led_x 1\nout led_r 2\nout led_r 1 extra\n\xff\xfe\n\n")
        board.wait_for(lambda: board.malformed_lines == 6, 5, "6 malformed lines")
        rogue.sendall(b"y" * 300)
        board.wait_for(lambda: board.malformed_lines == 7, 5, "the overlong line")
        rogue.sendall(b"\nout buzzer 1\n")
        board.wait_output("buzzer", 1)
    assert board.malformed_lines == 8  # the empty rest of the overlong line
    board.release()
    board.wait_led("blue")  # the app is unaffected
    assert board.running
    assert board.resets == 0


# ----------------------------------------------------------------------------- power


def test_power_cut_keeps_the_flash_and_the_console_path(make_board: MakeBoard) -> None:
    board = make_board()
    console = board.console_path
    boot(board)
    board.press()
    board.wait_led("cyan")
    pid = board.pid
    assert pid is not None
    board.power_cut()
    assert not board.running
    assert board.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert board.outputs == {"led_r": 0, "led_g": 0, "led_b": 0, "buzzer": 0}
    assert (board.flash_dir / "boots.txt").read_text() == "1"
    assert b"power cut" in board.console_log_path.read_bytes()
    assert board.resets == 0

    board.power_on()  # the button is still held
    board.wait_console("main.py: AP-T1 boot 2")
    assert board.console_path == console
    board.wait_led("green")
    assert "2" in mpremote(board, "resume", "exec", "print(open('boots.txt').read())")
    assert board.console_log_path.read_bytes().count(b"power on") == 2


# ----------------------------------------------------------------------------- mpremote


def test_mpremote_copies_and_runs_a_file_on_a_running_board(make_board: MakeBoard, tmp_path: Path) -> None:
    board = make_board()
    boot(board)
    board.click()
    board.wait_led("blue")  # the app runs

    local = tmp_path / "greet.py"
    content = b'GREETING = "hello from flash"\nprint("greet imported")\n'
    local.write_bytes(content)
    mpremote(board, "resume", "fs", "cp", str(local), ":greet.py")
    assert (board.flash_dir / "greet.py").read_bytes() == content
    out = mpremote(board, "resume", "exec", "import greet; print(greet.GREETING)")
    assert "greet imported\nhello from flash" in out
    out = mpremote(board, "resume", "fs", "sha256sum", ":greet.py")
    assert hashlib.sha256(content).hexdigest() in out
    assert "greet.py" in mpremote(board, "resume", "fs", "ls")

    # The app was interrupted and the board waits at the friendly REPL.
    board.wait_for(lambda: board.console_output().endswith(b">>> "), 5, "the REPL prompt")
    assert b"KeyboardInterrupt" in board.console_output()
    assert board.running
    assert board.resets == 0

    # Ctrl-D at the friendly REPL: soft reset, boot.py and main.py run again.
    mark = board.console_offset
    console_write(board, b"\x04")
    board.wait_console("MPY: soft reboot", since=mark)
    board.wait_console("main.py: AP-T1 boot 2", since=mark)
    assert board.resets == 1
    board.wait_connected()
    board.press()
    board.wait_led("cyan")


def test_mpremote_soft_reset_comes_back_in_the_raw_repl(make_board: MakeBoard) -> None:
    board = make_board()
    boot(board)
    mark = board.console_offset
    mpremote(board, "soft-reset")
    assert board.resets == 1
    since = board.console_output(mark)
    assert since.index(b"MPY: soft reboot") < since.index(b"boot.py: ran")
    assert b"main.py:" not in since, "a reset in the raw REPL skips main.py, as on a board"
    # without `resume`, mpremote soft-resets first and expects the raw REPL back
    assert mpremote(board, "exec", "print(6 * 7)").strip() == "42"
    assert board.resets == 2
    assert (board.flash_dir / "boots.txt").read_text() == "1"


# ----------------------------------------------------------------------------- console


def test_unread_console_output_never_blocks_the_board_and_goes_stale(
    make_board: MakeBoard,
) -> None:
    board = make_board(config={"burst": 600}, console_idle_discard=0.3)
    board.power_on()
    board.wait_console("main.py: AP-T1 boot 1")  # 60 kB printed with nobody listening
    board.wait_connected()
    board.press()
    board.wait_led("cyan")
    assert board.console_dropped > 0
    board.wait_for(lambda: board.console_pending == 0, 5, "stale output to be discarded")

    fd = os.open(board.console_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)  # nothing stale for a late reader
        os.write(fd, b"\x03")
        got = b""
        deadline = time.monotonic() + 5
        while not got.endswith(b">>> ") and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                got += os.read(fd, 4096)
        assert got.endswith(b">>> "), got
        assert b"burst" not in got
        assert b"KeyboardInterrupt" in got
    finally:
        os.close(fd)


def test_drain_console_discards_pending_output(make_board: MakeBoard) -> None:
    board = make_board(config={"burst": 50}, console_idle_discard=60)
    boot(board)
    poll_until(lambda: board.console_pending > 3000, 5, "the burst to reach the console")
    assert board.drain_console() > 3000
    assert board.console_pending == 0
    fd = os.open(board.console_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)
    finally:
        os.close(fd)


def test_close_stops_the_process_and_removes_socket_and_console(make_board: MakeBoard) -> None:
    board = make_board()
    boot(board)
    pid = board.pid
    assert pid is not None
    board.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not board.control_path.exists()
    assert not Path(board.console_path).exists()
    with pytest.raises(BoardError, match="closed"):
        board.power_on()
    board.close()  # idempotent


# ----------------------------------------------------------------------------- hal alone


class _Device:
    """The hal under the unix port without the VirtualBoard, driven by a test script."""

    def __init__(self, micropython: str, script: str, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [micropython, "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", ""), "MICROPYPATH": f"{FIRMWARE_DIR}:{FIRMWARE_DIR / 'lib'}", **env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; got {seen}") from None
            if line.startswith(prefix):
                return line
            seen.append(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()


_HAL_SCRIPT = """
import hal, select
b = hal.Board()
def show(tag):
    print(tag, b.button.value(), b.tamper.value(), b.connected(), b.malformed)
show("start")
p = select.poll()
b.register(p)
b.led_r.value(1)
while True:
    p.poll(50)
    if b.service():
        show("change")
"""


def test_hal_reconnects_and_rejects_bad_lines(micropython: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ge-hal-") as tmp:
        path = os.path.join(tmp, "ctrl.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(5)
        dev = _Device(micropython, _HAL_SCRIPT, {"GE_VBOARD_CTRL": path})
        try:
            conn, _ = listener.accept()
            conn.sendall(b"in button 1\nin tamper 0\n")
            assert dev.expect("start") == "start 1 0 True 0"
            conn.settimeout(5)
            got = b""
            while got.count(b"\n") < 5:
                got += conn.recv(100)
            assert got == b"out led_r 0\nout led_g 0\nout led_b 0\nout buzzer 0\nout led_r 1\n"

            conn.sendall(b"nonsense\nin button 2\nin door 1\nin tamper 1\n")
            assert dev.expect("change") == "change 1 1 True 3"

            conn.close()  # the supervisor goes away: inputs read 0
            dropped = time.monotonic()
            assert dev.expect("change") == "change 0 0 False 3"
            conn, _ = listener.accept()  # retried, at most once a second
            assert time.monotonic() - dropped > 0.8
            conn.sendall(b"in button 0\nin tamper 1\n")
            assert dev.expect("change") == "change 0 1 True 3"
            conn.settimeout(5)
            got = b""
            while got.count(b"\n") < 4:
                got += conn.recv(100)
            assert b"out led_r 1\n" in got, "outputs kept locally are resent"
            conn.close()
        finally:
            dev.stop()
            listener.close()


@pytest.mark.parametrize("ctrl", [None, "/nonexistent/ctrl.sock"])
def test_hal_without_a_supervisor(micropython: str, ctrl: str | None) -> None:
    script = """
import hal, select
b = hal.Board()
print("in", b.button.value(), b.tamper.value(), b.connected(), b.service())
b.led_g.value(1)
b.buzzer.value(True)
print("out", b.led_g.value(), b.buzzer.value(), b.led_r.value())
print("uid", len(b.uid()), b.uid() == hal.Board().uid())
p = select.poll()
b.register(p)
print("poll", p.poll(0))
"""
    dev = _Device(micropython, script, {"GE_VBOARD_CTRL": ctrl} if ctrl else {})
    try:
        assert dev.expect("in") == "in 0 0 False False"
        assert dev.expect("out") == "out 1 1 0"
        assert dev.expect("uid") == "uid 8 True"
        assert dev.expect("poll") == "poll []"
        assert dev.proc.wait(5) == 0
    finally:
        dev.stop()


def test_hal_is_chosen_by_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIRMWARE_DIR))
    monkeypatch.syspath_prepend(str(FIRMWARE_DIR / "lib"))
    for mod in ("hal", "hal.unix"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    hal = importlib.import_module("hal")
    monkeypatch.setattr(sys, "platform", "pyboard")
    with pytest.raises(hal.HalError, match="no hardware layer for platform 'pyboard'"):
        hal.Board()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("GE_VBOARD_CTRL", raising=False)
    assert hal.Board().button.value() == 0
    for mod in ("hal", "hal.unix"):
        sys.modules.pop(mod, None)


def test_several_outputs_on_one_line_change_together(make_board: MakeBoard) -> None:
    board = make_board(config={"rgb": True})
    boot(board)
    board.press()
    board.wait_led("cyan")
    board.release()
    board.wait_led("blue")
    # the mirror app in rgb mode sets all three pins with one Board.rgb() line: the colour
    # goes green -> cyan never seen, blue -> off with no in-between
    assert [colour for _, colour in board.led_history] == ["cyan", "blue"]
    lines = {c.line for c in board.output_history if c.pin != "buzzer"}
    assert len(lines) == 2
    assert board.malformed_lines == 0
