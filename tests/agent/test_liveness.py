"""Device liveness on a clock: the learned interval, DEVICE_OFFLINE once, DEVICE_ONLINE when it is
back, the last will only shortening the wait, and the state a restart hands back."""

from __future__ import annotations

from typing import Any

from agent.gateway.config import LivenessConfig
from agent.gateway.liveness import Liveness
from agent.shared.frames import Event
from agent.shared.protocol import EventType
from agent.shared.registry import Device, Registry

T0 = 1_700_000_000.0
HB, ALARM = int(EventType.HEARTBEAT), int(EventType.ALARM)
OFFLINE, ONLINE = int(EventType.DEVICE_OFFLINE), int(EventType.DEVICE_ONLINE)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return T0 + self.t


def registry() -> Registry:
    return Registry(
        [
            Device("AP-1", "alarm_post", bytes(32), "v", "Lobby"),
            Device("SN-1", "sensor", bytes(32), "v", "Kitchen"),
            Device("WB-1", "wristband", bytes(32), "v", ""),
        ]
    )


def tracker(clock: Clock, rows: list[Any] | None = None, reg: Registry | None = None) -> Liveness:
    cfg = LivenessConfig(margin_s=5.0, default_interval_s=60.0)
    return Liveness(cfg, reg or registry(), rows=rows or [], clock=clock.mono, wall=clock.wall)


def frame(clock: Clock, device: str, seq: int, type_: int = HB, boot: int = 1) -> Event:
    return Event(device, boot, seq, type_, 0, int(clock.wall() * 1000), {}, b"\0" * 8)


def beat(live: Liveness, clock: Clock, device: str, n: int, every: float, start: int = 1) -> int:
    """n heartbeats `every` seconds apart; returns the next seq."""
    for i in range(n):
        live.heard(frame(clock, device, start + i))
        clock.t += every
    return start + n


def test_a_post_that_stops_heartbeating_is_reported_offline_once_and_online_when_back() -> None:
    clock = Clock()
    live = tracker(clock)
    seq = beat(live, clock, "AP-1", 4, 10.0)
    assert live.snapshot()["AP-1"].interval_ms == 10_000 and live.snapshot()["AP-1"].learned
    assert [r[0] for r in live.take_kept()] == ["AP-1", "AP-1"], "first followed, then the interval learned"
    # silent: 2 x 10 s + 5 s margin
    clock.t += 14.0  # 24 s since the last heartbeat
    assert live.check() == []
    clock.t += 1.5
    (raised,) = live.check()
    assert raised[0] == OFFLINE
    assert raised[1] == {1: "AP-1", 2: 25_500, 3: "heartbeat", 4: 10_000}
    assert raised[2] == [("AP-1", 10_000, int(clock.wall() * 1000), "heartbeat")], "the row goes with the event"
    clock.t += 600
    assert live.check() == [], "raised once"
    assert live.snapshot()["AP-1"].offline_since_ms == int((T0 + 155.5) * 1000)
    # an alarm after ten minutes: online, with the time it was away
    live.heard(frame(clock, "AP-1", seq, ALARM))
    (back,) = live.check()
    assert back[0] == ONLINE and back[1] == {1: "AP-1", 2: 600_000}
    assert back[2] == [("AP-1", 10_000, None, None)]
    assert live.check() == []
    assert (live.counters.offline, live.counters.online) == (1, 1)


def test_the_interval_is_the_median_of_heartbeat_gaps_within_a_boot() -> None:
    clock = Clock()
    live = tracker(clock)
    seq = beat(live, clock, "SN-1", 6, 30.0)
    # an alarm between heartbeats and one skipped heartbeat do not move it
    live.heard(frame(clock, "SN-1", seq, ALARM))
    clock.t += 30.0
    seq = beat(live, clock, "SN-1", 2, 30.0, seq + 1)
    assert live.snapshot()["SN-1"].interval_ms == 30_000
    # a reboot: the gap across boots is not a heartbeat gap
    clock.t += 500
    live.heard(frame(clock, "SN-1", 1, HB, boot=2))
    assert live.snapshot()["SN-1"].interval_ms == 30_000


def test_until_learned_the_default_interval_applies() -> None:
    clock = Clock()
    live = tracker(clock)
    live.heard(frame(clock, "AP-1", 1, ALARM))
    assert not live.snapshot()["AP-1"].learned and live.snapshot()["AP-1"].interval_ms == 60_000
    assert live.take_kept() == [("AP-1", 0, None, None)], "0: no interval learned yet"
    clock.t += 124.0
    assert live.check() == []
    clock.t += 2.0
    (raised,) = live.check()
    assert raised[1][3] == "heartbeat" and raised[1][4] == 60_000


def test_a_will_shortens_the_wait_only_for_a_device_that_went_quiet() -> None:
    clock = Clock()
    live = tracker(clock)
    beat(live, clock, "AP-1", 3, 10.0)
    clock.t -= 10.0  # right after the last heartbeat
    # anyone on the venue network can publish "offline" on a device's status topic: a device
    # that heartbeats on time is never reported for it
    live.status("AP-1", b"offline")
    clock.t += 9.0
    assert live.check() == []
    live.heard(frame(clock, "AP-1", 10))
    live.status("AP-1", b"offline")
    clock.t += 14.0
    assert live.check() == []
    clock.t += 1.5  # interval + margin after its last frame, with its will
    (raised,) = live.check()
    assert raised[1][3] == "will" and raised[1][2] == 15_500


def test_online_status_clears_the_will_and_bad_status_is_counted() -> None:
    clock = Clock()
    live = tracker(clock)
    beat(live, clock, "AP-1", 3, 10.0)
    live.status("AP-1", b"offline")
    live.status("AP-1", b"online")  # it reconnected
    clock.t += 6.0  # 16 s since its last heartbeat: past interval + margin, short of two intervals
    assert live.check() == []
    live.status("AP-1", b"gone")
    live.status("AP 1/x", b"offline")
    live.status("AP-9", b"offline")  # not in the registry
    live.status("WB-1", b"offline")  # a wristband is not followed
    live.status("SN-1", b"offline")  # a sensor never heard: nothing to shorten
    assert dict(live.counters.rejected) == {"status_malformed": 2, "status_unknown_device": 2}
    assert "SN-1" not in live.snapshot()


def test_wristbands_and_unknown_devices_are_not_followed() -> None:
    clock = Clock()
    live = tracker(clock)
    live.heard(frame(clock, "WB-1", 1))
    live.heard(frame(clock, "XX-1", 1))
    assert live.snapshot() == {} and live.take_kept() == []


def test_a_restart_raises_nothing_again_and_gives_every_device_a_full_wait() -> None:
    clock = Clock()
    rows = [
        ("AP-1", 10_000, int((T0 + 50) * 1000), "will"),
        ("SN-1", 30_000, None, None),
        ("GONE-1", 5_000, None, None),
    ]
    live = tracker(clock, rows)
    assert set(live.snapshot()) == {"AP-1", "SN-1"}, "a device no longer registered is dropped"
    assert live.snapshot()["AP-1"].offline_since_ms == int((T0 + 50) * 1000)
    assert live.snapshot()["SN-1"].last_heard_ms is None and live.snapshot()["SN-1"].learned
    clock.t += 64.0
    assert live.check() == [], "AP-1 is offline already; SN-1 gets 2 x 30 s + 5 s from the start"
    clock.t += 2.0
    (raised,) = live.check()
    assert raised[0] == OFFLINE and raised[1][1] == "SN-1"
    live.heard(frame(clock, "AP-1", 7))
    (back,) = live.check()
    assert back[0] == ONLINE and back[1] == {1: "AP-1", 2: int((clock.wall() - T0 - 50) * 1000)}


def test_a_revoked_device_is_no_longer_followed() -> None:
    clock = Clock()
    reg = registry()
    live = tracker(clock, reg=reg)
    beat(live, clock, "AP-1", 3, 10.0)
    reg.revoke("AP-1")
    clock.t += 100
    assert live.check() == [] and live.snapshot() == {}
