"""Seeded wristband traces with ground truth: residents of a care home over simulated days.

Independent of the agent except for the venue format it builds (agent/gateway/wristbands/venue.py). A venue
of bedrooms, a corridor, lounge, dining room, an enclosed garden and a front-exit lobby with
nine scanners; each resident lives a day (sleep, meals, lounge, garden, walks) with rare
events drawn at seeded random times:

- SOS: the band starts an event (new event id), bursts the same advert every 100 ms for
  30 s, keeps the SOS flag for 900 s (firmware/lib/sos.py); truth time = the event start;
- FALL: an impact, then the resident lies still; the band raises the FALL flag with a new
  event id 41.5 s later (settle 1.5 s + stillness 10 s + cancel window 30 s,
  firmware/lib/fall.py defaults); truth time = the impact;
- EXIT: a walk into the exit lobby, out of the front door and down the street, back after a
  while; truth time = entering the exit zone's area;
- MISSING: a walk out through the garden's far gate beyond every scanner's range; truth
  time = leaving the garden (the alert comes `missing_after_s` later by design);
- STRAP_REMOVED: the band taken off (strap open, not charging) for 5-60 min by day;
- BATTERY_LOW: the battery drains ~0.9 %/h; staff charge bands at night (strap open and
  CHARGING at once, no alert expected) when low-ish, and on a BATTERY_LOW alert by day;
  truth time = the battery reaching battery_low_pct;
- scanner outages: single scanners (1-60 min) and whole-gateway outages (all scanners,
  2-8 min, e.g. BlueZ restarting); the source's watchdog reports one 20 s after it went quiet.
- near-exit dwelling: residents sitting at the dining room's far end, next to the lobby
  (where a naive nearest-scanner rule raises false EXITs);
- the front door's contact (a venue sensor's door channel at the lobby's outer edge): opened
  by residents walking out and back in, and by staff and visitors by day.

What the day is like is a `Conditions` (residents, days, advert loss, how often residents sit
next to the exit, exit scanner reboots and outages, door traffic); `Conditions()` is the
ordinary venue, `HARSH` a harsher but ordinary one (an exit scanner rebooting hourly and
failing for longer now and then, 25 % advert loss, 30 residents, three times the sitting next
to the exit).

Radio: one advert per second per band (10/s during an SOS burst), received per scanner with
RSSI = -59 dBm - 10 n log10(d) (n = 3, a body-worn band indoors) - 6 dB when band and scanner
are in different zones, + shadowing (AR(1) per band and scanner, sigma 4 dB, ~20 s correlation)
+ fast fading (sigma 3 dB), dropped below -95 dBm sensitivity and with random loss
(`Conditions.loss`, 4 % by default). The radio is computed with numpy per resident, an hour at
a time (the residents' lives stay plain Python): the generator costs about a tenth of the alert
engine it feeds.

A `Sink` receives what the gateway would: one call per advert copy with the scanners that
heard it, scanner up/down notices, door contact changes, and a tick per simulated second.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.gateway.wristbands.venue import Venue, parse

T0 = 1_700_006_400  # 2023-11-15 00:00 UTC: simulated day 0 starts at midnight
DAY = 86_400
SOS_F, FALL_F, STRAP_OPEN, WORN, LOW_BATTERY, CHARGING = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
EVENT_AGE_OUT_S = 900
FALL_CONFIRM_S = 41.5
LOW_PCT, OK_PCT = 15, 30
MISSING_AFTER_S = 180
WATCHDOG_S = 20

RSSI_1M = -59.0
PATH_N = 3.0
WALL_DB = 6.0
SENSITIVITY = -95.0
LOSS = 0.04
SHADOW_SIGMA, SHADOW_RHO = 4.0, 0.95
FADING_SIGMA = 3.0
WALK_MPS = 0.8
DOOR = "front"  # the front door's contact, at the lobby's outer edge (y = 18)
_DOOR_Y = 18.0
EXIT_SCANNERS = ("X1",)
WATCHED_S = 15  # an EXIT counts as watched when an exit scanner was up this long from its start


@dataclass(frozen=True, slots=True)
class Conditions:
    """What the simulated venue days are like (the defaults: the ordinary venue)."""

    residents: int = 10
    days: int = 10
    loss: float = 0.04  # random advert loss per scanner
    bench_per_day: float = 1.0  # sittings next to the lobby per resident-day (awake hours)
    bench_s: tuple[int, int] = (600, 2700)  # how long one lasts
    exit_reboot_every_s: int = 0  # the exit scanner reboots this often (0: never)
    exit_reboot_s: tuple[int, int] = (30, 90)  # silent for this long each time
    exit_outages_per_day: float = 0.0  # longer exit scanner failures (10-60 min), besides the random ones
    door_openings_per_day: float = 40.0  # the front door opened by staff and visitors (07:00-21:00)


HARSH = Conditions(
    residents=30,
    days=1,
    loss=0.25,
    bench_per_day=3.0,
    bench_s=(900, 3600),
    exit_reboot_every_s=3600,
    exit_outages_per_day=0.5,
)

# (id, name, kind, area x0 y0 x1 y1, min_rssi or None)
ZONES: list[tuple[str, str, str, tuple[float, float, float, float], float | None]] = [
    ("rooms_n", "North bedrooms", "inside", (0, 12, 40, 18), None),
    ("rooms_s", "South bedrooms", "inside", (0, 2, 40, 8), None),
    ("corridor", "Corridor", "inside", (0, 8, 40, 12), None),
    ("lounge", "Lounge", "inside", (40, 2, 55, 18), None),
    ("dining", "Dining room", "inside", (-15, 2, 0, 12), None),
    ("garden", "Garden", "inside", (40, 18, 55, 30), None),
    ("exit", "Front door lobby", "exit", (-15, 12, -5, 18), -82.0),
]
SCANNERS: list[tuple[str, str, tuple[float, float]]] = [
    ("RN1", "rooms_n", (12, 15)),
    ("RN2", "rooms_n", (28, 15)),
    ("RS1", "rooms_s", (12, 5)),
    ("RS2", "rooms_s", (28, 5)),
    ("C1", "corridor", (10, 10)),
    ("C2", "corridor", (30, 10)),
    ("L1", "lounge", (47, 10)),
    ("D1", "dining", (-7, 7)),
    ("G1", "garden", (47, 24)),
    ("X1", "exit", (-10, 18)),  # above the front door
]

# events per resident-day
RATES = {"SOS": 0.6, "FALL": 0.3, "EXIT": 0.4, "WANDER": 0.15, "REMOVE": 0.5, "BENCH": 1.0}

Point = tuple[float, float]


def venue_doc(residents: int, door: bool = False) -> dict[str, Any]:
    """The simulated venue as the TOML document agent/gateway/wristbands/venue.py reads (door: its contact mapped)."""
    zones = []
    for zid, name, kind, area, min_rssi in ZONES:
        z: dict[str, Any] = {"id": zid, "name": name, "kind": kind, "area": list(area)}
        if min_rssi is not None:
            z["min_rssi"] = min_rssi
        zones.append(z)
    doc: dict[str, Any] = {
        "venue": "sim-care-home",
        "timezone": "UTC",
        "settings": {"missing_after_s": MISSING_AFTER_S, "battery_low_pct": LOW_PCT, "battery_ok_pct": OK_PCT},
        "zones": zones,
        "scanners": [{"id": s, "zone": z, "position": list(p)} for s, z, p in SCANNERS],
        "residents": [
            {"band": band_id(i), "reference": f"Resident {i + 1} (room {i + 1})", "quiet_hours": "22:00-07:00"}
            for i in range(residents)
        ],
    }
    if door:
        doc["doors"] = [
            {
                "id": DOOR,
                "zone": "exit",
                "sensor": "VS-0001",
                "channel": "front-door",
                "approach": ["X1", "D1", "C1"],  # the lobby's scanner, the dining room's and the corridor's near end
            }
        ]
    return doc


def venue(residents: int, door: bool = False) -> Venue:
    return parse(venue_doc(residents, door), Path("<sim-care-home>"))


def band_id(i: int) -> str:
    return f"WB-{i + 1:04d}"


@dataclass(frozen=True, slots=True)
class Truth:
    """One true event: what, whose, when (unix ms), and until when an alert still matches."""

    type: str
    band: str
    t_ms: int
    end_ms: int
    watched: bool = True  # EXIT: an exit scanner was up for WATCHED_S from t_ms


class Sink(Protocol):
    def advert(self, t_ms: int, band: str, counter: int, status: tuple[int, int, int, int], heard: list[Any]) -> None:
        """One advert copy; heard: [(scanner, rssi)]; status: (flags, battery, event id, age)."""

    def scanner(self, scanner: str, up: bool, t_ms: int) -> None: ...

    def door(self, door: str, opened: bool, t_ms: int) -> None: ...

    def tick(self, t_ms: int) -> None: ...


def _in(area: tuple[float, float, float, float], p: Point) -> bool:
    return area[0] <= p[0] <= area[2] and area[1] <= p[1] <= area[3]


_ROOMS = [((4 + 8 * (i % 5)), 16.0 if i % 10 < 5 else 4.0) for i in range(10)]
_HALL_Y = 10.0
_LOUNGE = (48.0, 8.0)
_DINING = (-8.0, 5.0)
_BENCH = (-9.0, 10.5)  # dining room's far end, 1.5 m from the lobby
_GARDEN = (48.0, 25.0)
_GATE = (55.0, 30.0)
_BEYOND = (110.0, 60.0)
_LOBBY = (-10.0, 15.0)
_STREET = (-10.0, 45.0)


class _Resident:
    def __init__(self, i: int, rng: random.Random, cond: Conditions) -> None:
        days = cond.days
        self.cond = cond
        self.i = i
        self.band = band_id(i)
        self.rng = rng
        self.room = _ROOMS[i % 10]
        self.pos: Point = self.room
        self.flags = WORN
        self.battery = 100.0 - rng.uniform(0, 60)
        self.event_id = 0
        self.event_t = 0.0
        self.burst_until = -1
        self.fall_flag_at = -1
        self.counter = 0
        self.phase_ms = rng.randrange(1000)
        self.low_since = -1  # when the battery reached LOW_PCT (charging by staff follows)
        self.charge_at = -1  # when staff put the band on the charger by day
        self.charge_end = -1
        self.now = 0  # the second being simulated
        self.doors: list[tuple[int, bool]] = []  # (second, opened) of the front door by this resident
        self.events = self._draw_events(days)
        self.truth: list[Truth] = []
        self.gen = self._life(days)

    def _draw_events(self, days: int) -> list[tuple[int, str]]:
        ev = []
        rates = dict(RATES, BENCH=self.cond.bench_per_day)
        for kind, rate in rates.items():
            t = 0.0
            while True:
                t += self.rng.expovariate(rate / DAY)
                if t >= days * DAY:
                    break
                tod = t % DAY
                if 8 * 3600 <= tod <= 21 * 3600:  # awake hours only
                    ev.append((int(t), kind))
        ev.sort()
        return ev

    # --- moving ------------------------------------------------------------------------

    def _walk(self, dest: Point, via_hall: bool = True) -> Iterator[Point]:
        pts: list[Point] = []
        if via_hall:
            pts = [(self.pos[0], _HALL_Y), (dest[0], _HALL_Y)]
        pts.append(dest)
        for p in pts:
            d = math.dist(self.pos, p)
            n = int(d / WALK_MPS)
            x0, y0 = self.pos
            for k in range(1, n + 1):
                yield (x0 + (p[0] - x0) * k / n, y0 + (p[1] - y0) * k / n)
            self.pos = p

    def _dwell(self, sec: int, shuffle: float = 1.0) -> Iterator[Point]:
        # small shuffles every few minutes
        base = self.pos
        for k in range(sec):
            if k % 240 == 239:
                u = self.rng.uniform
                self.pos = (base[0] + u(-shuffle, shuffle), base[1] + u(-shuffle, shuffle))
            yield self.pos

    # --- a life ------------------------------------------------------------------------

    def _life(self, days: int) -> Iterator[Point]:
        t = 0
        queue = list(self.events)
        while t < days * DAY:
            tod = t % DAY
            if queue and t >= queue[0][0]:
                _, kind = queue.pop(0)
                steps = self._special(kind, t)
            elif tod < 7 * 3600 or tod >= 22 * 3600:
                steps = self._night(t)
            else:
                steps = self._activity(t)
            for p in steps:
                yield p
                t += 1

    def _night(self, t: int) -> Iterator[Point]:
        if math.dist(self.pos, self.room) > 0.1:
            yield from self._walk(self.room)
        tod = t % DAY
        until = (7 * 3600 - tod) % DAY or 60
        charge = self.flags & CHARGING == 0 and self.battery < 50 and self.rng.random() < 0.8
        if charge:
            self.flags = (self.flags | STRAP_OPEN | CHARGING) & ~WORN
        yield from self._dwell(until)
        if self.flags & CHARGING:
            self.flags = (self.flags & ~(STRAP_OPEN | CHARGING)) | WORN

    def _activity(self, t: int) -> Iterator[Point]:
        tod = t % DAY
        r = self.rng.random()
        meal = any(a <= tod < a + 3600 for a in (8 * 3600, 12 * 3600, 18 * 3600))
        if meal or r < 0.2:
            dest = (_DINING[0] + self.rng.uniform(-4, 4), _DINING[1] + self.rng.uniform(-2, 3))
        elif r < 0.6:
            dest = (_LOUNGE[0] + self.rng.uniform(-5, 5), _LOUNGE[1] + self.rng.uniform(-4, 6))
        elif r < 0.7:
            dest = (_GARDEN[0] + self.rng.uniform(-6, 6), _GARDEN[1] + self.rng.uniform(-4, 4))
        elif r < 0.85:
            dest = self.room
        else:
            dest = (self.rng.uniform(2, 38), _HALL_Y + self.rng.uniform(-1, 1))
        yield from self._walk(dest)
        yield from self._dwell(min(self.rng.randint(600, 5400), max(60, 22 * 3600 - tod)))

    def _ms(self) -> int:
        return (T0 + self.now) * 1000

    def _special(self, kind: str, t: int) -> Iterator[Point]:
        ms = self._ms()
        if kind == "SOS":
            self._event(SOS_F, self.now)
            self.burst_until = self.now + 30
            self.truth.append(Truth("SOS", self.band, ms + self.phase_ms, ms + EVENT_AGE_OUT_S * 1000))
            yield from self._dwell(self.rng.randint(300, 600))
        elif kind == "FALL":
            self.fall_flag_at = self.now + math.ceil(FALL_CONFIRM_S)
            self.truth.append(Truth("FALL", self.band, ms, ms + (EVENT_AGE_OUT_S + 60) * 1000))
            yield from self._dwell(self.rng.randint(180, 900))
        elif kind == "EXIT":
            yield from self._walk((_LOBBY[0], _HALL_Y))
            entered = False
            for p in self._walk(_LOBBY, via_hall=False):
                if not entered and _in(ZONES[6][3], p):
                    entered = True
                    self.truth.append(Truth("EXIT", self.band, self._ms(), self._ms() + 3 * 3600_000))
                yield p
            yield from self._dwell(self.rng.randint(3, 20))
            yield from self._through_door(_STREET)
            yield from self._dwell(self.rng.randint(300, 1800))
            yield from self._through_door(_LOBBY)
            yield from self._walk((_LOBBY[0], _HALL_Y), via_hall=False)
            yield from self._walk(_LOUNGE)
        elif kind == "WANDER":
            yield from self._walk(_GARDEN)
            yield from self._walk(_GATE, via_hall=False)
            # truth time: leaving the garden through its gate
            self.truth.append(Truth("MISSING", self.band, self._ms(), self._ms() + 3 * 3600_000))
            yield from self._walk(_BEYOND, via_hall=False)
            yield from self._dwell(self.rng.randint(600, 2400))
            yield from self._walk(_GATE, via_hall=False)
            yield from self._walk(_GARDEN, via_hall=False)
        elif kind == "REMOVE":
            if self.flags & (CHARGING | STRAP_OPEN):
                return
            yield from self._walk(self.room)
            self.flags = (self.flags | STRAP_OPEN) & ~WORN
            start_ms = self._ms()
            dur = self.rng.randint(300, 3600)
            yield from self._dwell(dur)
            self.flags = (self.flags & ~STRAP_OPEN) | WORN
            self.truth.append(Truth("STRAP_REMOVED", self.band, start_ms, start_ms + (dur + 600) * 1000))
        elif kind == "BENCH":
            yield from self._walk((_BENCH[0], _HALL_Y - 2))
            yield from self._walk(_BENCH, via_hall=False)
            yield from self._dwell(self.rng.randint(*self.cond.bench_s), shuffle=0.5)

    def _through_door(self, dest: Point) -> Iterator[Point]:
        # the contact opens as the resident crosses the door line and closes 4 s later
        side = self.pos[1] > _DOOR_Y
        for p in self._walk(dest, via_hall=False):
            if (p[1] > _DOOR_Y) != side:
                side = not side
                self.doors += [(self.now, True), (self.now + 4, False)]
            yield p

    def _event(self, flag: int, t: int) -> None:
        self.event_id = self.event_id % 65535 + 1
        self.event_t = t
        self.flags |= flag

    # --- per second --------------------------------------------------------------------

    def step(self, t: int) -> None:
        """Advance status (flags, battery, events) to second t."""
        if self.fall_flag_at == t:
            self._event(FALL_F, t)
            self.event_t = t - FALL_CONFIRM_S  # the age counts from the impact
        if self.flags & (SOS_F | FALL_F) and t - self.event_t >= EVENT_AGE_OUT_S:
            self.flags &= ~(SOS_F | FALL_F)
        if self.flags & CHARGING:
            self.battery = min(100.0, self.battery + 50 / 3600)
        else:
            self.battery = max(1.0, self.battery - 0.9 / 3600)
        b = int(self.battery)
        if b <= LOW_PCT and not self.flags & CHARGING:
            if self.low_since < 0:
                self.low_since = t
                self.truth.append(Truth("BATTERY_LOW", self.band, (T0 + t) * 1000, (T0 + t + 14 * 3600) * 1000))
                self.charge_at = t + self.rng.randint(1800, 5400)
            self.flags |= LOW_BATTERY
        elif b >= OK_PCT:
            self.low_since = -1
            self.flags &= ~LOW_BATTERY
        tod = t % DAY
        if 0 <= self.charge_at <= t and 7 * 3600 <= tod < 20 * 3600 and not self.flags & CHARGING:
            # staff answer BATTERY_LOW: two hours on the charger by day
            self.flags = (self.flags | STRAP_OPEN | CHARGING) & ~WORN
            self.charge_at, self.charge_end = -1, t + 7200
        elif 0 <= self.charge_end <= t:
            self.flags = (self.flags & ~(STRAP_OPEN | CHARGING)) | WORN
            self.charge_end = -1

    def status(self, t: int) -> tuple[int, int, int, int]:
        age = int(t - self.event_t) if self.event_id else 0
        return (self.flags, int(self.battery), self.event_id, max(0, min(age, 65535)))


@dataclass
class Outage:
    scanners: tuple[str, ...]
    start: int
    end: int


@dataclass
class Trace:
    """The run's ground truth and what it drew."""

    residents: int
    days: int
    truth: list[Truth] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    adverts: int = 0
    sightings: int = 0
    door_events: int = 0


def _outages(rng: random.Random, cond: Conditions) -> list[Outage]:
    days = cond.days
    out = []
    ids = tuple(s for s, _, _ in SCANNERS)
    t = 0.0
    while True:  # single scanners: ~1 per scanner per 5 days
        t += rng.expovariate(len(ids) / (5 * DAY))
        if t >= days * DAY:
            break
        out.append(Outage((rng.choice(ids),), int(t), int(t) + rng.randint(60, 3600)))
    t = 0.0
    while True:  # whole gateway (every scanner): ~1 per 3 days
        t += rng.expovariate(1 / (3 * DAY))
        if t >= days * DAY:
            break
        out.append(Outage(ids, int(t), int(t) + rng.randint(120, 480)))
    if cond.exit_reboot_every_s:  # the exit scanner reboots on a schedule (a watchdog, an update)
        t = float(rng.randrange(cond.exit_reboot_every_s))
        while t < days * DAY:
            out.append(Outage(EXIT_SCANNERS, int(t), int(t) + rng.randint(*cond.exit_reboot_s)))
            t += cond.exit_reboot_every_s
    t = 0.0
    while cond.exit_outages_per_day:  # longer failures of the exit scanner
        t += rng.expovariate(cond.exit_outages_per_day / DAY)
        if t >= days * DAY:
            break
        out.append(Outage(EXIT_SCANNERS, int(t), int(t) + rng.randint(600, 3600)))
    return sorted(out, key=lambda o: o.start)


def _staff_doors(rng: random.Random, cond: Conditions) -> list[tuple[int, bool]]:
    """The front door opened by staff and visitors, 07:00-21:00, 3-10 s each."""
    out: list[tuple[int, bool]] = []
    rate = cond.door_openings_per_day / (14 * 3600)
    for day in range(cond.days if rate else 0):
        t = day * DAY + 7 * 3600 + rng.expovariate(rate)
        while t < day * DAY + 21 * 3600:
            out += [(int(t), True), (int(t) + rng.randint(3, 10), False)]
            t += rng.expovariate(rate)
    return out


class _Radio:
    """Reception of one resident's adverts at every scanner, a chunk of seconds at a time."""

    __slots__ = ("area", "down", "gen", "loss", "names", "shadow", "sx", "sy")
    _B = 64  # the AR(1) shadowing is computed in blocks of this many seconds
    _POW = SHADOW_RHO ** np.arange(1, _B + 1)
    _L = np.tril(SHADOW_RHO ** np.subtract.outer(np.arange(_B), np.arange(_B)).clip(0)) * (
        math.sqrt(1 - SHADOW_RHO**2) * SHADOW_SIGMA
    )

    def __init__(self, gen: np.random.Generator, down: np.ndarray, loss: float) -> None:
        zone_area = {zid: area for zid, _, _, area, _ in ZONES}
        self.gen = gen
        self.down = down  # [second, scanner]: silent (an outage)
        self.loss = loss
        self.names = [s for s, _, _ in SCANNERS]
        self.sx = np.array([p[0] for _, _, p in SCANNERS])
        self.sy = np.array([p[1] for _, _, p in SCANNERS])
        self.area = np.array([zone_area[z] for _, z, _ in SCANNERS])
        self.shadow = gen.standard_normal(len(SCANNERS)) * SHADOW_SIGMA

    def chunk(self, t0: int, pos: list[Point], copies: list[int]) -> list[list[tuple[str, int]]]:
        """The scanners (and RSSI) that heard each advert copy of seconds t0.. at these positions."""
        gen = self.gen
        n = len(pos)
        p = np.array(pos)
        x, y = p[:, :1], p[:, 1:]
        d = np.maximum(0.5, np.hypot(x - self.sx, y - self.sy))
        a = self.area
        inside = (a[:, 0] <= x) & (x <= a[:, 2]) & (a[:, 1] <= y) & (y <= a[:, 3])
        mean = RSSI_1M - 10 * PATH_N * np.log10(d) - WALL_DB * ~inside
        e = gen.standard_normal((n, len(self.names)))
        sh = np.empty_like(e)
        last = self.shadow
        b = self._B
        for i in range(0, n, b):
            k = min(b, n - i)
            sh[i : i + k] = self._L[:k, :k] @ e[i : i + k] + np.outer(self._POW[:k], last)
            last = sh[i + k - 1]
        self.shadow = last
        level = mean + sh
        cp = np.asarray(copies)
        if cp.max() > 1:
            sec = np.repeat(np.arange(n), cp)
            level = level[sec]
        else:
            sec = np.arange(n)
        v = level + gen.standard_normal(level.shape) * FADING_SIGMA
        heard = (v >= SENSITIVITY) & (gen.random(v.shape) >= self.loss) & ~self.down[t0 + sec]
        rows, cols = np.nonzero(heard)
        rssi = np.floor(v[rows, cols] + 0.5).astype(np.int64)
        out: list[list[tuple[str, int]]] = [[] for _ in range(len(sec))]
        names = self.names
        for r, c, q in zip(rows.tolist(), cols.tolist(), rssi.tolist(), strict=True):
            out[r].append((names[c], q))
        return out


def simulate(
    sink: Sink,
    cond: Conditions | None = None,
    seed: int = 1,
    seconds: int | None = None,
    feed_from: int = 0,
    chunk_s: int = 3600,
) -> Trace:
    """Run the simulation into sink; the ground truth is returned (only events that started).

    `seconds` stops early; the sink hears nothing before second `feed_from` (a sample window).
    """
    cond = cond or Conditions()
    rng = random.Random(seed)
    days = cond.days
    total = seconds if seconds is not None else days * DAY
    people = [_Resident(i, random.Random(rng.getrandbits(64)), cond) for i in range(cond.residents)]
    trace = Trace(cond.residents, days, outages=_outages(random.Random(rng.getrandbits(64)), cond))
    radio_gen = np.random.default_rng(rng.getrandbits(64))
    staff = _staff_doors(random.Random(rng.getrandbits(64)), cond)
    index = {s: i for i, (s, _, _) in enumerate(SCANNERS)}
    down = np.zeros((total + chunk_s, len(SCANNERS)), dtype=bool)
    for o in trace.outages:
        for s in o.scanners:
            down[o.start : o.end, index[s]] = True
    radios = [_Radio(np.random.default_rng(radio_gen.integers(1 << 62)), down, cond.loss) for _ in people]

    notices: list[tuple[int, str, bool]] = []
    for o in trace.outages:
        if o.end - o.start > WATCHDOG_S:
            for s in o.scanners:
                notices.append((o.start + WATCHDOG_S, s, False))
                notices.append((o.end + 1, s, True))
    notices.sort()
    ni = 0
    doors: list[tuple[int, bool]] = []
    di = 0

    for c0 in range(0, total, chunk_s):
        n = min(chunk_s, total - c0)
        plans = []  # per resident: per second (status, [heard per copy])
        for r, radio in zip(people, radios, strict=True):
            pos: list[Point] = []
            statuses = []
            copies = []
            for t in range(c0, c0 + n):
                r.now = t
                try:
                    p = next(r.gen)
                except StopIteration:
                    break
                r.step(t)
                pos.append(p)
                statuses.append(r.status(t))
                copies.append(10 if t < r.burst_until else 1)
            heard = radio.chunk(c0, pos, copies) if pos else []
            per_second = []
            k = 0
            for st, cp in zip(statuses, copies, strict=True):
                per_second.append((st, heard[k : k + cp]))
                k += cp
            plans.append(per_second)
        doors += [d for r in people for d in r.doors] + [d for d in staff if c0 <= d[0] < c0 + n]
        for r in people:
            r.doors.clear()
        doors.sort()
        for t in range(c0, c0 + n):
            t_ms = (T0 + t) * 1000
            while ni < len(notices) and notices[ni][0] <= t:
                nt, s, up = notices[ni]
                if t >= feed_from:
                    sink.scanner(s, up, (T0 + nt) * 1000)
                ni += 1
            while di < len(doors) and doors[di][0] <= t:
                dt, opened = doors[di]
                if t >= feed_from:
                    sink.door(DOOR, opened, (T0 + dt) * 1000)
                    trace.door_events += 1
                di += 1
            i = t - c0
            for r, per_second in zip(people, plans, strict=True):
                if i >= len(per_second):
                    continue
                status, copies_heard = per_second[i]
                counter = T0 + t
                for c, heard in enumerate(copies_heard):
                    trace.adverts += 1
                    if heard and t >= feed_from:
                        trace.sightings += len(heard)
                        sink.advert(t_ms + r.phase_ms + c * 100, r.band, counter, status, heard)
            if t >= feed_from:
                sink.tick(t_ms + 1000)
    end_ms = (T0 + total) * 1000
    exit_idx = [index[s] for s in EXIT_SCANNERS]
    for r in people:
        for x in r.truth:
            if x.t_ms >= end_ms:
                continue
            if x.type == "EXIT":
                s0 = x.t_ms // 1000 - T0
                watched = not down[s0 : s0 + WATCHED_S + 1][:, exit_idx].all(axis=1).any()
                trace.truth.append(replace(x, watched=bool(watched)))
            else:
                trace.truth.append(x)
    trace.truth.sort(key=lambda x: x.t_ms)
    return trace
