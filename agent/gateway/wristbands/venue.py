"""The venue and residents file of the wristband alert engine (docs/wristband-alerts.md).

One TOML file: zones (inside or exit, with an optional area for simulation), scanners mapped
to zones, door contacts of venue sensors mapped to exit zones, engine settings, and one
[[residents]] table per band with its allowed zones, quiet hours and timeouts. Loaded once into
frozen dataclasses; every error is a ConfigError naming the file and the dotted key
(`residents[3].quiet_hours: ...`). What is valid but weak (an exit zone watched by a single
scanner, or by none) is a warning in `Venue.warnings`, logged at load and printed by
`guardian-agent check-config`: a venue may start with it, but staff should know.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.shared import tomlcheck
from agent.shared.errors import ConfigError

log = logging.getLogger("agent.ble.venue")

ZONE_KINDS = ("inside", "exit")
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class Zone:
    """A zone: `kind` inside (allowed by default) or exit; area (x0, y0, x1, y1) in metres."""

    id: str
    name: str
    kind: str
    min_rssi: float  # a scanner's smoothed RSSI below this does not place a band in the zone
    area: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class Scanner:
    """A BLE scanner (one bleak adapter) covering one zone; position (x, y) in metres."""

    id: str
    zone: str
    position: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Engine settings for the venue; the timeouts are defaults a resident may override."""

    rssi_window_s: float = 5.0
    zone_confirm: int = 3  # consecutive observations a new zone must win
    zone_margin_db: float = 6.0  # by how much a new zone's scanner must beat the current zone's
    missing_after_s: int = 180
    strap_after_s: int = 15
    battery_low_pct: int = 15
    battery_ok_pct: int = 30
    scanner_grace_s: int = 30  # after a scanner is back, how long it gets to hear a band
    # exit evidence: a move into a zone the resident may not be in (an EXIT) needs its scanner to
    # beat every scanner of every other zone by exit_margin_db, exit_confirm times in a row
    exit_margin_db: float = 12.0
    exit_confirm: int = 3
    door_window_s: int = 30  # a door contact within this of the exit evidence confirms an EXIT
    door_lost_s: int = 15  # a band last heard around a door's opening and unheard this long: EXIT
    exit_blind_after_s: int = 60  # an exit zone with every scanner down this long: SCANNER_BLIND


@dataclass(frozen=True, slots=True)
class Door:
    """A door contact (a venue sensor's `door` channel) on the way out of an exit zone."""

    id: str
    zone: str  # the exit zone it leads out of
    sensor: str | None = None  # the venue sensor's device id
    channel: str | None = None  # the name of its door channel (config.json `channels[].name`)
    # the scanners that hear a band on its way to this door; a band that fades out after the
    # door opened is taken for an exit only when one of them heard it last (None: any scanner)
    approach: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Resident:
    """A resident's band and alert settings; `reference` is what families and staff see."""

    band: str
    reference: str
    allowed_zones: frozenset[str]
    quiet_hours: tuple[int, int] | None  # (start, end) minute of the day, venue time
    missing_after_s: int
    strap_after_s: int


@dataclass(frozen=True, slots=True)
class Venue:
    """A validated venue: zones, scanners, settings and residents, keyed by id."""

    name: str
    timezone: str
    settings: Settings
    zones: dict[str, Zone]
    scanners: dict[str, Scanner]
    residents: dict[str, Resident]
    doors: dict[str, Door] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # valid but weak: logged at load, printed by check-config

    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_quiet_hours(text: str) -> tuple[int, int]:
    """ "HH:MM-HH:MM" as (start, end) minutes of the day; the span may cross midnight."""
    m = _HHMM.fullmatch(text)
    if m is None:
        raise ValueError(f'expected "HH:MM-HH:MM" (24 h), got {text!r}')
    a, b, c, d = (int(g) for g in m.groups())
    start, end = a * 60 + b, c * 60 + d
    if start == end:
        raise ValueError(f"quiet hours {text!r} are empty")
    return start, end


def _pair(t: tomlcheck.Table, key: str, n: int) -> Any:
    value = t.data.get(key)
    t.used.add(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n or not all(type(v) in (int, float) for v in value):
        raise t.fail(key, f"expected an array of {n} numbers (metres), got {value!r}")
    return tuple(float(v) for v in value)


def parse(data: dict[str, Any], path: Path) -> Venue:
    """A Venue from a parsed TOML document; ConfigError naming path and key on any error."""
    top = tomlcheck.Table(path, data)
    name = top.ident("venue")
    tzname = top.text("timezone", "UTC")
    try:
        ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise top.fail("timezone", f"unknown IANA time zone {tzname!r}") from exc

    st = top.table("settings", required=False)
    d = Settings()
    settings = Settings(
        rssi_window_s=st.number("rssi_window_s", d.rssi_window_s, 0.5, 60),
        zone_confirm=st.integer("zone_confirm", d.zone_confirm, 1, 20),
        zone_margin_db=st.number("zone_margin_db", d.zone_margin_db, 0, 30),
        missing_after_s=st.integer("missing_after_s", d.missing_after_s, 10, 86_400),
        strap_after_s=st.integer("strap_after_s", d.strap_after_s, 0, 3_600),
        battery_low_pct=st.integer("battery_low_pct", d.battery_low_pct, 1, 99),
        battery_ok_pct=st.integer("battery_ok_pct", d.battery_ok_pct, 2, 100),
        scanner_grace_s=st.integer("scanner_grace_s", d.scanner_grace_s, 0, 3_600),
        exit_margin_db=st.number("exit_margin_db", d.exit_margin_db, 0, 40),
        exit_confirm=st.integer("exit_confirm", d.exit_confirm, 1, 20),
        door_window_s=st.integer("door_window_s", d.door_window_s, 1, 600),
        door_lost_s=st.integer("door_lost_s", d.door_lost_s, 5, 600),
        exit_blind_after_s=st.integer("exit_blind_after_s", d.exit_blind_after_s, 0, 3_600),
    )
    if settings.battery_ok_pct <= settings.battery_low_pct:
        raise st.fail("battery_ok_pct", f"must be above battery_low_pct ({settings.battery_low_pct})")
    st.no_unknown_keys()

    zones: dict[str, Zone] = {}
    for zt in top.tables("zones"):
        zid = zt.ident("id")
        if zid in zones:
            raise zt.fail("id", f"zone {zid!r} is defined twice")
        kind = zt.text("kind", "inside")
        if kind not in ZONE_KINDS:
            raise zt.fail("kind", f"expected one of {', '.join(ZONE_KINDS)}, got {kind!r}")
        area = _pair(zt, "area", 4)
        if area is not None and not (area[0] < area[2] and area[1] < area[3]):
            raise zt.fail("area", f"expected [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {list(area)}")
        zones[zid] = Zone(zid, zt.text("name", zid), kind, zt.number("min_rssi", -127.0, -127, 20), area)
        zt.no_unknown_keys()
    if not zones:
        raise top.fail("zones", "at least one [[zones]] table is required")

    scanners: dict[str, Scanner] = {}
    for sc in top.tables("scanners"):
        sid = sc.ident("id")
        if sid in scanners:
            raise sc.fail("id", f"scanner {sid!r} is defined twice")
        zone = sc.ident("zone")
        if zone not in zones:
            raise sc.fail("zone", f"no zone {zone!r} (zones: {', '.join(zones)})")
        scanners[sid] = Scanner(sid, zone, _pair(sc, "position", 2))
        sc.no_unknown_keys()

    doors: dict[str, Door] = {}
    contacts: dict[tuple[str, str], str] = {}
    for dt in top.tables("doors"):
        did = dt.ident("id")
        if did in doors:
            raise dt.fail("id", f"door {did!r} is defined twice")
        zone = dt.ident("zone")
        if zone not in zones:
            raise dt.fail("zone", f"no zone {zone!r} (zones: {', '.join(zones)})")
        if zones[zone].kind != "exit":
            raise dt.fail("zone", f"zone {zone!r} is not an exit zone (kind = {zones[zone].kind!r})")
        sensor = dt.ident("sensor", None)
        channel = dt.text("channel", None)
        if (sensor is None) != (channel is None):
            raise dt.fail("channel" if channel is None else "sensor", "sensor and channel go together")
        if channel is not None:
            if not channel.strip() or len(channel) > 32:
                raise dt.fail("channel", "expected 1-32 characters")
            other = contacts.get((sensor, channel))
            if other is not None:
                raise dt.fail("channel", f"{sensor} {channel!r} is already door {other!r}")
            contacts[(sensor, channel)] = did
        approach_raw = dt.data.get("approach")
        dt.used.add("approach")
        approach = None
        if approach_raw is not None:
            if (
                not isinstance(approach_raw, list)
                or not approach_raw
                or not all(isinstance(x, str) for x in approach_raw)
            ):
                raise dt.fail("approach", f"expected a non-empty array of scanner ids, got {approach_raw!r}")
            for x in approach_raw:
                if x not in scanners:
                    raise dt.fail("approach", f"no scanner {x!r} (scanners: {', '.join(scanners)})")
            approach = frozenset(approach_raw)
        doors[did] = Door(did, zone, sensor, channel, approach)
        dt.no_unknown_keys()

    inside = frozenset(z.id for z in zones.values() if z.kind == "inside")
    residents: dict[str, Resident] = {}
    for rt in top.tables("residents"):
        band = rt.ident("band")
        if band in residents:
            raise rt.fail("band", f"band {band!r} belongs to two residents")
        reference = rt.text("reference")
        if not reference.strip() or len(reference) > 80:
            raise rt.fail("reference", "expected 1-80 characters")
        allowed_raw = rt.data.get("allowed_zones")
        rt.used.add("allowed_zones")
        if allowed_raw is None:
            allowed = inside
        else:
            if not isinstance(allowed_raw, list) or not all(isinstance(z, str) for z in allowed_raw):
                raise rt.fail("allowed_zones", f"expected an array of zone ids, got {allowed_raw!r}")
            for z in allowed_raw:
                if z not in zones:
                    raise rt.fail("allowed_zones", f"no zone {z!r} (zones: {', '.join(zones)})")
            allowed = frozenset(allowed_raw)
        quiet_text = rt.text("quiet_hours", None)
        try:
            quiet = None if quiet_text is None else parse_quiet_hours(quiet_text)
        except ValueError as exc:
            raise rt.fail("quiet_hours", str(exc)) from exc
        residents[band] = Resident(
            band,
            reference,
            allowed,
            quiet,
            rt.integer("missing_after_s", settings.missing_after_s, 10, 86_400),
            rt.integer("strap_after_s", settings.strap_after_s, 0, 3_600),
        )
        rt.no_unknown_keys()
    top.no_unknown_keys()
    return Venue(name, tzname, settings, zones, scanners, residents, doors, _warnings(path, zones, scanners, doors))


def _warnings(
    path: Path, zones: dict[str, Zone], scanners: dict[str, Scanner], doors: dict[str, Door]
) -> tuple[str, ...]:
    out = []
    for i, z in enumerate(zones.values()):
        if z.kind != "exit":
            continue
        n = sum(1 for sc in scanners.values() if sc.zone == z.id)
        has_door = any(d.zone == z.id for d in doors.values())
        door = "" if has_door else " or map a door contact to it ([[doors]])"
        if n == 0:
            out.append(
                f"{path}: zones[{i}] ({z.id}): exit zone with no scanner: EXIT is never raised for it"
                f"{' except through its door contact' if has_door else ''}; add a scanner{door}"
            )
        elif n == 1:
            out.append(
                f"{path}: zones[{i}] ({z.id}): exit zone with one scanner: while it is down the exit is "
                f"not watched (SCANNER_BLIND after exit_blind_after_s); add a second scanner{door}"
            )
    return tuple(out)


def load(path: Path) -> Venue:
    """Read and validate a venue file (warnings are logged); ConfigError naming the file and key."""
    venue = parse(tomlcheck.load(path), path)
    for w in venue.warnings:
        log.warning("venue_warning %s", w)
    return venue


__all__ = [
    "ZONE_KINDS",
    "ConfigError",
    "Door",
    "Resident",
    "Scanner",
    "Settings",
    "Venue",
    "Zone",
    "load",
    "parse",
]
