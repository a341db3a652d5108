"""The venue sensors' door contacts and the venue alerts in the gateway: committed sensor events
through DoorFeed (agent/gateway/wristbands/doors.py) to the alert engine via the BLE source
(agent/gateway/wristbands/source.py), and the engine's venue alerts as the gateway's own
SCANNER_BLIND events. The engine's own rules are tests/agent/test_ble_alerts.py's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agent.gateway.config import WristbandConfig
from agent.gateway.wristbands.alerts import AlertEngine
from agent.gateway.wristbands.doors import DoorChange, DoorFeed
from agent.gateway.wristbands.source import BleSources
from agent.shared.frames import Event
from agent.shared.protocol import EventType
from agent.shared.registry import Device, Registry
from tests.agent.test_ble_alerts import HALL, Band, _glimpse, door_venue, venue

T = 1_700_050_000_000


def sensor_event(typ: int, data: dict[int, Any], received: int = T, device: str = "VS-1") -> Event:
    return Event(device, 1, 5, typ, 1234, received, data, bytes(8), 1)


class Gateway:
    """What the BLE source hands its events to (agent/gateway/pipeline.py Pipeline)."""

    def __init__(self) -> None:
        self.band: list[tuple[str, int, dict[int, Any]]] = []
        self.own: list[tuple[int, dict[int, Any]]] = []

    def band_events(self, events: list[tuple[str, int, dict[int, Any]]], band_rows: list[tuple[str, int, int]]) -> None:
        self.band += events

    def gateway_event(self, event_type: int, data: dict[int, Any]) -> None:
        self.own.append((event_type, data))


def sources(engine: AlertEngine, feed: DoorFeed | None = None) -> tuple[BleSources, Gateway]:
    gw = Gateway()
    registry = Registry(
        [Device("WB-1", "wristband", bytes(32), "v", "-"), Device("WB-2", "wristband", bytes(32), "v", "-")]
    )
    return BleSources([], WristbandConfig(), registry, pipeline=gw, sink=engine, doors=feed), gw


def test_the_feed_dates_an_opening_with_what_the_sensor_says() -> None:
    feed = DoorFeed(limit=4)
    opened = {1: 2, 2: 1, 3: "front-door"}
    feed.observe(sensor_event(70, {**opened, 4: 1500}))  # open for 1.5 s when reported
    feed.observe(sensor_event(70, opened, T + 10_000))  # firmware that does not say: dated on arrival
    feed.observe(sensor_event(72, {1: 2, 2: 70, 3: "front-door"}, T + 20_000))  # shut
    feed.observe(sensor_event(72, {1: 0, 2: 7, 3: "kitchen"}))  # smoke cleared: not a door
    feed.observe(sensor_event(70, {1: 2, 2: 1, 3: 9}))  # no channel name: nothing to map
    feed.observe(sensor_event(70, {**opened, 4: True}))  # not a time: as if not said
    feed.observe(sensor_event(70, {**opened, 4: -5}))  # the queue holds 4: dropped, counted

    async def drain() -> list[DoorChange]:
        return [await feed.get() for _ in range(4)]

    assert asyncio.run(drain()) == [
        DoorChange("VS-1", "front-door", True, T - 1500, 1500),
        DoorChange("VS-1", "front-door", True, T + 10_000, None),
        DoorChange("VS-1", "front-door", False, T + 20_000, None),
        DoorChange("VS-1", "front-door", True, T, None),
    ]
    assert feed.dropped == 1


def test_a_mapped_door_opening_confirms_the_exit_evidence(caplog: pytest.LogCaptureFixture) -> None:
    # as tests/agent/test_ble_alerts.py's door test, with the opening coming from a committed
    # DOOR_HELD_OPEN of sensor VS-1's channel "front-door" (the venue's [[doors]] "front")
    engine = AlertEngine(door_venue(rssi_window_s=0.5, exit_confirm=3))
    feed = DoorFeed()
    src, gw = sources(engine, feed)
    b = Band(engine)
    b.run(10, HALL)
    b.run(20, {"H1": -72, "X1": -80})
    feed.observe(sensor_event(70, {1: 2, 2: 1, 3: "other"}, b.t * 1000))  # not mapped: nothing
    feed.observe(sensor_event(70, {1: 2, 2: 1, 3: "front-door", 4: 1000}, b.t * 1000 + 1000))

    async def deliver() -> None:
        for _ in range(2):
            src.door_change(feed, await feed.get())

    asyncio.run(deliver())
    assert engine.counts["door_opened"] == 1 and engine.counts["unknown_door"] == 0
    _glimpse(b)
    assert b.types() == [EventType.EXIT, EventType.BACK_INSIDE]
    assert b.alerts[0].context["reason"] == "exit zone, door opened"
    assert "door_contact_slow" not in caplog.text
    # a contact that reports a minute after the opening cannot confirm anything: said in the log
    with caplog.at_level(logging.WARNING):
        src.door_change(feed, DoorChange("VS-1", "front-door", True, b.t * 1000, 60_000))
        src.door_change(feed, DoorChange("VS-1", "front-door", False, b.t * 1000, None))
    assert "door_contact_slow door=front sensor=VS-1 channel=front-door held_ms=60000" in caplog.text
    assert engine.counts["door_closed"] == 1 and gw.band == []  # the engine's alerts came from b's calls


def test_venue_alerts_go_up_as_the_gateways_scanner_blind() -> None:
    engine = AlertEngine(venue(exit_blind_after_s=60))
    src, gw = sources(engine)
    engine.scanner_down("X1", T)
    src.tick(0.0, T + 59_000)
    assert gw.own == []
    src.tick(0.0, T + 61_000)
    ((typ, data),) = gw.own
    assert typ == 69 == int(EventType.SCANNER_BLIND)
    assert (data[1], data[2], data[3]) == ("X1", 61_000, 0)
    ctx = data[4]
    assert ctx["zone"] == "Front door" and ctx["watched"] == 0 and ctx["scanners_down"] == "X1"
    src.tick(0.0, T + 120_000)
    assert len(gw.own) == 1  # one per outage
    engine.scanner_up("X1", T + 125_000)
    src.tick(0.0, T + 126_000)
    assert [(d[1], d[2], d[4]["watched"]) for _, d in gw.own[1:]] == [("X1", 125_000, 1)]
