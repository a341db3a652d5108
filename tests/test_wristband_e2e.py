"""Wristbands end to end: the real firmware on a virtual band (MicroPython unix port) walks
through a virtual venue; its adverts cross the virtual air (hil_tests/sim/air.py) to two
scanners inside the real agent process (bleak with the virtual-air backend), through the
resolver and the buffer to central's broker and the verifier.

Only the radio (the air), BlueZ (the bleak backend) and the band's pins and sensors (the
virtual board's control socket) are simulated.
"""

from __future__ import annotations

import ast
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.gateway.wristbands.advert import (
    AAD_END,
    LOW_BATTERY,
    STRAP_OPEN,
    WORN,
    AdvertError,
    EpochKeys,
    band_root,
    window_start,
)
from agent.gateway.wristbands.advert import (
    FALL as FLAG_FALL,
)
from agent.gateway.wristbands.resolver import BandKey, BandResolver
from agent.shared.registry import Device
from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import firmware_files, wristband_config
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto

BAND = "WB-0001"
KEY = bytes(range(0x40, 0x60))
DEVICES = [Device(BAND, "wristband", KEY, "venue-1", "lounge")]
VENUE = {
    "name": "care-home",
    "model": {"shadowing_db": 2, "loss": 0.0, "sensitivity_dbm": -105, "seed": 7},
    "zones": [
        {"name": "lounge", "rect": [0, 0, 10, 8]},
        {"name": "corridor", "rect": [10, 0, 20, 3]},
        {"name": "front-door", "rect": [20, 0, 22, 3], "exit": True},
    ],
    "scanners": [{"name": "scan-lounge", "at": [5, 4]}, {"name": "scan-corridor", "at": [15, 1.5]}],
}
WATCHDOG_S = 3
# short stillness check and cancel window, so a fall is confirmed within seconds
FALL = {"settle_ms": 300, "still_ms": 2000, "cancel_ms": 1000}


def ble_config(air: VirtualAir) -> str:
    lines = []
    for name, (x, y) in air.venue.scanners.items():
        lines += [
            "[[ble]]",
            f'name = "{name}"',
            'backend = "sim"',
            f'air = "{air.address[0]}:{air.address[1]}"',
            f"position = [{x}, {y}]",
            f"watchdog_s = {WATCHDOG_S}",
        ]
    return "\n".join(lines)


def foreign_advert(counter: int) -> bytes:
    """A well-formed advert from a band whose root key is not registered (built here)."""
    keys = EpochKeys(band_root(bytes(32)), 0, 10)
    eid = keys.eid(window_start(counter, 10))
    mask, _ = keys.privacy(eid)
    head = b"\x1e\xff\xff\xff" + bytes((keys.header,)) + eid + struct.pack(">I", counter ^ mask)
    nonce = eid + struct.pack(">IB", counter, keys.header)
    sealed = keys.ccm.encrypt(nonce, bytes((0x08, 90, 0, 0, 0, 0)), head[:AAD_END])
    return head + sealed


def agent_stats(agent: AgentProcess) -> dict[str, object]:
    return {k: ast.literal_eval(v) if v[:1] in "{[" else v for k, v in agent.stats().items()}


@pytest.fixture
def site(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str) -> Iterator[tuple]:
    local, central = broker_pair
    air = VirtualAir(parse_venue(VENUE))
    band = VirtualBoard(BAND, tmp_path / BAND, micropython=micropython, air=air.address)
    agent = AgentProcess(tmp_path / "gw", local.address, central.address, DEVICES, extra_config=ble_config(air))
    verifier = CentralVerifier(central.address, [agent.public_key_file], device_keys=agent.devices_file)
    try:
        band.install(firmware_files("wristband"), wristband_config(BAND, KEY, fall=FALL))
        band.set_position(2, 2)
        band.power_on()
        band.wait_console(f"wristband: {BAND} up", timeout=10)
        verifier.start()
        agent.start()
        agent.wait_log("uplink_up")
        air.wait_scanners(set(VENUE_SCANNERS), timeout=10)
        yield air, band, agent, verifier
    finally:
        band.close()
        verifier.stop()
        agent.kill()
        air.close()


VENUE_SCANNERS = ["scan-lounge", "scan-corridor"]


def test_band_walks_sos_reaches_central_bad_adverts_rejected_restart_keeps_replay(site: tuple) -> None:
    air, band, agent, verifier = site
    # the band walks from the lounge down the corridor; both scanners hear it
    for x, y in ((4, 3), (8, 2), (12, 1.5), (16, 1.5)):
        band.set_position(x, y)
        time.sleep(0.5)  # the resident's pace: the walk is the scenario
    captured = air.wait_advert(lambda _: True, 5, len(air.adverts()))[4]  # one sent from the corridor

    # SOS: hold 2 s; a P0 event for the band at central, once however many copies
    band.hold(2300)
    assert verifier.wait_for(lambda: verifier.events(device=BAND, type_name="SOS"), 15), verifier.records[-5:]
    (sos,) = verifier.events(device=BAND, type_name="SOS")
    assert sos["priority"] == 0 and sos["type"] == 3
    assert sos["data"]["1"] == BAND and sos["data"]["3"]["event_id"] == 1
    assert sos["data"]["3"]["scanner"] in VENUE_SCANNERS
    # the burst: repeats at 100 ms go out for 30 s; six in a row, where the band's usual
    # interval of a second would take five seconds
    n = len(air.adverts())
    air.wait_advert(lambda _: True, 5, n + 5)
    burst = [t for t, *_ in air.adverts(n)[:6]]
    assert burst[-1] - burst[0] < 2.5, f"six adverts took {burst[-1] - burst[0]:.2f} s"

    # a replayed advert (captured from the air, sent again), a forged one, an unknown band
    air.transmit(b"\x01" * 6, 5, 4, captured)
    forged = bytearray(air.adverts()[-1][4])
    forged[-1] ^= 0x01
    air.transmit(b"\x02" * 6, 5, 4, bytes(forged))
    air.transmit(b"\x03" * 6, 5, 4, foreign_advert(int(time.time())))
    for reason in ("replay", "bad_mic", "unknown_eid"):
        agent.wait_log(f"reason={reason}", timeout=5)

    # restart: the band kept advertising meanwhile; the old advert is still a replay
    agent.stop()
    first = agent_stats(agent)
    rejected = first["ble_rejected"]
    assert isinstance(rejected, dict)
    # each was sent once and heard by both scanners
    assert rejected.get("replay") == 2 and rejected.get("bad_mic") == 2 and rejected.get("unknown_eid") == 2, rejected
    agent.start()
    agent.wait_log("ble_scanner_up")
    air.wait_scanners(set(VENUE_SCANNERS), timeout=10)
    # straight after the start: the replay state was committed, so there is no window
    air.transmit(b"\x01" * 6, 5, 4, captured)
    agent.wait_log("reason=replay", timeout=5)
    # one SOS event at central: the stand-in sink keeps what it raised in RAM, so a restart
    # while the band still flags the SOS announces it again, with the same band event id
    assert {e["data"]["3"]["event_id"] for e in verifier.events(device=BAND, type_name="SOS")} == {1}
    assert {e["type_name"] for e in verifier.events(device=BAND)} == {"SOS"}

    # a scanner goes deaf: restarted by the watchdog, SCANNER_BLIND (P1) from the gateway
    air.mute("scan-corridor")
    assert verifier.wait_for(lambda: verifier.events(type_name="SCANNER_BLIND"), WATCHDOG_S + 10)
    blind = verifier.events(type_name="SCANNER_BLIND")[0]
    assert blind["device"] == agent.gateway_id and blind["priority"] == 1
    assert blind["data"]["1"] == "scan-corridor" and blind["data"]["2"] >= WATCHDOG_S * 1000
    air.mute("scan-corridor", False)
    agent.wait_log("ble_scanner_back name=scan-corridor", timeout=10)
    assert verifier.problems() == [], verifier.problems()


def test_fall_strap_and_battery_from_the_band_sensors(site: tuple) -> None:
    air, band, _, verifier = site
    since = len(air.adverts())
    # strap opened and a low battery: new adverts at once, flags set
    band.set_input("strap", 1)
    band.set_battery(10)
    resolver = BandResolver([BandKey(BAND, band_root(KEY))])

    def flags(raw: bytes) -> int:
        try:
            return resolver.resolve(raw, int(time.time() * 1000)).status.flags
        except AdvertError:
            return 0

    air.wait_advert(lambda raw: flags(raw) & (STRAP_OPEN | LOW_BATTERY) == STRAP_OPEN | LOW_BATTERY, 5, since)
    band.set_input("strap", 0)
    air.wait_advert(lambda raw: flags(raw) & (STRAP_OPEN | WORN) == WORN, 5, since)
    # a fall: free fall, impact, lying still; the band buzzes, then confirms it (milli-g at 50 Hz)
    samples = [(0, 0, 100)] * 10 + [(0, 2900, 1500)] + [(0, 0, 1000)] * 150
    for x, y, z in samples:
        band.accel(x, y, z)
        time.sleep(0.02)
    band.wait_console("wristband: FALL event", timeout=10)
    assert verifier.wait_for(lambda: verifier.events(device=BAND, type_name="FALL"), 15)
    (fall,) = verifier.events(device=BAND, type_name="FALL")
    assert fall["priority"] == 0 and fall["data"]["3"]["event_id"] == 1
    air.wait_advert(lambda raw: bool(flags(raw) & FLAG_FALL), 5, since)
    assert "wristband: fall suspected" in band.console_output().decode()
    assert verifier.problems() == [], verifier.problems()
