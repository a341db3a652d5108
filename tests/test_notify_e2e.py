"""Families and staff are told, end to end: the real wristband firmware on the unix port in the
virtual air -> the gateway agent -> central's Mosquitto -> guardian-notify (verifier in-process)
-> Apprise webhooks to a local HTTP receiver standing in for phones. And the notifier killed -9
in the middle of a delivery: nothing is lost and nobody is told twice."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiomqtt
import cbor2
import pytest

from agent.central.keys import generate_central_key
from agent.gateway.signer import Signer, load_or_create_key
from agent.shared.protocol import ZERO_HASH
from agent.shared.registry import Device
from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import firmware_files, wristband_config
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.notifier import NotifierProcess
from tests.notify.receiver import Receiver

BAND = "WB-0001"
KEY = bytes(range(0x40, 0x60))
ESCALATE_S = 3
AIR = {
    "name": "care-home",
    "model": {"shadowing_db": 1, "loss": 0.0, "sensitivity_dbm": -105, "seed": 11},
    "zones": [{"name": "lounge", "rect": [0, 0, 10, 8]}],
    "scanners": [{"name": "scan-lounge", "at": [5, 4]}],
}
ALERTS = """\
venue = "venue-1"
[[zones]]
id = "lounge"
name = "Lounge"
[[scanners]]
id = "scan-lounge"
zone = "lounge"
[[residents]]
band = "WB-0001"
reference = "Resident 4 (room 4)"
"""


def circle(
    rx: Receiver, venue: str = "venue-1", bands: tuple[str, ...] = (BAND,), staff: tuple[tuple[str, str], ...] = ()
) -> str:
    """Li Wei, then Sam, for each band; the desk and any more `staff` (id, name) last."""
    residents = "".join(
        f'[[residents]]\nband = "{b}"\nreference = "Room {i}"\ncircle = ["li", "son"]\n' for i, b in enumerate(bands)
    )
    residents = (
        "".join(f'[[staff]]\nid = "{i}"\nname = "{n}"\nchannels = ["{rx.url(i)}"]\n' for i, n in staff) + residents
    )
    return f"""\
venue = "{venue}"
name = "Rosewood House"
timezone = "Europe/London"
escalate_after_s = {ESCALATE_S}
[[contacts]]
id = "li"
name = "Li Wei"
channels = ["{rx.url("li")}"]
[[contacts]]
id = "son"
name = "Sam"
channels = ["{rx.url("son")}"]
[[staff]]
id = "desk"
name = "Night desk"
channels = ["{rx.url("desk")}"]
{residents}"""


@pytest.fixture
def rx() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@contextmanager
def care_home(
    tmp_path: Path, brokers: tuple[Mosquitto, Mosquitto], micropython: str, rx: Receiver, agent_extra: str = ""
) -> Iterator[tuple[VirtualBoard, AgentProcess, NotifierProcess]]:
    """The band in the lounge, the agent (scanners, alert engine, `agent_extra`), central's
    notifier; all running, all stopped at the end."""
    local, central = brokers
    central_key = tmp_path / "central.key"
    central_pub = generate_central_key(central_key, "central")
    air = VirtualAir(parse_venue(AIR))
    alerts = tmp_path / "residents.toml"
    alerts.write_text(ALERTS)
    ble = "\n".join(
        f'[[ble]]\nname = "{n}"\nbackend = "sim"\nair = "{air.address[0]}:{air.address[1]}"\nposition = [{x}, {y}]'
        for n, (x, y) in air.venue.scanners.items()
    )
    agent = AgentProcess(
        tmp_path / "gw",
        local.address,
        central.address,
        [Device(BAND, "wristband", KEY, "venue-1", "lounge")],
        extra_config=f'{ble}\n[wristbands]\nalerts = "{alerts}"\n' + agent_extra,
        central_options=f'command_key = "{central_pub}"',
    )
    band = VirtualBoard(BAND, tmp_path / BAND, micropython=micropython, air=air.address)
    notifier = NotifierProcess(
        tmp_path / "notify",
        central.address,
        circle(rx),
        [(agent.public_key_file, "venue-1")],
        command_key=central_key,
        device_keys=agent.devices_file,
    )
    try:
        band.install(firmware_files("wristband"), wristband_config(BAND, KEY))
        band.set_position(5, 4)
        band.power_on()
        band.wait_console(f"wristband: {BAND} up", timeout=10)
        notifier.start()
        agent.start()
        agent.wait_log("uplink_up")
        air.wait_scanners({"scan-lounge"}, timeout=10)
        yield band, agent, notifier
    finally:
        band.close()
        notifier.stop()
        agent.kill()
        air.close()


@pytest.fixture
def home(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str, rx: Receiver) -> Iterator[tuple]:
    with care_home(tmp_path, broker_pair, micropython, rx) as parts:
        yield parts


def test_sos_reaches_the_family_escalates_and_the_ack_reaches_the_gateway(home: tuple, rx: Receiver) -> None:
    band, agent, notifier = home
    pressed = time.time()
    band.hold(2500)  # the band's SOS
    assert rx.wait_for(lambda: rx.at("li"), 30), notifier.log_text()[-3000:]
    (first,) = rx.at("li")
    assert first.title == "SOS: Resident 4 (room 4) (Rosewood House)"
    assert "pressed the SOS button in Lounge" in first.message
    assert first.t - pressed < 15
    # nobody acknowledges: the next round after escalate_after_s
    assert rx.wait_for(lambda: rx.at("son"), ESCALATE_S + 5)
    (second,) = rx.at("son")
    assert abs(second.t - first.t - ESCALATE_S) < 1.0, second.t - first.t
    assert rx.at("desk") == []
    # Sam acknowledges through his link (GET shows it, POST records it)
    link = second.message.split("I'm on it: ")[1].strip()
    assert link.startswith(notifier.base_url + "/a/")
    with urllib.request.urlopen(urllib.request.Request(link, method="POST"), timeout=5) as r:
        assert r.status == 200
    assert rx.wait_for(lambda: len(rx.at("li")) == 2, 10)
    assert "Sam acknowledged this" in rx.at("li")[1].message
    # the gateway gets central's signed ACK for the band's event
    agent.wait_log("command_accepted op=ack", timeout=15)
    assert f"device={BAND}" in agent.log_text(since_start=True).split("command_accepted op=ack", 1)[1].splitlines()[0]
    # staff are not needed any more: nothing reaches them after the next escalation time
    assert not rx.wait_for(lambda: rx.at("desk") != [], ESCALATE_S + 2)
    assert len(rx.at("son")) == 1 and len(rx.at("li")) == 2


# --- kill -9 of the notifier mid-delivery ----------------------------------------------------


def sos_event(band: str, seq: int, received_ms: int) -> bytes:
    return cbor2.dumps(
        {1: band, 2: 1_700_000_000, 3: seq, 4: 3, 5: 0, 6: 1000 + seq, 7: received_ms,
         8: {1: f"Room {band[-1]}", 2: "Lounge", 3: {"event_id": seq}}, 9: b""},
        canonical=True,
    )  # fmt: skip


async def publish(central: tuple[str, int], topic: str, blobs: list[bytes]) -> None:
    async with aiomqtt.Client(*central, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for blob in blobs:
            await client.publish(topic, blob, qos=1)


def test_kill_9_mid_delivery_loses_nothing_and_tells_nobody_twice(
    tmp_path: Path, broker: Mosquitto, rx: Receiver
) -> None:
    bands = ("WB-0001", "WB-0002", "WB-0003", "WB-0004")
    key = load_or_create_key(tmp_path / "gw.key", "GW-9")
    sealer = Signer(key, "GW-9", 1_700_000_000, 0, ZERO_HASH)
    topic = "venues/venue-9/gateways/GW-9/batches"
    notifier = NotifierProcess(
        tmp_path / "notify", broker.address, circle(rx, "venue-9", bands), [(tmp_path / "gw.key.pub", "venue-9")]
    )
    try:
        notifier.start()
        rx.hold["li"] = 8.0  # the first message to Li is received, but its answer never comes back
        now = int(time.time() * 1000)
        first = sealer.seal([sos_event(bands[0], 1, now)], now, 0)
        asyncio.run(publish(broker.address, topic, [first.blob]))
        assert rx.holding.wait(15), notifier.log_text()[-3000:]
        notifier.kill()  # between the send and its result
        # more alerts while the notifier is down: central's broker keeps them for its session
        more = [sealer.seal([sos_event(b, i + 2, now)], now, 0).blob for i, b in enumerate(bands[1:])]
        more.append(first.blob)  # and the gateway resends a batch (at-least-once uplink)
        asyncio.run(publish(broker.address, topic, more))
        notifier.start()
        assert rx.wait_for(
            lambda: {r.message.split(" pressed")[0] for r in rx.at("li")} >= {f"Room {b[-1]}" for b in bands}, 20
        ), notifier.log_text()[-3000:]
        assert "delivery_in_doubt action=resend" in notifier.log_text()
        # no escalation was due yet (3 s): only Li was told, once per alert as far as a receiver
        # that drops repeated delivery keys can tell; only the one in doubt went twice
        keys: dict[str, set[str | None]] = {}
        for r in rx.at("li"):
            keys.setdefault(r.message.split(" pressed")[0], set()).add(r.key)
        assert all(len(k) == 1 for k in keys.values()), keys
        raw = [r.message.split(" pressed")[0] for r in rx.at("li")]
        assert sorted(raw) == sorted([f"Room {b[-1]}" for b in bands] + ["Room 1"]), raw
        assert [r.title.startswith("(repeat)") for r in rx.at("li")].count(True) == 1
        notifier.stop()
        with sqlite3.connect(notifier.ledger_file) as db:
            states = dict(db.execute("SELECT state, COUNT(*) FROM deliveries WHERE kind = 'alert' GROUP BY state"))
            alerts = db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        assert alerts == len(bands)  # the resent batch added nothing
        assert "sending" not in states and states.get("sent", 0) >= len(bands), states
    finally:
        notifier.kill()
