"""The wristband alert engine (agent/gateway/wristbands/alerts.py) and its venue file (wristbands/venue.py).

Sightings are built directly (the resolver has its own tests); times are gateway unix ms.
The property test runs from the session's seed (tests/seeds.py: a failure names GE_SEED=<n>,
which replays it).
"""

from __future__ import annotations

import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.gateway.wristbands import advert as adv
from agent.gateway.wristbands.alerts import Alert, AlertEngine, VenueAlert
from agent.gateway.wristbands.resolver import BandKey, BandResolver, Sighting
from agent.gateway.wristbands.venue import Venue, load, parse
from agent.shared.errors import ConfigError
from agent.shared.frames import Event, band_open_changes
from agent.shared.protocol import EventType
from tests.seeds import seeded
from tests.vectors import wristband as ref

T0 = 1_700_006_400  # 2023-11-15 00:00 UTC
NOON = T0 + 12 * 3600
WORN = adv.WORN


def doc(**settings_: Any) -> dict[str, Any]:
    return {
        "venue": "test-home",
        "timezone": "UTC",
        "settings": {"missing_after_s": 60, "strap_after_s": 15, "scanner_grace_s": 20, **settings_},
        "zones": [
            {"id": "lounge", "name": "Lounge", "kind": "inside"},
            {"id": "hall", "name": "Hall", "kind": "inside"},
            {"id": "door", "name": "Front door", "kind": "exit", "min_rssi": -85},
            {"id": "office", "name": "Staff office"},
        ],
        "scanners": [
            {"id": "L1", "zone": "lounge"},
            {"id": "L2", "zone": "lounge"},
            {"id": "H1", "zone": "hall"},
            {"id": "X1", "zone": "door"},
            {"id": "O1", "zone": "office"},
        ],
        "residents": [
            {
                "band": "WB-1",
                "reference": "Resident A (room 1)",
                "quiet_hours": "22:00-07:00",
                "allowed_zones": ["lounge", "hall"],
            },
            {"band": "WB-2", "reference": "Resident B (room 2)"},
        ],
    }


def venue(**settings_: Any) -> Venue:
    return parse(doc(**settings_), Path("venue.toml"))


def door_venue(**settings_: Any) -> Venue:
    d = doc(**settings_)
    d["doors"] = [{"id": "front", "zone": "door", "sensor": "VS-1", "channel": "front-door"}]
    return parse(d, Path("venue.toml"))


class Band:
    """Drives one band: one advert per second heard by the given scanners, ticks between."""

    def __init__(self, engine: AlertEngine, band: str = "WB-1", t: int = NOON) -> None:
        self.e = engine
        self.band = band
        self.t = t  # seconds; the counter follows the band's clock (offset 0)
        self.flags = WORN
        self.battery = 80
        self.event_id = 0
        self.event_t = 0
        self.alerts: list[Alert] = []

    def event(self, flag: int) -> None:
        self.event_id += 1
        self.event_t = self.t
        self.flags |= flag

    def second(self, heard: dict[str, int], copies: int = 1) -> None:
        age = self.t - self.event_t if self.event_id else 0
        status = adv.Status(self.flags, self.battery, self.event_id, age)
        for c in range(copies):
            new = c == 0
            for scanner, rssi in heard.items():
                s = Sighting(self.band, self.t, status, new, False, 0.0)
                new = False
                self.alerts += self.e.on_sighting(scanner, rssi, self.t * 1000 + 100 * c + 5, s)
        self.t += 1
        self.alerts += self.e.tick(self.t * 1000)

    def run(self, seconds: int, heard: dict[str, int], copies: int = 1) -> None:
        for _ in range(seconds):
            self.second(heard, copies)

    def silent(self, seconds: int) -> None:
        for _ in range(seconds):
            self.t += 1
            self.alerts += self.e.tick(self.t * 1000)

    def types(self) -> list[EventType]:
        return [a.type for a in self.alerts]


LOUNGE = {"L1": -60, "L2": -70, "H1": -85}
HALL = {"L1": -82, "H1": -62, "X1": -88}
DOOR = {"H1": -84, "X1": -60}


def test_sos_one_alert_for_burst_and_all_scanners() -> None:
    b = Band(AlertEngine(venue()))
    b.run(5, LOUNGE)
    b.event(adv.SOS)
    b.run(30, LOUNGE, copies=10)  # the burst: the same advert ten times a second, three scanners
    b.run(60, LOUNGE)
    assert b.types() == [EventType.SOS]
    a = b.alerts[0]
    assert a.priority == 0 and a.lane == "P0" and int(a.type) == 3
    assert (a.band, a.resident, a.zone) == ("WB-1", "Resident A (room 1)", "Lounge")
    assert a.context["event_id"] == 1 and a.context["scanner"] == "L1"
    assert a.context["time"] == "2023-11-15T12:00:05+00:00"
    assert "Resident A (room 1) pressed SOS in Lounge" in str(a.context["text"])


def test_second_sos_while_flag_is_kept_is_a_new_alert() -> None:
    b = Band(AlertEngine(venue()))
    b.event(adv.SOS)
    b.run(40, LOUNGE, copies=3)
    b.event(adv.SOS)  # pressed again after the burst: a new event id, the flag never dropped
    b.run(40, LOUNGE, copies=3)
    assert [(a.type, a.context["event_id"]) for a in b.alerts] == [(EventType.SOS, 1), (EventType.SOS, 2)]


def test_fall_after_sos_is_one_fall_and_no_second_sos() -> None:
    b = Band(AlertEngine(venue()))
    b.event(adv.SOS)
    b.run(40, LOUNGE)
    b.event(adv.FALL)  # the event id now names the fall; the SOS flag is still set
    b.run(40, LOUNGE)
    assert [(a.type, a.context["event_id"]) for a in b.alerts] == [(EventType.SOS, 1), (EventType.FALL, 2)]
    assert b.alerts[1].priority == 0 and "has fallen" in str(b.alerts[1].context["text"])


def test_exit_then_back_inside() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, LOUNGE)
    b.run(10, HALL)
    assert b.e.zone_of("WB-1") == "hall" and not b.alerts
    start = b.t
    b.run(20, DOOR)
    assert b.types() == [EventType.EXIT]
    ex = b.alerts[0]
    assert ex.zone == "Front door" and ex.context["from_zone"] == "Hall" and ex.context["reason"] == "exit zone"
    assert ex.t_ms // 1000 - start <= 8  # window, the next advert, N = 3 observations
    b.run(5, {})  # out of range: EXIT is open, no MISSING
    b.silent(600)
    b.run(20, HALL)
    assert b.types() == [EventType.EXIT, EventType.BACK_INSIDE]
    back = b.alerts[1]
    assert back.priority == 1 and back.context["resolves"] == "EXIT" and back.zone == "Hall"


def _restarted(before: AlertEngine, b: Band, alerts: list[Alert]) -> Band:
    """The agent restarts: a new engine, given back what the buffer keeps of these alerts
    (agent/shared/frames.py band_open_changes, as the commit round stores them)."""
    rows: dict[tuple[str, int], tuple[int, str | None] | None] = {}
    for a in alerts:
        data: dict[int, Any] = {1: a.resident, 3: dict(a.context), **({2: a.zone} if a.zone else {})}
        ev = Event(a.band, 1, 1, int(a.type), 0, a.t_ms, data, b"")
        rows.update(band_open_changes(ev))
    engine = AlertEngine(before.venue)
    engine.reopen([(band, t, *v) for (band, t), v in rows.items() if v is not None])
    after = Band(engine, b.band, b.t + 5)  # the restart took five seconds
    after.flags = b.flags
    return after


def test_an_exit_survives_a_restart_and_back_inside_still_closes_it() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    b.run(20, DOOR)
    assert b.types() == [EventType.EXIT]
    exit_at = b.alerts[0].t_ms
    r = _restarted(b.e, b, b.alerts)
    assert r.e.zone_of("WB-1") == "door"
    r.run(60, DOOR)  # still standing in the exit zone after the restart: no second EXIT
    r.run(5, {})
    r.silent(300)  # out of range: still no MISSING, the excursion is open
    assert r.types() == []
    r.run(20, HALL)
    assert r.types() == [EventType.BACK_INSIDE]
    back = r.alerts[0]
    assert back.context["resolves"] == "EXIT" and back.context["away_s"] == (back.t_ms - exit_at) // 1000
    # closed: a second restart has nothing open, and the next excursion is its own EXIT
    r2 = _restarted(r.e, r, b.alerts + r.alerts)
    r2.run(10, HALL)
    r2.run(20, DOOR)
    assert r2.types() == [EventType.EXIT]


def test_without_the_stored_state_a_restart_raises_the_exit_again() -> None:
    # what band_open prevents: an engine that starts from nothing sees the band in the exit
    # zone and tells the family a second time
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    b.run(20, DOOR)
    fresh = Band(AlertEngine(venue()), "WB-1", b.t + 5)
    fresh.run(30, DOOR)
    assert fresh.types() == [EventType.EXIT]


def test_a_missing_survives_a_restart() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, LOUNGE)
    b.silent(120)
    assert b.types() == [EventType.MISSING]
    r = _restarted(b.e, b, b.alerts)
    r.silent(600)  # no second MISSING: the band was never heard since the restart
    assert r.types() == []
    r.run(3, LOUNGE)
    assert r.types() == [EventType.BACK_INSIDE] and r.alerts[0].context["resolves"] == "MISSING"
    assert r.alerts[0].context["away_s"] >= 120


def test_a_missing_band_seen_outside_is_an_exit_and_no_longer_missing() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    b.silent(120)
    b.run(20, {"X1": -60})  # found by the exit scanner only: EXIT, and MISSING is over without BACK_INSIDE
    assert b.types() == [EventType.MISSING, EventType.EXIT]
    r = _restarted(b.e, b, b.alerts)
    r.run(20, HALL)
    assert r.types() == [EventType.BACK_INSIDE] and r.alerts[0].context["resolves"] == "EXIT"


def test_zone_not_allowed_is_an_exit() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    b.run(20, {"H1": -85, "O1": -60})
    assert b.types() == [EventType.EXIT]
    assert b.alerts[0].context["reason"] == "zone not allowed" and b.alerts[0].zone == "Staff office"


def test_zone_flapping_at_the_door_is_suppressed() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    for k in range(300):  # the door scanner wins every other advert, and by a little
        b.second({"H1": -75, "X1": -70} if k % 2 else {"H1": -70, "X1": -80})
    for _ in range(30):  # rare lucky samples from the door while the hall hears every advert
        b.second({"H1": -72, "X1": -60})
        b.run(4, {"H1": -72})
    assert b.alerts == []
    assert b.e.zone_of("WB-1") == "hall"


# next to the exit: the exit scanner as strong as the hall's, or a little stronger
LEVEL = {"H1": -72, "X1": -72}
NEAR_DOOR = {"H1": -76, "X1": -68}


def _sit_down_near_the_door(b: Band) -> None:
    """From the hall to a seat where the two scanners are level; seated for 20 s."""
    b.run(10, HALL)
    b.run(20, LEVEL)


def test_exit_needs_more_than_a_room_margin() -> None:
    """8 dB over the hall's scanner moves a band between rooms, but is no evidence of an exit for
    a resident sitting there (one seen leaving the hall's scanner is another matter, below)."""
    b = Band(AlertEngine(venue()))
    _sit_down_near_the_door(b)
    b.run(600, NEAR_DOOR)
    assert b.alerts == [] and b.e.zone_of("WB-1") == "hall"
    # the other resident may be anywhere inside: the same readings between two inside zones move it
    e = AlertEngine(venue())
    b2 = Band(e, "WB-2")
    b2.run(10, HALL)
    b2.run(20, {"H1": -76, "L1": -68})
    assert b2.alerts == [] and e.zone_of("WB-2") == "lounge"


def test_exit_with_the_hall_scanners_lost() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    start = b.t
    b.run(20, {"H1": -89, "X1": -66})  # through the door: the hall barely hears the band
    assert b.types() == [EventType.EXIT]
    assert b.alerts[0].t_ms // 1000 - start <= 8
    assert b.alerts[0].context["reason"] == "exit zone"


def test_exit_evidence_while_the_hall_misses_adverts() -> None:
    """The inside scanner missing most adverts is the evidence: its misses count at the floor."""
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    for k in range(30):
        b.second({"H1": -80, "X1": -68} if k % 4 == 0 else {"X1": -68})
    assert b.types() == [EventType.EXIT]


# a band walking from under the hall's scanner into the exit zone while shadowing lowers the
# exit scanner and lifts the hall's: the exit scanner only 8 dB over the hall's, under the exit
# margin (12), for the whole crossing
WALK_OUT = [{"H1": -66, "X1": -95}, {"H1": -71, "X1": -90}, {"H1": -76, "X1": -86}, {"H1": -81, "X1": -82}]
SHADOWED_DOOR = {"H1": -86, "X1": -78}


def test_exit_through_a_shadowed_lobby_is_seen_leaving() -> None:
    """The inside scanner losing the band as the exit scanner gains it is the evidence."""
    b = Band(AlertEngine(venue()))
    b.run(20, {"H1": -62, "L1": -80})
    for heard in WALK_OUT:
        b.second(heard)
    start = b.t
    b.run(30, SHADOWED_DOOR)
    assert b.types() == [EventType.EXIT]
    assert b.alerts[0].t_ms // 1000 - start <= 8


def test_sitting_where_the_exit_scanner_is_as_strong_is_no_exit() -> None:
    """Half an hour where the exit scanner averages the room's, shadowing swinging the two apart
    by up to 10 dB either way over tens of seconds: the band stays in the hall."""
    b = Band(AlertEngine(venue()))
    _sit_down_near_the_door(b)
    for k in range(1800):
        swing = 5 * math.sin(k / 10)
        b.second({"H1": round(-72 - swing), "X1": round(-72 + swing)})
    assert b.alerts == [] and b.e.zone_of("WB-1") == "hall"


def test_lost_adverts_alone_do_not_make_an_exit(seed: int) -> None:
    """Next to the exit (the exit scanner 18 dB under the hall's): a quarter of the adverts lost
    by each scanner at random for ten minutes, then silences of 5-20 s (the band unheard by
    every scanner): no scanner gains or loses the band, so it stays in the hall."""
    b = Band(AlertEngine(venue()))
    b.run(20, {"H1": -62, "L1": -80})
    rnd = random.Random(seed)
    near = {"H1": -66, "X1": -84}
    for _ in range(600):
        b.second({sc: v for sc, v in near.items() if rnd.random() >= 0.25})
    for _ in range(10):
        b.silent(rnd.randint(5, 20))
        b.run(60, near)
    assert b.alerts == [] and b.e.zone_of("WB-1") == "hall"


def test_random_loss_of_a_near_scanner_does_not_move_a_band(seed: int) -> None:
    """A near scanner losing a third of the adverts at random still holds its zone."""
    b = Band(AlertEngine(venue()))
    b.run(10, HALL)
    rnd = random.Random(seed)
    for _ in range(600):
        heard = {k: v for k, v in {"H1": -62, "L1": -74}.items() if rnd.random() > 0.33}
        b.second(heard)
    assert b.alerts == [] and b.e.zone_of("WB-1") == "hall"


def _glimpse(b: Band) -> None:
    """Two seconds where only the exit scanner hears the band: evidence for two observations."""
    b.run(2, {"X1": -60})
    b.run(8, {"H1": -72, "X1": -80})


def test_door_contact_confirms_exit_evidence_at_once() -> None:
    for door in (False, True):
        e = AlertEngine(door_venue(rssi_window_s=0.5, exit_confirm=3))  # a 3-advert window
        b = Band(e)
        b.run(10, HALL)
        b.run(20, {"H1": -72, "X1": -80})
        if door:
            assert e.on_door("front", True, b.t * 1000) == []
        _glimpse(b)
        if not door:  # exit evidence twice in a row: exit_confirm (3) is not reached
            assert b.alerts == []
            continue
        assert b.types() == [EventType.EXIT, EventType.BACK_INSIDE]
        assert b.alerts[0].context["reason"] == "exit zone, door opened"
    assert e.door_for("VS-1", "front-door") == "front" and e.door_for("VS-1", "other") is None
    e.on_door("back", True, b.t * 1000)
    assert e.counts["unknown_door"] == 1 and e.counts["door_opened"] == 1


def test_door_contact_does_not_lower_the_exit_margin() -> None:
    e = AlertEngine(door_venue())
    b = Band(e)
    _sit_down_near_the_door(b)
    for _ in range(20):  # the door opens every 30 s while the resident sits next to it
        e.on_door("front", True, b.t * 1000)
        b.run(30, NEAR_DOOR)
    assert b.alerts == []


def test_door_opening_long_ago_confirms_nothing() -> None:
    e = AlertEngine(door_venue(door_window_s=30, rssi_window_s=0.5, exit_confirm=3))
    b = Band(e)
    b.run(10, HALL)
    e.on_door("front", True, b.t * 1000)
    e.on_door("front", False, b.t * 1000 + 4000)
    b.run(40, {"H1": -72, "X1": -80})
    _glimpse(b)
    assert b.alerts == []


def test_door_then_unheard_is_an_exit_while_the_exit_scanner_is_down() -> None:
    e = AlertEngine(door_venue(door_lost_s=15))
    b, other = Band(e), Band(e, "WB-2")

    def both(heard: dict[str, int] | None, seconds: int) -> None:
        for _ in range(seconds):  # the other band is heard in the lounge all along
            s = Sighting("WB-2", b.t, adv.Status(WORN, 80, 0, 0), True, False, 0.0)
            other.alerts += e.on_sighting("L1", -60, b.t * 1000 + 50, s)
            b.second(heard) if heard is not None else b.silent(1)

    both(HALL, 10)
    e.scanner_down("X1", b.t * 1000)
    both({"H1": -80}, 5)
    last = b.t - 1
    e.on_door("front", True, b.t * 1000 + 500)
    both(None, 14)  # out of the door, out of range
    assert b.alerts == []
    both(None, 3)
    assert b.types() == [EventType.EXIT] and other.alerts == []
    ex = b.alerts[0]
    assert ex.band == "WB-1" and ex.zone == "Front door" and ex.context["from_zone"] == "Hall"
    assert "door front opened" in str(ex.context["reason"]) and 15 <= ex.t_ms // 1000 - last <= 17
    b.silent(600)  # EXIT is open: no MISSING (the other band, unheard now, gets its MISSING)
    b.run(20, HALL)
    assert [a.type for a in b.alerts if a.band == "WB-1"] == [EventType.EXIT, EventType.BACK_INSIDE]
    assert [a.type for a in b.alerts if a.band == "WB-2"] == [EventType.MISSING]


def test_door_then_unheard_only_near_the_door_with_approach_scanners() -> None:
    d = doc()
    d["doors"] = [{"id": "front", "zone": "door", "approach": ["H1", "X1"]}]
    e = AlertEngine(parse(d, Path("venue.toml")))
    near, far = Band(e, "WB-1"), Band(e, "WB-2")
    for _ in range(10):
        near.second({"H1": -84})
        far.second({"L1": -84})  # fading out at the lounge's far side
    e.on_door("front", True, near.t * 1000)
    near.silent(16)
    assert [(a.band, a.type) for a in near.alerts] == [("WB-1", EventType.EXIT)]


def test_a_flapping_door_contact_is_bounded() -> None:
    e = AlertEngine(door_venue())
    b = Band(e)
    b.run(10, HALL)
    for k in range(10_000):  # a contact bouncing ten times a second for a quarter of an hour
        e.on_door("front", k % 2 == 0, b.t * 1000 + k * 100)
    assert len(e._openings) <= 32 and e.counts["door_opened"] == 5000
    b.run(60, HALL)
    assert b.alerts == []


def test_door_then_unheard_needs_the_bands_own_scanners_up() -> None:
    e = AlertEngine(door_venue())
    b = Band(e)
    b.run(10, LOUNGE)
    e.scanner_down("L1", b.t * 1000)
    e.scanner_down("L2", b.t * 1000)
    e.on_door("front", True, b.t * 1000)
    b.silent(100)  # unheard because its zone's scanners are down: no EXIT
    assert b.types() == [EventType.SCANNER_BLIND]


def test_exit_zone_without_a_scanner_is_a_venue_alert() -> None:
    e = AlertEngine(venue(exit_blind_after_s=60))
    b = Band(e)
    b.run(10, HALL)
    e.scanner_down("X1", b.t * 1000)
    b.run(30, HALL)
    e.scanner_up("X1", b.t * 1000)  # a reboot shorter than exit_blind_after_s: no notice
    b.run(5, HALL)
    assert e.venue_alerts() == []
    down = b.t
    e.scanner_down("X1", down * 1000)
    b.run(59, HALL)
    assert e.venue_alerts() == []
    b.run(2, HALL)
    (va,) = e.venue_alerts()
    assert isinstance(va, VenueAlert) and va.type is EventType.SCANNER_BLIND and va.priority == 1
    assert va.zone == "Front door" and va.context["scanners_down"] == "X1" and va.context["watched"] == 0
    assert "Exit Front door is not watched" in str(va.context["text"])
    b.run(120, HALL)
    assert e.venue_alerts() == [] and b.alerts == []  # once per outage; the bands raise nothing
    e.scanner_up("X1", b.t * 1000)
    (back,) = e.venue_alerts()
    assert back.context["watched"] == 1 and back.context["blind_s"] == b.t - down
    assert e.venue_alerts() == []


def test_one_of_two_exit_scanners_down_is_still_watched() -> None:
    d = doc(exit_blind_after_s=10)
    d["scanners"].append({"id": "X2", "zone": "door"})
    e = AlertEngine(parse(d, Path("venue.toml")))
    e.scanner_down("X1", NOON * 1000)
    e.tick(NOON * 1000 + 60_000)
    assert e.venue_alerts() == []
    e.scanner_down("X2", NOON * 1000 + 60_000)
    e.tick(NOON * 1000 + 71_000)
    assert [a.context["scanners_down"] for a in e.venue_alerts()] == ["X1, X2"]


def test_real_adverts_through_the_resolver_one_sos() -> None:
    """Encrypted adverts (the vectors' construction) -> BandResolver -> engine, as the source does."""
    e = AlertEngine(venue())
    r = BandResolver([BandKey("WB-1", ref.ROOT)])
    out: list[Alert] = []
    for sec in range(40):
        counter = NOON + sec
        flags, eid, age = (WORN | adv.SOS, 1, max(0, sec - 5)) if sec >= 5 else (WORN, 0, 0)
        data = ref.advert(ref.ROOT, 0, 10, counter, struct.pack(">BBHH", flags, 80, eid, age))
        for c in range(10 if 5 <= sec < 35 else 1):  # the burst repeats the same bytes
            for scanner, rssi in LOUNGE.items():
                t_ms = counter * 1000 + 100 * c + 7
                out += e.on_sighting(scanner, rssi, t_ms, r.resolve(data, t_ms))
        out += e.tick((counter + 1) * 1000)
    assert [(a.type, a.context["event_id"], a.t_ms) for a in out] == [(EventType.SOS, 1, (NOON + 5) * 1000 + 7)]
    assert r.counts["repeat"] > 0 and not r.rejected


def test_other_band_same_event_id_is_its_own_alert() -> None:
    e = AlertEngine(venue())
    b1, b2 = Band(e, "WB-1"), Band(e, "WB-2")
    b1.event(adv.SOS)
    b2.event(adv.SOS)
    b1.second(LOUNGE)
    b2.second(LOUNGE)
    assert [a.band for a in b1.alerts + b2.alerts] == ["WB-1", "WB-2"]


def test_missing_then_back_inside() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, LOUNGE)
    last = b.t
    b.silent(120)
    assert b.types() == [EventType.MISSING]
    m = b.alerts[0]
    assert m.priority == 0 and m.zone == "Lounge" and m.context["scanner"] == "L1"
    assert 60 <= m.t_ms // 1000 - last <= 61
    b.run(3, LOUNGE)
    assert b.types() == [EventType.MISSING, EventType.BACK_INSIDE]
    assert b.alerts[1].context["resolves"] == "MISSING"
    b.silent(30)
    assert len(b.alerts) == 2


def test_scanner_outage_gives_blind_not_missing() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, LOUNGE)
    b.e.scanner_down("L1", b.t * 1000)
    b.e.scanner_down("L2", b.t * 1000)
    b.silent(300)  # the hall scanner is up but cannot hear the lounge
    assert b.types() == [EventType.SCANNER_BLIND]
    bl = b.alerts[0]
    assert bl.priority == 1 and int(bl.type) == 69 and bl.context["scanners_down"] == "L1, L2"
    b.e.scanner_up("L1", b.t * 1000)
    b.run(3, {"L1": -60})  # heard again: nothing to tell
    assert b.types() == [EventType.SCANNER_BLIND]
    b.e.scanner_down("L1", b.t * 1000)
    b.silent(300)  # a second outage: one notice per outage, however long
    assert b.types() == [EventType.SCANNER_BLIND] * 2
    b.e.scanner_up("L1", b.t * 1000)
    b.e.scanner_up("L2", b.t * 1000)
    b.silent(19)  # the grace after the scanners are back
    assert EventType.MISSING not in b.types()
    b.silent(2)
    assert b.types() == [EventType.SCANNER_BLIND] * 2 + [EventType.MISSING]


def test_one_scanner_of_two_down_is_still_missing() -> None:
    b = Band(AlertEngine(venue()))
    b.run(10, LOUNGE)
    b.e.scanner_down("L1", b.t * 1000)
    b.silent(70)
    assert b.types() == [EventType.MISSING]


def test_strap_debounce_charging_and_rearm() -> None:
    b = Band(AlertEngine(venue()))
    b.run(5, LOUNGE)
    b.flags = adv.STRAP_OPEN
    b.run(10, LOUNGE)  # shorter than strap_after_s
    b.flags = WORN
    b.run(5, LOUNGE)
    assert b.alerts == []
    b.flags = adv.STRAP_OPEN | adv.CHARGING
    b.run(60, LOUNGE)  # on the charger: expected
    assert b.alerts == []
    b.flags = adv.STRAP_OPEN
    start = b.t
    b.run(60, LOUNGE)
    assert b.types() == [EventType.STRAP_REMOVED]
    assert b.alerts[0].priority == 1 and 15 <= b.alerts[0].t_ms // 1000 - start <= 16
    b.flags = 0  # strap closed but not worn: still off
    b.run(30, LOUNGE)
    b.flags = WORN
    b.run(5, LOUNGE)
    b.flags = adv.STRAP_OPEN
    b.run(20, LOUNGE)
    assert b.types() == [EventType.STRAP_REMOVED, EventType.STRAP_REMOVED]


def test_battery_low_hysteresis() -> None:
    b = Band(AlertEngine(venue()))
    for pct in (40, 20, 16, 15, 14, 16, 15, 20, 29, 15, 12):
        b.battery = pct
        b.run(3, LOUNGE)
    assert b.types() == [EventType.BATTERY_LOW]
    assert b.alerts[0].context["battery_pct"] == 15
    for pct in (30, 50, 16, 15):
        b.battery = pct
        b.run(3, LOUNGE)
    assert b.types() == [EventType.BATTERY_LOW, EventType.BATTERY_LOW]
    b.battery = 255  # unknown level, but the band's own flag says low: already alerted
    b.flags |= adv.LOW_BATTERY
    b.run(3, LOUNGE)
    assert len(b.alerts) == 2


def test_quiet_hours_hold_p1_but_never_p0() -> None:
    b = Band(AlertEngine(venue()), t=T0 + 23 * 3600)  # 23:00, quiet for WB-1
    b.run(5, LOUNGE)
    b.flags = adv.STRAP_OPEN
    b.battery = 10
    b.run(60, LOUNGE)
    assert b.alerts == []
    b.event(adv.SOS)
    b.run(2, LOUNGE)
    assert b.types() == [EventType.SOS]
    b.t = T0 + 24 * 3600 + 7 * 3600 - 5  # just before 07:00 the next day
    b.run(80, LOUNGE)
    assert sorted(a.type.name for a in b.alerts) == ["BATTERY_LOW", "SOS", "STRAP_REMOVED"]
    held = next(a for a in b.alerts if a.type is EventType.STRAP_REMOVED)
    assert held.context["since"] == "2023-11-15T23:00:05+00:00"
    # the other resident has no quiet hours
    e = AlertEngine(venue())
    b2 = Band(e, "WB-2", t=T0 + 23 * 3600)
    b2.flags = adv.STRAP_OPEN
    b2.run(20, LOUNGE)
    assert b2.types() == [EventType.STRAP_REMOVED]


def test_unknown_band_and_scanner_are_counted() -> None:
    e = AlertEngine(venue())
    s = Sighting("WB-9", NOON, adv.Status(WORN, 80, 0, 0), True, False, 0.0)
    assert e.on_sighting("L1", -60, NOON * 1000, s) == []
    s = Sighting("WB-1", NOON, adv.Status(WORN, 80, 0, 0), True, False, 0.0)
    assert e.on_sighting("Z9", -60, NOON * 1000, s) == []
    assert e.counts["unknown_band"] == 1 and e.counts["unknown_scanner"] == 1


def test_learned_interval() -> None:
    b = Band(AlertEngine(venue()))
    for _ in range(200):
        b.second(LOUNGE)
        b.t += 4  # a band advertising every 5 s
    assert 4.0 < b.e.interval_s("WB-1") < 5.5
    b.silent(70)  # 20 intervals of 5 s exceed missing_after_s: not missing yet
    assert b.alerts == []
    b.silent(40)
    assert b.types() == [EventType.MISSING]


# --- the venue file -----------------------------------------------------------------------


def test_load_example_file(tmp_path: Path) -> None:
    f = tmp_path / "venue.toml"
    f.write_text(
        """
venue = "rosewood"
timezone = "Europe/London"
[settings]
zone_confirm = 4
[[zones]]
id = "lounge"
name = "Lounge"
[[zones]]
id = "door"
kind = "exit"
min_rssi = -80
area = [0, 0, 2, 3]
[[scanners]]
id = "S1"
zone = "lounge"
position = [1.5, 2]
[[residents]]
band = "WB-0001"
reference = "Resident 4 (room 4)"
missing_after_s = 300
""",
        encoding="utf-8",
    )
    v = load(f)
    assert v.settings.zone_confirm == 4 and v.zones["door"].area == (0.0, 0.0, 2.0, 3.0)
    r = v.residents["WB-0001"]
    assert r.allowed_zones == frozenset({"lounge"}) and r.missing_after_s == 300 and r.quiet_hours is None


def test_exit_zone_with_one_scanner_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    v = venue()
    assert len(v.warnings) == 1
    assert v.warnings[0].startswith("venue.toml: zones[2] (door): exit zone with one scanner")
    assert "door contact" in v.warnings[0]
    d = doc()
    d["scanners"] = [sc for sc in d["scanners"] if sc["id"] != "X1"]
    (w,) = parse(d, Path("venue.toml")).warnings
    assert "exit zone with no scanner: EXIT is never raised for it" in w
    d["scanners"] += [{"id": "X1", "zone": "door"}, {"id": "X2", "zone": "door"}]
    assert parse(d, Path("venue.toml")).warnings == ()
    f = tmp_path / "venue.toml"
    f.write_text(
        'venue = "v"\n[[zones]]\nid = "hall"\n[[zones]]\nid = "out"\nkind = "exit"\n'
        '[[scanners]]\nid = "S1"\nzone = "out"\n',
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="agent.ble.venue"):
        assert load(f).warnings
    assert "exit zone with one scanner" in caplog.text


@pytest.mark.parametrize(
    ("door", "where", "what"),
    [
        ({"id": "front", "zone": "hall"}, "doors[0].zone", "not an exit zone"),
        ({"id": "front", "zone": "attic"}, "doors[0].zone", "no zone 'attic'"),
        ({"id": "front", "zone": "door", "sensor": "VS-1"}, "doors[0].channel", "go together"),
        ({"id": "front", "zone": "door", "channel": "c"}, "doors[0].sensor", "go together"),
        ({"id": "front", "zone": "door", "colour": "red"}, "doors[0].colour", "unknown key"),
        ({"zone": "door"}, "doors[0].id", "missing"),
        ({"id": "front", "zone": "door", "approach": ["Z9"]}, "doors[0].approach", "no scanner 'Z9'"),
        ({"id": "front", "zone": "door", "approach": []}, "doors[0].approach", "non-empty array"),
    ],
)
def test_door_errors_name_file_and_key(door: dict[str, Any], where: str, what: str) -> None:
    d = doc()
    d["doors"] = [door]
    with pytest.raises(ConfigError) as info:
        parse(d, Path("venue.toml"))
    msg = str(info.value)
    assert msg.startswith(f"venue.toml: {where}:") and what in msg, msg


def test_one_contact_cannot_be_two_doors() -> None:
    d = doc()
    d["doors"] = [
        {"id": "a", "zone": "door", "sensor": "VS-1", "channel": "c"},
        {"id": "b", "zone": "door", "sensor": "VS-1", "channel": "c"},
    ]
    with pytest.raises(ConfigError, match=r"doors\[1\]\.channel: VS-1 'c' is already door 'a'"):
        parse(d, Path("venue.toml"))


def _bad(path: str, value: Any) -> dict[str, Any]:
    d = doc()
    keys = path.split(".")
    node: Any = d
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    node[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "where", "what"),
    [
        ("residents.0.quiet_hours", "22:00-7:00", "residents[0].quiet_hours", "HH:MM-HH:MM"),
        ("residents.0.quiet_hours", "07:00-07:00", "residents[0].quiet_hours", "empty"),
        ("residents.0.allowed_zones", ["lounge", "garden"], "residents[0].allowed_zones", "no zone 'garden'"),
        ("residents.1.missing_after_s", 5, "residents[1].missing_after_s", "10..86400"),
        ("residents.1.band", "WB-1", "residents[1].band", "two residents"),
        ("residents.1.colour", "red", "residents[1].colour", "unknown key"),
        ("scanners.2.zone", "attic", "scanners[2].zone", "no zone 'attic'"),
        ("zones.2.kind", "outside", "zones[2].kind", "inside, exit"),
        ("zones.2.area", [1, 2, 0, 3], "zones[2].area", "x0 < x1"),
        ("settings.battery_ok_pct", 10, "settings.battery_ok_pct", "above battery_low_pct"),
        ("settings.zone_confirm", 0, "settings.zone_confirm", "1..20"),
        ("timezone", "Mars/Olympus", "timezone", "unknown IANA"),
    ],
)
def test_venue_errors_name_file_and_key(path: str, value: Any, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(_bad(path, value), Path("/etc/guardian/venue.toml"))
    msg = str(info.value)
    assert msg.startswith(f"/etc/guardian/venue.toml: {where}:"), msg
    assert what in msg, msg


def test_venue_file_syntax_error_names_file(tmp_path: Path) -> None:
    f = tmp_path / "venue.toml"
    f.write_text('venue = "x"\n[[zones]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"venue\.toml: not valid TOML: .*line 2"):
        load(f)


# --- property: random streams ---------------------------------------------------------------

_SCANNERS = ["L1", "L2", "H1", "X1", "O1", "??"]
_step = st.one_of(
    st.tuples(
        st.just("sight"),
        st.sampled_from(["WB-1", "WB-2", "WB-3"]),
        st.sampled_from(_SCANNERS),
        st.integers(-127, 20),
        st.integers(-3, 400),  # time step (ms x 100), backwards too
        st.integers(0, 3),  # counter step
        st.integers(0, 0x7F),
        st.sampled_from([0, 10, 15, 30, 100, 255]),
        st.integers(0, 4),  # event id
        st.booleans(),
    ),
    st.tuples(st.just("down"), st.sampled_from(_SCANNERS), st.integers(0, 100)),
    st.tuples(st.just("up"), st.sampled_from(_SCANNERS), st.integers(0, 100)),
    st.tuples(st.just("tick"), st.integers(0, 100_000)),
    st.tuples(st.just("door"), st.sampled_from(["front", "back"]), st.booleans(), st.integers(-5000, 100)),
)


@seeded
@settings(max_examples=150, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, max_size=120))
def test_random_streams_never_raise_nor_repeat_an_event(steps: list[tuple[Any, ...]]) -> None:
    e = AlertEngine(door_venue())
    t = NOON * 1000
    counters: dict[str, int] = {}
    out: list[Alert] = []
    for step in steps:
        if step[0] == "sight":
            _, band, scanner, rssi, dt, dc, flags, battery, eid, new = step
            t += dt * 100
            counters[band] = counters.get(band, NOON) + dc
            s = Sighting(band, counters[band], adv.Status(flags, battery, eid, 0), new, False, 0.0)
            out += e.on_sighting(scanner, rssi, t, s)
        elif step[0] in ("down", "up"):
            fn = e.scanner_down if step[0] == "down" else e.scanner_up
            out += fn(step[1], t + step[2])
        elif step[0] == "door":
            out += e.on_door(step[1], step[2], t + step[3])
        else:
            t += step[1]
            out += e.tick(t)
    keys = [(a.band, a.type, a.context["event_id"]) for a in out if a.type in (EventType.SOS, EventType.FALL)]
    assert len(keys) == len(set(keys)), keys
    for a in out:
        assert a.priority == (0 if int(a.type) < 64 else 1)
        assert isinstance(a.context["text"], str) and a.resident
    exits = [a.band for a in out if a.type is EventType.EXIT]
    backs = [a.band for a in out if a.type is EventType.BACK_INSIDE and a.context["resolves"] == "EXIT"]
    for band in set(exits):  # EXIT and its BACK_INSIDE alternate: never two EXITs for one excursion
        assert exits.count(band) - backs.count(band) in (0, 1), (band, out)
    for va in e.venue_alerts():
        assert va.type is EventType.SCANNER_BLIND and isinstance(va.context["text"], str)
