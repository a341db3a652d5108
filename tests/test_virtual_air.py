"""The virtual air, its venue files, the bleak backend on it and the [[ble]] config: bad input is
rejected with a named reason, good input travels through bleak's normal callback path."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from agent.gateway.config import load_config
from agent.gateway.wristbands.sim_scanner import SimAirScanner, parse_ad
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, write_registry
from hil_tests.sim.air import VenueError, VirtualAir, load_venue, parse_venue
from hil_tests.sim.tools import wait_until

VENUE = {
    "model": {"shadowing_db": 0, "loss": 0.0, "seed": 3},
    "zones": [{"name": "hall", "rect": [0, 0, 20, 10]}, {"name": "door", "rect": [20, 0, 22, 3], "exit": True}],
    "scanners": [{"name": "s1", "at": [1, 1]}],
}
ADVERT = bytes.fromhex("1effffff40426b2f377c137db05ec21604208c23659844c3f5f81fb8bd5160")  # wristband.json adverts[0]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ([], "expected a mapping"),
        ({"zones": []}, "zones: expected a non-empty list"),
        ({"zones": [{"name": "a", "rect": [0, 0, 0, 1]}]}, "zones[0].rect: expected x0 < x1"),
        ({"zones": [{"name": "a b", "rect": [0, 0, 1, 1]}]}, "zones[0].name"),
        ({"zones": [{"name": "a", "rect": [0, 0, 1, 1], "door": 1}]}, "zones[0].door: unknown key"),
        ({"zones": [{"name": "a", "rect": [0, 0, 1, 1]}], "model": {"loss": 1.5}}, "model: loss"),
        ({"zones": [{"name": "a", "rect": [0, 0, 1, 1]}], "scanners": [{"name": "s", "at": [1]}]}, "scanners[0].at"),
    ],
)
def test_bad_venues_name_the_key(data: object, where: str) -> None:
    with pytest.raises(VenueError, match=__import__("re").escape(where)):
        parse_venue(data)


def test_venue_file_zones(tmp_path: Path) -> None:
    path = tmp_path / "venue.yaml"
    path.write_text(
        "zones:\n  - {name: hall, rect: [0, 0, 20, 10]}\n  - {name: door, rect: [20, 0, 22, 3], exit: true}\n"
    )
    venue = load_venue(path)
    assert venue.zone_at(21, 1) == venue.zone("door") and venue.zone("door").exit
    assert venue.zone_at(30, 30) is None
    path.write_text("zones: [")
    with pytest.raises(VenueError, match="not valid YAML"):
        load_venue(path)


def _recv(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    return sock.recv(600)


def test_air_delivers_with_path_loss_and_counts_bad_datagrams() -> None:
    with VirtualAir(parse_venue(VENUE)) as air, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scanner:
        scanner.bind(("127.0.0.1", 0))
        scanner.sendto(b"scan s1 1 1", air.address)
        air.wait_scanners({"s1"})
        rssi = []
        for x in (2.0, 11.0, 21.0):  # 1 m, 10 m (same room), 20 m (through a wall)
            air.transmit(b"\xaa" * 6, x, 1, ADVERT)
            verb, addr, level, hexed = _recv(scanner).split(b" ")
            assert (verb, addr, bytes.fromhex(hexed.decode())) == (b"rx", b"aa" * 6, ADVERT)
            rssi.append(int(level))
        assert rssi == [-59, -81, -94]  # -59 - 22 log10(d), -6 dB for the wall; no noise here
        air.mute("s1")
        carried = len(air.adverts())
        air.transmit(b"\xaa" * 6, 2, 1, ADVERT)
        air.wait_advert(lambda _: True, 2, carried)
        air.mute("s1", False)
        air.transmit(b"\xbb" * 6, 2, 1, ADVERT)
        assert _recv(scanner).split(b" ")[1] == b"bb" * 6  # the muted copy never came
        for bad in (
            b"adv zz 1 1 00",
            b"adv aaaaaaaaaaaa x 1 00",
            b"adv aaaaaaaaaaaa 1 1 0g",
            b"hello",
            b"scan a b",
            b"bye s9",
        ):
            scanner.sendto(bad, air.address)
        wait_until(lambda: sum(air.rejected.values()) >= 6, 2, "six rejected datagrams")
        assert dict(air.rejected) == {
            "bad_hex": 2,
            "bad_number": 1,
            "unknown_verb": 1,
            "malformed": 1,
            "unknown_scanner": 1,
        }


def test_parse_ad() -> None:
    assert parse_ad(ADVERT) == ({0xFFFF: ADVERT[4:]}, None)
    assert parse_ad(b"\x02\x01\x06\x04\x09abc\x00\x00") == ({}, "abc")
    for bad in (b"\x05\xff\x01", b"\x02\xff\x01"):
        with pytest.raises(ValueError):
            parse_ad(bad)


async def test_bleak_scanner_with_the_sim_backend_hears_the_air() -> None:
    with VirtualAir(parse_venue(VENUE)) as air:
        got: asyncio.Queue[tuple[BLEDevice, AdvertisementData]] = asyncio.Queue()
        scanner = BleakScanner(
            lambda d, a: got.put_nowait((d, a)),
            scanning_mode="passive",
            backend=SimAirScanner,
            air=air.address,
            name="s1",
            position=(1.0, 1.0),
        )
        async with scanner:
            await asyncio.to_thread(air.wait_scanners, {"s1"})
            air.transmit(bytes.fromhex("c0ffee000001"), 3, 1, ADVERT)
            device, adv = await asyncio.wait_for(got.get(), 5)
            assert device.address == "C0:FF:EE:00:00:01"
            assert adv.manufacturer_data == {0xFFFF: ADVERT[4:]} and -70 < adv.rssi < -60
            backend = scanner._backend
            assert isinstance(backend, SimAirScanner)
            backend.datagram(b"rx nothex -50 00")
            backend.datagram(b"rx aaaaaaaaaaaa -50 05ff01")
            backend.datagram(b"rx aaaaaaaaaaaa loud 00")
            assert dict(backend.rejected) == {"bad_addr": 1, "bad_ad": 1, "bad_rssi": 1}
        # stop() said bye: the air forgets the scanner (a datagram on its way: polled)
        await asyncio.to_thread(wait_until, lambda: "s1" not in air.scanners(), 5, "the scanner's bye")


BASE = """
[gateway]
id = "GW-1"
venue = "v1"
data_dir = "data"
devices_file = "devices.toml"
[local]
host = "127.0.0.1"
[central]
host = "127.0.0.1"
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[ble]]\nname = "s1"\nbackend = "radio"', "ble[0].backend: expected one of bluez, sim"),
        ('[[ble]]\nname = "s1"\nadapter = "eth0"', "ble[0].adapter: expected an adapter name"),
        ('[[ble]]\nname = "s1"\nbackend = "sim"', "ble[0].air: missing"),
        ('[[ble]]\nname = "s1"\nbackend = "sim"\nair = "127.0.0.1:9"\nposition = [1]', "ble[0].position"),
        ('[[ble]]\nname = "s1"\n[[ble]]\nname = "s1"', "ble[1].name: duplicate scanner name"),
        ('[[ble]]\nname = "s1"\nwatchdog_s = 1', "ble[0].watchdog_s"),
        ("[wristbands]\nk = 7", "wristbands.k"),
    ],
)
def test_bad_ble_config_names_the_key(tmp_path: Path, extra: str, message: str) -> None:
    write_registry(tmp_path / "devices.toml", [Device("WB-1", "wristband", bytes(32), "v1", "hall")])
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra + "\n")
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        load_config(path)


def test_ble_config(tmp_path: Path) -> None:
    write_registry(tmp_path / "devices.toml", [])
    path = tmp_path / "agent.toml"
    path.write_text(
        BASE
        + '[[ble]]\nname = "hall"\nadapter = "hci1"\n'
        + '[[ble]]\nname = "sim1"\nbackend = "sim"\nair = "127.0.0.1:4000"\nposition = [2, 3.5]\n'
        + "[wristbands]\ncompany = 0x0A0B\n"
    )
    cfg = load_config(path)
    assert [(s.name, s.backend, s.adapter, s.air, s.position) for s in cfg.ble] == [
        ("hall", "bluez", "hci1", None, (0.0, 0.0)),
        ("sim1", "sim", None, ("127.0.0.1", 4000), (2.0, 3.5)),
    ]
    assert cfg.wristbands.company == 0x0A0B and cfg.wristbands.k == 10
