"""The host's serial fixture driver against the simulated fixture over a real pty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.rig.drivers import FixtureDriver
from hil_tests.rig.errors import FixtureError, RigInfraError
from hil_tests.rig.resources import SerialPort
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.fixture import SimFixture


@pytest.fixture
def bench(tmp_path: Path, micropython: str) -> Iterator[tuple[SimFixture, FixtureDriver, VirtualBoard]]:
    board = VirtualBoard("DUT-1", tmp_path / "dut", micropython=micropython)
    sim = SimFixture([board])
    drv = FixtureDriver(SerialPort(path=sim.port), timeout=2.0)
    try:
        drv.open()
        yield sim, drv, board
    finally:
        drv.close()
        sim.close()
        board.close()


def test_commands_reach_the_board_pins(bench: tuple[SimFixture, FixtureDriver, VirtualBoard]) -> None:
    _, drv, board = bench
    assert drv.channels == 1
    drv.press(0)
    assert board.inputs["button"] == 1
    drv.release(0)
    drv.press(0, "tamper")
    assert board.inputs == {"button": 0, "tamper": 1}
    assert drv.led(0) == "off"  # unpowered board: all outputs low


def test_errors_are_fixture_errors_with_the_reason(bench: tuple[SimFixture, FixtureDriver, VirtualBoard]) -> None:
    sim, drv, _ = bench
    with pytest.raises(FixtureError, match=r"'PRESS 3 button': ERR channel must be 0..0, got 3"):
        drv.press(3)
    with pytest.raises(FixtureError, match="ERR unknown command 'JUMP'"):
        drv.command("JUMP 0")
    with pytest.raises(FixtureError, match="has no sensor input 'accel'"):
        drv.command("SET 0 accel 12")
    assert sim.errors == 3
    assert drv.command("PING") == "OK fixture 1 1"  # still in step after the errors


def test_a_silent_fixture_is_an_infrastructure_failure(bench: tuple[SimFixture, FixtureDriver, VirtualBoard]) -> None:
    sim, drv, _ = bench
    sim.close()
    with pytest.raises(RigInfraError, match=r"fixture: (no answer to 'PING'|'PING': )"):
        drv.command("PING", timeout=0.5)


def test_a_missing_port_is_an_infrastructure_failure() -> None:
    with pytest.raises(RigInfraError, match="no serial port with USB serial number 'NOPE'"):
        SerialPort(serial_number="NOPE").find(timeout=0.2)
