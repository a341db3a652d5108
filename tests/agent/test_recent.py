"""The recent alarms and alerts (agent/gateway/recent.py): each event's receipts as the gateway's
parts report them, the ring's bound, and the one log line per alarm."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.gateway.planner import Submitted
from agent.gateway.recent import RecentEvents
from agent.gateway.signer import SealedBatch, Signer
from agent.shared.frames import Event
from agent.shared.protocol import ZERO_HASH, EventType
from agent.shared.registry import Device, Registry

REGISTRY = Registry(
    [
        Device("AP-1", "alarm_post", bytes(32), "v", "hall"),
        Device("WB-1", "wristband", bytes(32), "v", "room 4"),
    ]
)
SIGNER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def event(seq: int, typ: int = EventType.ALARM, device: str = "AP-1", data: dict[int, object] | None = None) -> Event:
    return Event(device, 1, seq, typ, seq, 1_700_000_000_000, data or {}, b"\x01" * 8, 1)


def seal(signer: Signer, *events: Event) -> SealedBatch:
    return signer.seal([e.encoded for e in events], 7, min(e.prio for e in events))


def test_an_alarm_goes_through_receipts_1_2_3_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    recent = RecentEvents("GW-1", REGISTRY, clock=clock)
    signer = Signer(SIGNER_KEY, "GW-1", 1, 0, ZERO_HASH)
    alarm, heartbeat = event(2), event(3, EventType.HEARTBEAT)
    recent.accepted(alarm)
    recent.accepted(heartbeat)
    assert [e.ref for e in recent.snapshot()] == ["AP-1/1/2"], "telemetry is not kept"
    assert recent.snapshot()[0].receipt == 0
    clock.t += 0.004
    recent.committed([Submitted(alarm, None, None), Submitted(heartbeat, None, None)])
    other = seal(signer, event(9))
    batch = seal(signer, heartbeat, alarm)
    with caplog.at_level(logging.INFO, logger="agent.gateway.recent"):
        recent.sealed([other, batch])
        assert caplog.records == [], "sealed in the round that stored it: not held"
        clock.t += 0.010
        recent.delivered(other)
        assert recent.snapshot()[0].receipt == 1, "another batch's PUBACK is not this alarm's"
        recent.delivered(batch)
        recent.delivered(batch)
    shown = recent.snapshot()[0]
    assert shown.receipt == 2 and shown.zone == "hall"
    assert shown.stored_ms == 1_700_000_000_004 and shown.delivered_ms == 1_700_000_000_014
    assert [r.getMessage() for r in caplog.records] == [
        "alarm device=AP-1 zone=hall type=ALARM ref=AP-1/1/2 stored_ms=4.0 delivered_ms=14.0"
    ]
    recent.acknowledged("AP-1", 1, 2)
    assert recent.snapshot()[0].receipt == 3


def test_an_alarm_stored_while_central_is_away_is_logged_as_held(caplog: pytest.LogCaptureFixture) -> None:
    recent = RecentEvents("GW-1", REGISTRY, clock=Clock())
    alarm = event(2)
    recent.accepted(alarm)
    recent.committed([Submitted(alarm, None, None)])
    with caplog.at_level(logging.INFO, logger="agent.gateway.recent"):
        recent.sealed([])
        recent.sealed([])
    assert [r.getMessage().split()[0] for r in caplog.records] == ["alarm_held"]
    assert 'reason="waiting for central"' in caplog.records[0].getMessage()


def test_zones_of_band_alerts_and_gateway_events() -> None:
    recent = RecentEvents("GW-1", REGISTRY, clock=Clock())
    recent.accepted(event(1, EventType.SOS, "WB-1", {1: "Resident 4", 2: "garden", 3: {}}))
    recent.accepted(event(2, EventType.DEVICE_OFFLINE, "GW-1", {1: "AP-1", 2: 90_000, 3: "heartbeat", 4: 60_000}))
    recent.accepted(event(3, EventType.SCANNER_BLIND, "GW-1", {1: "hall-scanner", 2: 60_000, 3: 1}))
    assert [(e.type_name, e.zone) for e in recent.snapshot()] == [
        ("SCANNER_BLIND", None),
        ("DEVICE_OFFLINE", "hall"),
        ("SOS", "garden"),
    ]


def test_the_ring_is_bounded_and_what_it_dropped_is_forgotten_everywhere() -> None:
    recent = RecentEvents("GW-1", REGISTRY, size=3, clock=Clock())
    signer = Signer(SIGNER_KEY, "GW-1", 1, 0, ZERO_HASH)
    events = [event(i) for i in range(1, 11)]
    for ev in events[:5]:
        recent.accepted(ev)
    recent.committed([Submitted(ev, None, None) for ev in events[:5]])
    recent.sealed([seal(signer, *events[:5])])
    for ev in events[5:]:
        recent.accepted(ev)
    assert [e.seq for e in recent.snapshot()] == [10, 9, 8]
    assert recent._by_batch == {} and recent._unsealed == {}
    assert len(recent._unstored) == 3


def test_an_evicted_state_change_is_marked_dropped() -> None:
    recent = RecentEvents("GW-1", REGISTRY, clock=Clock())
    tamper = event(4, EventType.TAMPER, data={1: 1})
    recent.accepted(tamper)
    recent.committed([Submitted(tamper, None, None)])
    recent.dropped([tamper.key])
    shown = recent.snapshot()[0]
    assert shown.dropped and shown.receipt == 1
