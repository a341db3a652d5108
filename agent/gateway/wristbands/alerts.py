"""Wristband alerts: what families are told, from accepted adverts (docs/wristband-alerts.md).

A pure, deterministic engine: no I/O, no clock; every input carries its gateway time (unix ms).
Fed by the BLE source with `on_sighting()` for every accepted advert each scanner heard, with
`scanner_down()` / `scanner_up()` from the scanner watchdog, with `on_door()` for the door
contacts the venue file maps to exit zones, and with `tick()` about once a second. Each call
returns the band alerts it raised, in order; alerts about the venue itself (an exit zone no
scanner watches) are collected for `venue_alerts()`.

Per band, across all scanners:
- RSSI per scanner averaged over a short sliding window (`rssi_window_s`, stretched to three
  learned advert intervals); the adverts a scanner missed beyond those the best-hearing
  scanner of the band missed count as -105 dBm, less a slack of one advert plus the share
  random loss explains (learned across bands from what one scanner far above sensitivity
  misses that another heard), so a far scanner's rare lucky sample does not beat a near one,
  and random advert loss, which every scanner suffers alike, does not drag a near scanner's
  average down; the candidate zone is the zone of the strongest
  scanner if its average reaches the zone's `min_rssi` and beats the band's current zone by
  `zone_margin_db`; the band's zone changes only after one candidate wins `zone_confirm`
  consecutive observations (one observation per advert counter, judged when the next counter
  arrives, not per scanner copy), so a band at a doorway does not flap;
- exit evidence: a move into a zone the resident may not be in (an EXIT) needs more: the
  candidate's scanner must beat every scanner of every other zone by `exit_margin_db`, not
  only the current zone's by `zone_margin_db`, `exit_confirm` times in a row. A resident
  sitting next to the exit, where a shadowing swing lifts the exit scanner to the level of
  the room's own, is still heard by the room's scanner; one in the exit zone is heard by the
  exit scanner and barely by anything inside. A band seen leaving needs only a room's margin
  (`zone_margin_db`, still `exit_confirm` times): the lead of the allowed zones' strongest
  scanner over the other zones' (on the levels each heard, -105 dBm for none, so random loss
  makes no lead) was at least _DEPART_DB more 2-15 s before than now: a walk out of the room
  scanner's reach into the exit scanner's, not a shadowing swing of a resident sitting still;
  leads taken before a scanner went down or came back are forgotten. A door contact of that
  exit zone opening within
  `door_window_s` of the evidence confirms it at once (no repeat needed);
  a band last heard within `door_window_s` of a door's opening, faded out (its last reading
  -80 dBm or weaker, by one of the door's `approach` scanners when the venue lists them) and
  unheard for `door_lost_s` after it (its own scanners up) is an EXIT too, which covers an
  exit zone whose scanners are down;
- the advert interval is learned (EWMA of the gaps between new counters); it stretches the
  RSSI window and the MISSING timeout for bands that advertise slowly;
- SOS and FALL are keyed by (type, event id), so one event raises one alert however many
  adverts and scanners carry it;
- EXIT when the band's zone becomes one the resident is not allowed in (exit zones are never
  allowed by default); MISSING when no scanner heard the band for `missing_after_s` while it
  was inside; SCANNER_BLIND instead of MISSING when every scanner of the band's last zone is
  down (MISSING follows if the band is still unheard `scanner_grace_s` after one is back);
  BACK_INSIDE resolves EXIT and MISSING;
- an exit zone whose every scanner has been down for `exit_blind_after_s` is a venue alert
  (SCANNER_BLIND, no band): the exit is not watched; a second one when a scanner is back;
- STRAP_REMOVED after `strap_after_s` with the strap open or the band not worn (not while
  charging), BATTERY_LOW with hysteresis (raised at or below `battery_low_pct` or with the
  LOW_BATTERY flag, re-armed at or above `battery_ok_pct`); during a resident's quiet hours
  these two P1 alerts are held and raised at the end if still true. P0 alerts are never held.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agent.gateway.wristbands.advert import BATTERY_UNKNOWN, CHARGING, FALL, LOW_BATTERY, SOS, STRAP_OPEN, WORN
from agent.gateway.wristbands.resolver import Sighting
from agent.gateway.wristbands.venue import Resident, Venue
from agent.shared.protocol import EventType, priority_of

Context = dict[str, str | int | float | None]

_EVENT_FLAGS = SOS | FALL
_SEEN_IDS = 16  # event ids remembered per band (ids are +1 per event; 65535 wraps to 1)
_INTERVAL_MS = 1000.0  # assumed advert interval before one is learned
_INTERVAL_MAX_GAP_MS = 30_000  # longer gaps are absences, not intervals
_MISSING_INTERVALS = 20  # MISSING never fires before this many learned intervals of silence
_LINK_SAMPLES = 64  # bound of one scanner's samples of one band (SOS bursts send 10/s)
_FLOOR_DBM = -105  # the RSSI counted for an advert a scanner missed (beyond the slack)
_MISS_SLACK = 1  # adverts a scanner may miss against the band's best-hearing scanner for free ...
_CLEAR_DBM = -85  # ... plus those random loss explains, learned from scanners this far above sensitivity
_LOSS_PRIOR = 0.05  # the relative miss rate assumed before one is learned
_LOSS_RATE = 0.002  # EWMA weight of one observation with two clear scanners
_FADED_DBM = -80  # a band leaving through a door fades out: its last reading is at most this
_STRONG_DBM = -90  # with margin: the reading that moves a band out of a zone whose scanners are down
_DEPART_DB = 30  # a band leaving: its inside-over-outside lead fell by this much ...
_DEPART_MS = (2_000, 15_000)  # ... against its lead this long ago (a walk, not a shadowing swing)
_LEADS = 48  # bound of the leads kept per band (one per advert counter)
_OPENINGS_MAX = 32  # door openings watched at once (each costs a pass over the bands per tick)
_NEVER = 1 << 62


def _removed(flags: int) -> bool:
    """The band is off the wrist (strap open or not worn) and not on its charger."""
    return bool(flags & STRAP_OPEN or not flags & WORN) and not flags & CHARGING


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert; `context` holds the human-readable details (`text` is a one-line summary)."""

    type: EventType  # one of those protocol.RAISED_BY gives to ALERTS
    band: str
    resident: str
    zone: str | None  # zone name
    t_ms: int
    context: Context = field(default_factory=dict)

    @property
    def priority(self) -> int:
        """0 for P0, 1 for P1 (protocol.priority_of on the type)."""
        return priority_of(int(self.type))

    @property
    def lane(self) -> str:
        return f"P{self.priority}"


@dataclass(frozen=True, slots=True)
class VenueAlert:
    """An alert about the venue, not a band: an exit zone no scanner watches (SCANNER_BLIND)."""

    type: EventType
    zone: str  # zone name
    t_ms: int
    context: Context = field(default_factory=dict)
    scanners: tuple[str, ...] = ()  # the zone's scanners
    blind_ms: int = 0  # how long every one of them had been down

    @property
    def priority(self) -> int:
        return priority_of(int(self.type))


class _Link:
    """One scanner's recent RSSI samples of one band, one per advert counter."""

    __slots__ = ("counter", "samples", "total", "zone")

    def __init__(self, zone: str) -> None:
        self.samples: deque[tuple[int, int]] = deque()
        self.total = 0
        self.counter = -1
        self.zone = zone


class _Band:
    __slots__ = (
        "allowed",
        "battery",
        "battery_alerted",
        "blind_open",
        "due_ms",
        "event_id",
        "event_ids",
        "event_keys",
        "exit_open",
        "exit_since",
        "flags",
        "interval_ms",
        "last_new_ms",
        "last_rssi",
        "last_scanner",
        "last_seen_ms",
        "leads",
        "links",
        "missing_open",
        "missing_since",
        "obs_counter",
        "pending",
        "res",
        "status_counter",
        "strap_alerted",
        "strap_since",
        "streak",
        "zone",
    )

    def __init__(self, res: Resident) -> None:
        self.res = res
        self.allowed = res.allowed_zones
        self.links: dict[str, _Link] = {}
        self.last_seen_ms = -1  # -1: never heard since the engine started
        self.last_scanner = ""
        self.last_rssi = 0
        self.last_new_ms = -1
        self.interval_ms = _INTERVAL_MS
        self.obs_counter = -1  # the advert counter of the last zone observation
        # per observation: (t_ms, strongest allowed zone's average - strongest other zone's)
        self.leads: deque[tuple[int, float]] = deque(maxlen=_LEADS)
        self.zone: str | None = None
        self.pending: str | None = None
        self.streak = 0
        self.status_counter = -1
        self.flags = -1  # -1: no status yet
        self.event_id = -1
        self.battery = BATTERY_UNKNOWN
        self.event_keys: set[tuple[int, int]] = set()
        self.event_ids: deque[tuple[int, int]] = deque()
        self.exit_open = False
        self.exit_since = 0
        self.missing_open = False
        self.missing_since = 0
        self.blind_open = False
        self.strap_since = -1
        self.strap_alerted = False
        self.battery_alerted = False
        self.due_ms = _NEVER


class _DoorOpening:
    """A door contact's opening: the bands heard around it are watched for `door_lost_s`."""

    __slots__ = ("door", "t_ms", "zone")

    def __init__(self, door: str, zone: str, t_ms: int) -> None:
        self.door = door
        self.zone = zone
        self.t_ms = t_ms


class AlertEngine:
    """The alert state of every registered band; see the module docstring."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        s = venue.settings
        self._tz = venue.tz()
        self._window_ms = int(s.rssi_window_s * 1000)
        self._confirm = s.zone_confirm
        self._margin = s.zone_margin_db
        self._exit_margin = s.exit_margin_db
        self._exit_confirm = s.exit_confirm
        self._door_window_ms = s.door_window_s * 1000
        self._door_lost_ms = s.door_lost_s * 1000
        self._exit_blind_ms = s.exit_blind_after_s * 1000
        self._low = s.battery_low_pct
        self._ok = s.battery_ok_pct
        self._grace_ms = s.scanner_grace_s * 1000
        self._scanner_zone = {sc.id: sc.zone for sc in venue.scanners.values()}
        self._live = dict(self._scanner_zone)  # the scanners not reported down -> zone
        self._zone_min = {z.id: z.min_rssi for z in venue.zones.values()}
        self._zone_scanners: dict[str, tuple[str, ...]] = {
            z: tuple(sc.id for sc in venue.scanners.values() if sc.zone == z) for z in venue.zones
        }
        self._exits = frozenset(z.id for z in venue.zones.values() if z.kind == "exit")
        self._door_zone = {d.id: d.zone for d in venue.doors.values()}
        self._door_approach = {d.id: d.approach for d in venue.doors.values()}
        self._contacts = {(d.sensor, d.channel): d.id for d in venue.doors.values() if d.sensor is not None}
        self._door_open_ms: dict[str, int] = {}  # exit zone -> the latest opening of one of its doors
        # openings whose bands are still watched; a flapping contact keeps only the latest
        self._openings: deque[_DoorOpening] = deque(maxlen=_OPENINGS_MAX)
        self._down: dict[str, int] = {}  # scanner -> when it was reported down
        self._up: dict[str, int] = {}  # scanner -> when it was last reported back
        self._exit_blind: dict[str, list[int]] = {}  # exit zone -> [blind since, notice raised (0/1)]
        self._venue_alerts: list[VenueAlert] = []
        self._rel_miss = _LOSS_PRIOR  # learned: adverts one clear scanner misses that another heard
        self._bands = {band: _Band(res) for band, res in venue.residents.items()}
        self.counts: Counter[str] = Counter()

    # --- inputs -----------------------------------------------------------------------

    def remember(self, raised: Iterable[tuple[str, int, int]]) -> None:
        """SOS/FALL alerts raised before a restart, (band, type, band event id): not raised again."""
        for band, kind, eid in raised:
            b = self._bands.get(band)
            key = (kind, eid)
            if b is None or key in b.event_keys:
                continue
            b.event_keys.add(key)
            b.event_ids.append(key)
            if len(b.event_ids) > _SEEN_IDS:
                b.event_keys.discard(b.event_ids.popleft())

    def reopen(self, open_alerts: Iterable[tuple[str, int, int, str | None]]) -> None:
        """EXIT and MISSING raised before a restart and not yet resolved, (band, type, since ms,
        zone name): the band is away, as before the restart. Not announced again; BACK_INSIDE
        still closes them. Rows of unknown bands or other types are ignored."""
        for band, kind, since, zone_name in open_alerts:
            b = self._bands.get(band)
            if b is None:
                continue
            if kind == EventType.EXIT:
                b.exit_open, b.exit_since = True, since
                # the zone it was placed in (names are for people: one not allowed first)
                found = sorted((z.id in b.allowed, z.id) for z in self.venue.zones.values() if z.name == zone_name)
                b.zone = found[0][1] if found else b.zone
            elif kind == EventType.MISSING:
                b.missing_open, b.missing_since = True, since

    def on_sighting(self, scanner: str, rssi: int, t_ms: int, s: Sighting) -> list[Alert]:
        """One accepted advert heard by one scanner; the alerts it raises (often none)."""
        b = self._bands.get(s.band)
        if b is None:
            self.counts["unknown_band"] += 1
            return []
        out: list[Alert] = []
        if t_ms > b.last_seen_ms:
            b.last_seen_ms = t_ms
            b.last_scanner = scanner
            b.last_rssi = rssi
        counter = s.counter
        if s.new:
            if b.last_new_ms >= 0:
                gap = t_ms - b.last_new_ms
                if 0 < gap < _INTERVAL_MAX_GAP_MS:
                    b.interval_ms += (gap - b.interval_ms) * 0.05
            b.last_new_ms = t_ms
        if b.missing_open:
            self._found(b, scanner, rssi, t_ms, out)
        zone = self._live.get(scanner)  # a late copy from a scanner reported down does not place the band
        if zone is not None:
            if counter > b.obs_counter:
                if b.obs_counter >= 0:
                    self._observe(b, t_ms, out)  # every scanner has had its say on the previous advert
                b.obs_counter = counter
            link = b.links.get(scanner)
            if link is None:
                link = b.links[scanner] = _Link(zone)
            if link.counter != counter:  # the first copy; burst repeats add nothing
                link.counter = counter
                q = link.samples
                q.append((t_ms, rssi))
                link.total += rssi
                if len(q) > _LINK_SAMPLES:
                    link.total -= q.popleft()[1]
        elif scanner not in self._scanner_zone:
            self.counts["unknown_scanner"] += 1
        st = s.status
        if counter >= b.status_counter:
            b.status_counter = counter
            if st.flags != b.flags or st.event_id != b.event_id or st.battery != b.battery:
                self._status(b, scanner, rssi, t_ms, s, out)
        return out

    def on_door(self, door: str, opened: bool, t_ms: int) -> list[Alert]:
        """A door contact the venue file maps to an exit zone opened (or closed) at t_ms.

        `door` is the `[[doors]] id` (`door_for()` finds it from a venue sensor's device id and
        channel name). An opening lowers the exit evidence of its zone to a room's for
        `door_window_s` either side, and the bands heard around it that go unheard for
        `door_lost_s` raise EXIT (see `tick()`). A closing changes nothing: a band can leave
        while the door swings shut. An unknown door is counted and ignored.
        """
        zone = self._door_zone.get(door)
        if zone is None:
            self.counts["unknown_door"] += 1
            return []
        self.counts["door_opened" if opened else "door_closed"] += 1
        if opened:
            if t_ms > self._door_open_ms.get(zone, -1):
                self._door_open_ms[zone] = t_ms
            self._openings.append(_DoorOpening(door, zone, t_ms))
        return []

    def door_for(self, sensor: str, channel: str) -> str | None:
        """The door id of a venue sensor's door channel (device id, channel name), if mapped."""
        return self._contacts.get((sensor, channel))

    def scanner_down(self, scanner: str, t_ms: int) -> list[Alert]:
        """The source reports a scanner quiet (its watchdog fired)."""
        self._down.setdefault(scanner, t_ms)
        self._live.pop(scanner, None)
        for b in self._bands.values():
            b.links.pop(scanner, None)
            b.leads.clear()  # a lead over a scanner that was not listening is no evidence
            b.due_ms = min(b.due_ms, t_ms)
        zone = self._scanner_zone.get(scanner)
        if zone in self._exits and zone not in self._exit_blind and self._blind(zone):
            self._exit_blind[zone] = [min(self._down[sc] for sc in self._zone_scanners[zone]), 0]
        return []

    def scanner_up(self, scanner: str, t_ms: int) -> list[Alert]:
        """The source reports a scanner hearing again."""
        if self._down.pop(scanner, None) is not None:
            self._up[scanner] = t_ms
        zone = self._scanner_zone.get(scanner)
        if zone is not None:
            self._live[scanner] = zone
            for b in self._bands.values():
                b.leads.clear()  # ... nor is a scanner's silence before it was back
        blind = self._exit_blind.pop(zone, None) if zone is not None else None
        if zone is not None and blind is not None and blind[1]:
            name = self.venue.zones[zone].name
            ctx: Context = {
                "zone": name,
                "time": self._time(t_ms),
                "scanner": scanner,
                "blind_s": (t_ms - blind[0]) // 1000,
                "watched": 1,
                "text": f"Exit {name} is watched again (scanner {scanner} is back) at {self._time(t_ms)}",
            }
            self._venue_alert(zone, t_ms, ctx, t_ms - blind[0])
        return []

    def tick(self, now_ms: int) -> list[Alert]:
        """Time-based alerts (MISSING, SCANNER_BLIND, STRAP_REMOVED, BATTERY_LOW, door EXIT); ~1/s."""
        out: list[Alert] = []
        if self._openings:
            self._door_lost(now_ms, out)
        if self._exit_blind:
            self._exit_blind_notices(now_ms)
        minute = -1
        for b in self._bands.values():
            if b.due_ms > now_ms:
                continue
            if minute < 0:
                minute = self._minute(now_ms)
            b.due_ms = self._timers(b, now_ms, minute, out)
        return out

    def venue_alerts(self) -> list[VenueAlert]:
        """The venue alerts raised since the last call (exit zones not watched, watched again)."""
        out, self._venue_alerts = self._venue_alerts, []
        return out

    # --- zone ---------------------------------------------------------------------------

    def _observe(self, b: _Band, t_ms: int, out: list[Alert]) -> None:
        horizon = t_ms - max(self._window_ms, int(3 * b.interval_ms))
        links = b.links
        h_max = 0
        heard: list[tuple[int, int, str, str]] = []
        dead: list[str] = []
        for sid, link in links.items():
            q = link.samples
            if q[0][0] < horizon:
                total = link.total
                while q and q[0][0] < horizon:
                    total -= q.popleft()[1]
                link.total = total
                if not q:
                    dead.append(sid)
                    continue
            h = len(q)
            if h > h_max:  # noqa: PLR1730 - hot path: a comparison costs less than a call to max()
                h_max = h
            heard.append((h, link.total, link.zone, sid))
        for sid in dead:
            del links[sid]
        if not h_max:
            return
        if len(heard) > 1:
            clear = [h for h, total, _, _ in heard if h >= 3 and total >= _CLEAR_DBM * h]
            if len(clear) > 1:  # random loss: what one clear scanner misses that another heard
                top = max(clear)
                missed = (top * len(clear) - sum(clear)) / (top * (len(clear) - 1))
                self._rel_miss += (missed - self._rel_miss) * _LOSS_RATE
        best = second = cur = -1e9
        inside = outside = float(_FLOOR_DBM)
        cand: str | None = None
        cand_scanner = ""
        bz = b.zone
        allowed_zones = b.allowed
        full = h_max - _MISS_SLACK - int(self._rel_miss * h_max + 0.5)
        for h, total, zone, sid in heard:
            ex = full - h
            # adverts this scanner missed that the band's best-hearing scanner heard count at the
            # floor: a far scanner's rare lucky sample does not beat a near one that hears them all
            avg = (total + _FLOOR_DBM * ex) / (h + ex) if ex > 0 else total / h
            # the lead is judged on what each scanner heard (not on its misses, which random loss
            # makes as well as a walk): the level a scanner hears the band at is where the band is
            raw = total / h
            if zone in allowed_zones:
                if raw > inside:  # noqa: PLR1730 - hot path: a comparison costs less than max()
                    inside = raw
            elif raw > outside:
                outside = raw
            if avg > best:
                if zone != cand:
                    second = best
                best, cand, cand_scanner = avg, zone, sid
            elif avg > second and zone != cand:
                second = avg
            if zone == bz and avg > cur:
                cur = avg
        b.leads.append((t_ms, inside - outside))
        if cand is None or best < self._zone_min[cand]:
            return  # the strongest scanner is too weak to place the band in its zone
        if cand == bz:
            b.pending, b.streak = None, 0
            return
        if cur == -1e9 and bz is not None and best < max(self._zone_min[cand], _STRONG_DBM) + self._margin:
            # no scanner of the current zone hears the band (or they are down), so the margin has
            # nothing to beat: a move then needs a strong reading, not merely the best of the rest
            # (a band walking away from the exit is still heard faintly by a room's scanner)
            return
        allowed = cand in b.allowed
        need, confirm = cur + self._margin, self._confirm
        door = False
        if not allowed:
            # exit evidence: the exit scanner beats every scanner of every other zone, by the exit
            # margin, or by a room's when the band is seen leaving (its inside lead collapsed)
            margin = self._margin if self._departed(b.leads, t_ms, outside - inside) else self._exit_margin
            need, confirm = max(need, second + margin), self._exit_confirm
            opened = self._door_open_ms.get(cand, -1)
            if opened >= 0 and abs(t_ms - opened) <= self._door_window_ms:
                door, confirm = True, 1  # a door of the zone opened: the evidence needs no repeat
        if best < need:
            b.pending, b.streak = None, 0
            return
        if cand == b.pending:
            b.streak += 1
        else:
            b.pending, b.streak = cand, 1
        if b.streak < confirm and (bz is not None or not allowed):
            return  # a first placement outside the allowed zones needs the full confirmation
        b.zone, b.pending, b.streak = cand, None, 0
        if not allowed and not b.exit_open:
            reason = "exit zone" if cand in self._exits else "zone not allowed"
            if door:
                reason += ", door opened"
            self._exit(b, t_ms, cand_scanner, round(best), bz, reason, out)
        elif allowed and b.exit_open:
            b.exit_open = False
            ctx = self._ctx(b, t_ms, cand_scanner, round(best))
            ctx["resolves"] = "EXIT"
            ctx["away_s"] = (t_ms - b.exit_since) // 1000
            ctx["text"] = f"{b.res.reference} is back inside, in {self._zone_name(cand)}, at {ctx['time']}"
            out.append(self._alert(EventType.BACK_INSIDE, b, t_ms, ctx))

    @staticmethod
    def _departed(leads: deque[tuple[int, float]], t_ms: int, gain: float) -> bool:
        """The band is leaving: the zones it may not be in lead the allowed ones by `gain` now,
        and the allowed ones led by at least _DEPART_DB - gain a few seconds ago (a walk out
        swings the lead by ~40 dB in seconds; shadowing swings a sitter's by ~5 dB)."""
        need = _DEPART_DB - gain
        lo, hi = t_ms - _DEPART_MS[1], t_ms - _DEPART_MS[0]
        return any(lo <= t <= hi and lead >= need for t, lead in leads)

    def _exit(
        self, b: _Band, t_ms: int, scanner: str, rssi: int, old: str | None, reason: str, out: list[Alert]
    ) -> None:
        b.exit_open, b.exit_since = True, t_ms
        ctx = self._ctx(b, t_ms, scanner, rssi)
        ctx["from_zone"] = self._zone_name(old)
        ctx["reason"] = reason
        ctx["text"] = f"{b.res.reference} seen in {ctx['zone']} ({reason}) at {ctx['time']}"
        out.append(self._alert(EventType.EXIT, b, t_ms, ctx))

    def _door_lost(self, now: int, out: list[Alert]) -> None:
        """EXIT for bands heard around a door's opening and unheard since, their scanners up."""
        window, lost = self._door_window_ms, self._door_lost_ms
        openings = self._openings
        while openings and openings[0].t_ms + window + lost < now:
            openings.popleft()
        for o in openings:
            approach = self._door_approach[o.door]
            for b in self._bands.values():
                seen = b.last_seen_ms
                if (
                    b.exit_open
                    or b.missing_open
                    or seen < o.t_ms - window
                    or seen > o.t_ms + window
                    or now - seen < lost
                    or b.last_rssi > _FADED_DBM
                    or (approach is not None and b.last_scanner not in approach)
                    or b.last_scanner in self._down
                    or (b.zone is not None and b.zone in b.allowed and self._blind(b.zone))
                ):
                    continue
                old = b.zone
                b.zone, b.pending, b.streak = o.zone, None, 0
                reason = f"door {o.door} opened at {self._time(o.t_ms)}, not heard since"
                self._exit(b, now, b.last_scanner, b.last_rssi, old, reason, out)
                out[-1].context["last_seen"] = self._time(seen)

    def _exit_blind_notices(self, now: int) -> None:
        for zone, blind in self._exit_blind.items():
            if blind[1] or now < blind[0] + self._exit_blind_ms:
                continue
            blind[1] = 1
            name = self.venue.zones[zone].name
            down = ", ".join(self._zone_scanners[zone])
            ctx: Context = {
                "zone": name,
                "time": self._time(now),
                "scanners_down": down,
                "blind_s": (now - blind[0]) // 1000,
                "since": self._time(blind[0]),
                "watched": 0,
                "text": (
                    f"Exit {name} is not watched: scanner(s) {down} down since {self._time(blind[0])}; "
                    "residents leaving there are not seen"
                ),
            }
            self._venue_alert(zone, now, ctx, now - blind[0])

    def _venue_alert(self, zone: str, t_ms: int, ctx: Context, blind_ms: int) -> None:
        self.counts["venue_SCANNER_BLIND"] += 1
        name = self.venue.zones[zone].name
        alert = VenueAlert(EventType.SCANNER_BLIND, name, t_ms, ctx, self._zone_scanners[zone], blind_ms)
        self._venue_alerts.append(alert)

    def _found(self, b: _Band, scanner: str, rssi: int, t_ms: int, out: list[Alert]) -> None:
        b.missing_open = False
        b.blind_open = False
        zone = self._scanner_zone.get(scanner)
        if zone is not None and zone not in b.allowed:
            return  # seen outside: the zone logic raises EXIT
        if zone is not None:
            b.zone, b.pending, b.streak = zone, None, 0
        ctx = self._ctx(b, t_ms, scanner, rssi)
        ctx["resolves"] = "MISSING"
        ctx["away_s"] = (t_ms - b.missing_since) // 1000
        ctx["text"] = f"{b.res.reference} is heard again in {ctx['zone'] or 'an unmapped area'} at {ctx['time']}"
        out.append(self._alert(EventType.BACK_INSIDE, b, t_ms, ctx))

    # --- status -------------------------------------------------------------------------

    def _status(self, b: _Band, scanner: str, rssi: int, t_ms: int, s: Sighting, out: list[Alert]) -> None:
        st = s.status
        prev = max(b.flags, 0)
        b.flags = st.flags
        b.event_id = st.event_id
        b.battery = st.battery
        b.due_ms = t_ms  # strap and battery are judged by the next tick
        if b.strap_since < 0 and _removed(st.flags):
            b.strap_since = t_ms
        events = st.flags & _EVENT_FLAGS
        if not events:
            return
        eid = st.event_id
        rising = events & ~prev
        new_id = all(k[1] != eid for k in b.event_ids)
        if rising:
            kinds = rising
        elif new_id:
            kinds = SOS if events & SOS else FALL  # another event while the flag was still set
        else:
            return
        for flag, kind in ((SOS, EventType.SOS), (FALL, EventType.FALL)):
            key = (int(kind), eid)
            if not kinds & flag or key in b.event_keys:
                continue
            b.event_keys.add(key)
            b.event_ids.append(key)
            if len(b.event_ids) > _SEEN_IDS:
                b.event_keys.discard(b.event_ids.popleft())
            ctx = self._ctx(b, t_ms, scanner, rssi)
            ctx["event_id"] = eid
            ctx["event_age_s"] = st.event_age
            ctx["event_time"] = self._time(t_ms - st.event_age * 1000)
            if st.battery != BATTERY_UNKNOWN:
                ctx["battery_pct"] = st.battery
            what = "pressed SOS" if kind is EventType.SOS else "has fallen"
            where = ctx["zone"] or "an unknown zone"
            ctx["text"] = f"{b.res.reference} {what} in {where} at {ctx['event_time']} (heard by {scanner})"
            out.append(self._alert(kind, b, t_ms, ctx))

    # --- timers -------------------------------------------------------------------------

    def _timers(self, b: _Band, now: int, minute: int, out: list[Alert]) -> int:
        due = _NEVER
        if b.last_seen_ms < 0:
            return due
        quiet = self._quiet(b.res, minute)
        flags = b.flags if b.flags >= 0 else WORN
        removed = _removed(flags)
        if not removed:
            b.strap_since, b.strap_alerted = -1, False
        elif not b.strap_alerted:
            if b.strap_since < 0:
                b.strap_since = now
            at = b.strap_since + b.res.strap_after_s * 1000
            if now < at:
                due = min(due, at)
            elif quiet:
                due = min(due, now + 60_000)
            else:
                b.strap_alerted = True
                ctx = self._ctx(b, now, b.last_scanner, b.last_rssi)
                ctx["since"] = self._time(b.strap_since)
                ctx["text"] = f"{b.res.reference}'s band is off (strap open or not worn) since {ctx['since']}"
                out.append(self._alert(EventType.STRAP_REMOVED, b, now, ctx))
        low = (b.battery != BATTERY_UNKNOWN and b.battery <= self._low) or bool(flags & LOW_BATTERY)
        if b.battery_alerted:
            if b.battery != BATTERY_UNKNOWN and b.battery >= self._ok and not flags & LOW_BATTERY:
                b.battery_alerted = False
        elif low:
            if quiet:
                due = min(due, now + 60_000)
            else:
                b.battery_alerted = True
                ctx = self._ctx(b, now, b.last_scanner, b.last_rssi)
                ctx["battery_pct"] = None if b.battery == BATTERY_UNKNOWN else b.battery
                ctx["text"] = f"{b.res.reference}'s band battery is low ({b.battery} %): please charge it"
                out.append(self._alert(EventType.BATTERY_LOW, b, now, ctx))
        if not (b.exit_open or b.missing_open):
            due = min(due, self._absence(b, now, out))
        return due

    def _absence(self, b: _Band, now: int, out: list[Alert]) -> int:
        timeout = max(b.res.missing_after_s * 1000, int(_MISSING_INTERVALS * b.interval_ms))
        at = b.last_seen_ms + timeout
        covering = self._zone_scanners.get(b.zone, ()) if b.zone is not None else (b.last_scanner,)
        if covering and all(sc in self._down for sc in covering):
            if now >= at and not b.blind_open:
                b.blind_open = True
                down = ", ".join(covering)
                since = min(self._down[sc] for sc in covering)
                ctx = self._ctx(b, now, b.last_scanner, b.last_rssi)
                ctx["scanners_down"] = down
                ctx["blind_s"] = (now - since) // 1000
                ctx["last_seen"] = self._time(b.last_seen_ms)
                ctx["text"] = (
                    f"{b.res.reference} not heard since {ctx['last_seen']} in {ctx['zone']}, "
                    f"but scanner(s) {down} there are down: presence unknown"
                )
                out.append(self._alert(EventType.SCANNER_BLIND, b, now, ctx))
            return max(at, now + 1000)
        b.blind_open = False
        for sc in covering:
            up = self._up.get(sc, -1)
            if up >= 0 and up + self._grace_ms > at:
                at = up + self._grace_ms
        if now < at:
            return at
        b.missing_open, b.missing_since, b.blind_open = True, b.last_seen_ms, False
        ctx = self._ctx(b, now, b.last_scanner, b.last_rssi)
        ctx["last_seen"] = self._time(b.last_seen_ms)
        ctx["unheard_s"] = (now - b.last_seen_ms) // 1000
        ctx["text"] = (
            f"{b.res.reference} not heard by any scanner for {ctx['unheard_s']} s; "
            f"last seen in {ctx['zone']} at {ctx['last_seen']} (by {b.last_scanner})"
        )
        out.append(self._alert(EventType.MISSING, b, now, ctx))
        return _NEVER

    # --- helpers ------------------------------------------------------------------------

    def _blind(self, zone: str) -> bool:
        """Every scanner of the zone is reported down."""
        covering = self._zone_scanners.get(zone, ())
        return bool(covering) and all(sc in self._down for sc in covering)

    def _alert(self, kind: EventType, b: _Band, t_ms: int, ctx: Context) -> Alert:
        self.counts[kind.name] += 1
        return Alert(kind, b.res.band, b.res.reference, self._zone_name(b.zone), t_ms, ctx)

    def _ctx(self, b: _Band, t_ms: int, scanner: str, rssi: int) -> Context:
        return {
            "resident": b.res.reference,
            "zone": self._zone_name(b.zone),
            "time": self._time(t_ms),
            "scanner": scanner or None,
            "rssi": rssi if scanner else None,
        }

    def _zone_name(self, zone: str | None) -> str | None:
        return None if zone is None else self.venue.zones[zone].name

    def _time(self, t_ms: int) -> str:
        return datetime.fromtimestamp(t_ms / 1000, self._tz).isoformat(timespec="seconds")

    def _minute(self, t_ms: int) -> int:
        d = datetime.fromtimestamp(t_ms / 1000, self._tz)
        return d.hour * 60 + d.minute

    @staticmethod
    def _quiet(res: Resident, minute: int) -> bool:
        if res.quiet_hours is None:
            return False
        start, end = res.quiet_hours
        return start <= minute < end if start < end else (minute >= start or minute < end)

    # --- inspection ---------------------------------------------------------------------

    def zone_of(self, band: str) -> str | None:
        """The band's confirmed zone id (None before the first placement)."""
        return self._bands[band].zone

    def interval_s(self, band: str) -> float:
        """The band's learned advert interval."""
        return self._bands[band].interval_ms / 1000
