"""Shared fixtures: real Mosquitto brokers on loopback ports, the MicroPython interpreter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import find_micropython

# the `seed` fixture, and the replay command in the report of a failed randomised test
pytest_plugins = ("tests.seeds",)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto on a free loopback port, killed after the test."""
    with Mosquitto(tmp_path / "broker", name="broker") as b:
        yield b


@pytest.fixture
def broker_pair(tmp_path: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """Two brokers, both persistent like deployed ones: the gateway's local one and central."""
    local = Mosquitto(tmp_path / "local", name="local", persistence=True)
    central = Mosquitto(tmp_path / "central", name="central", persistence=True)
    local.start()
    central.start()
    try:
        yield local, central
    finally:
        local.kill()
        central.kill()


@pytest.fixture(scope="session")
def micropython() -> str:
    path = find_micropython()
    if path is None:
        pytest.skip(
            "NO MICROPYTHON: this test needs the MicroPython unix port; install it or pass "
            "MICROPYTHON=/path/to/micropython"
        )
    return path


MakeBoard = Callable[[str], VirtualBoard]


@pytest.fixture
def make_board(tmp_path: Path, micropython: str) -> Iterator[MakeBoard]:
    """Virtual boards with empty flash, powered on and at the REPL; closed after the test."""
    boards: list[VirtualBoard] = []

    def make(name: str) -> VirtualBoard:
        board = VirtualBoard(name, tmp_path / "boards" / name, micropython=micropython)
        boards.append(board)
        board.power_on()
        board.wait_console(">>> ")
        return board

    yield make
    for board in boards:
        board.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.artifacts import written

    for folder in sorted(written):
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        terminalreporter.write_line(f"artifacts: {folder}: {', '.join(files) or 'none written'}")
    if find_micropython() is None:
        terminalreporter.write_sep(
            "!",
            "NO MICROPYTHON UNIX PORT: firmware tests ran under CPython only",
            red=True,
            bold=True,
        )
