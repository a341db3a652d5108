"""One description of a venue (YAML) -> the gateway's venue file and the simulation's air.

    venue: rosewood-house            # id, 1-32 of A-Z a-z 0-9 . _ -
    name: Rosewood House             # what people read, any script (default: the id)
    timezone: Asia/Shanghai          # IANA name (default UTC)
    settings: {zone_confirm: 3}      # optional: the alert engine's [settings] (wristband-alerts.md)
    air: {loss: 0.02, seed: 1}       # optional: the virtual air's radio model (hil_tests/sim/air.py)
    zones:
      - {id: lobby, name: 大厅, rect: [0, 0, 10, 8]}          # kind inside (default) or exit
      - {id: front-door, name: 前门, kind: exit, rect: [10, 0, 12, 3], min_rssi: -82}
    scanners:
      - {id: RN1, zone: lobby, at: [5, 4]}
    doors:
      - {id: front, zone: front-door, sensor: VS-0007, channel: front-door, approach: [RN1]}
    residents:
      - {reference: "Resident 4 (room 4)", allowed_zones: [lobby], quiet_hours: "22:00-07:00"}
      - {reference: "Resident 7", band: WB-00AA}               # band: optional (below)

`build` writes the gateway's venue file (the TOML agent/gateway/wristbands/venue.py loads,
docs/wristband-alerts.md) and, with `air`, the virtual air's venue (YAML that
hil_tests/sim/air.py `parse_venue` takes): the zones, scanners and residents are written once,
here, and both follow. A resident's band comes from `band:` or from the station's inventory:
the band flashed with `flash --kind wristband --resident REF` for this venue; a resident
with no band is an error (a family would not be told), and so are a resident with two bands
in the inventory and no `band:` (the gateway would watch one of them), a band for two
residents and a band registered for a resident the description does not list. What the
gateway's parser would refuse is refused here first. Every mistake names the file and the line.

The scenario rig (hil_tests/runner.py) builds its agent's venue file with `alerts_toml` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from agent.shared.protocol import IDENT_RE
from provisioning.errors import ProvisionError

ZONE_KINDS = ("inside", "exit")
_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d")
SETTINGS = {
    "rssi_window_s": float, "zone_confirm": int, "zone_margin_db": float, "missing_after_s": int,
    "strap_after_s": int, "battery_low_pct": int, "battery_ok_pct": int, "scanner_grace_s": int,
    "exit_margin_db": float, "exit_confirm": int, "door_window_s": int, "door_lost_s": int,
    "exit_blind_after_s": int,
}  # fmt: skip
AIR_MODEL = ("tx_power_dbm", "exponent", "shadowing_db", "loss", "sensitivity_dbm", "wall_db", "seed")


class VenueError(ProvisionError):
    """A venue description that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str
    kind: str = "inside"
    rect: tuple[float, float, float, float] | None = None
    min_rssi: float | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Scanner:
    id: str
    zone: str
    at: tuple[float, float] | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Door:
    id: str
    zone: str
    sensor: str | None = None
    channel: str | None = None
    approach: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Resident:
    reference: str
    band: str | None = None
    allowed_zones: tuple[str, ...] | None = None
    quiet_hours: str | None = None
    missing_after_s: int | None = None
    strap_after_s: int | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Venue:
    id: str
    name: str
    timezone: str = "UTC"
    zones: tuple[Zone, ...] = ()
    scanners: tuple[Scanner, ...] = ()
    doors: tuple[Door, ...] = ()
    residents: tuple[Resident, ...] = ()
    settings: Mapping[str, float | int] = field(default_factory=dict)
    air: Mapping[str, float] = field(default_factory=dict)


# --- reading, with lines --------------------------------------------------------------------


class _Lines(yaml.SafeLoader):
    """PyYAML's safe loader, keeping the line of every mapping and of each of its keys."""


class _Map(dict[str, Any]):
    line = 0
    lines: dict[str, int]


def _construct_map(loader: _Lines, node: yaml.MappingNode) -> _Map:
    m = _Map()
    m.line = node.start_mark.line + 1
    m.lines = {}
    for k, v in node.value:
        key = loader.construct_object(k, deep=True)
        if isinstance(key, (list, dict)):  # `? [a]` or `{a: 1}: b`: valid YAML, never a key of ours
            raise VenueError(f"{loader.name}:{k.start_mark.line + 1}: expected a key (a word), got {key!r}")
        if key in m:
            raise VenueError(f"{loader.name}:{k.start_mark.line + 1}: {key!r} given twice")
        m[key] = loader.construct_object(v, deep=True)
        m.lines[str(key)] = k.start_mark.line + 1
    return m


_Lines.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _At:
    """Errors for one mapping of the file: `file:line: where.key: message`."""

    def __init__(self, path: Path, m: Any, where: str, line: int) -> None:
        if not isinstance(m, _Map):
            raise VenueError(f"{path}:{line}: {where}: expected a mapping (key: value)")
        self.path, self.m, self.where = path, m, where

    def fail(self, key: str | None, message: str) -> VenueError:
        line = self.m.lines.get(key, self.m.line) if key else self.m.line
        what = f"{self.where}.{key}" if key and self.where else (key or self.where)
        return VenueError(f"{self.path}:{line}: {what + ': ' if what else ''}{message}")

    def keys(self, known: Sequence[str], required: Sequence[str] = ()) -> None:
        for k in self.m:
            if k not in known:
                raise self.fail(str(k), f"unknown key (known here: {', '.join(known)})")
        for k in required:
            if k not in self.m:
                raise self.fail(None, f"missing {k!r}")

    def ident(self, key: str, default: str | None = None) -> str:
        v = self.m.get(key, default)
        if not isinstance(v, str) or not IDENT_RE.fullmatch(v):
            raise self.fail(key, f"expected an id of 1-32 characters from A-Z a-z 0-9 . _ -, got {v!r}")
        return v

    def name(self, key: str, default: str) -> str:
        v = self.m.get(key, default)
        if not isinstance(v, str) or not v.strip() or len(v) > 80 or not v.isprintable():
            raise self.fail(key, f"expected 1-80 printable characters (any script), got {v!r}")
        return v

    def numbers(self, key: str, n: int) -> tuple[float, ...] | None:
        v = self.m.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or len(v) != n or not all(type(x) in (int, float) for x in v):
            raise self.fail(key, f"expected {n} numbers (metres), got {v!r}")
        return tuple(float(x) for x in v)

    def items(self, key: str) -> list[_At]:
        v = self.m.get(key, [])
        if not isinstance(v, list):
            raise self.fail(key, "expected a list (lines starting with '- ')")
        line = self.m.lines.get(key, self.m.line)
        return [_At(self.path, x, f"{key}[{i}]", getattr(x, "line", line)) for i, x in enumerate(v)]


def load(path: Path) -> Venue:
    """Read and check a venue description; VenueError names the file, line and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VenueError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    loader = _Lines(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise VenueError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()
    return _venue(_At(path, data, "", 1))


def _venue(top: _At) -> Venue:
    top.keys(
        ("venue", "name", "timezone", "settings", "air", "zones", "scanners", "doors", "residents"), ("venue", "zones")
    )
    vid = top.ident("venue")
    tz = top.m.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise top.fail("timezone", f"unknown IANA time zone {tz!r} (e.g. Asia/Shanghai)") from None
    zones = _zones(top)
    scanners = _scanners(top, zones)
    return Venue(
        vid,
        top.name("name", vid),
        str(tz),
        zones,
        scanners,
        _doors(top, zones, scanners),
        _residents(top, zones),
        _table(top, "settings", SETTINGS),
        _table(top, "air", dict.fromkeys(AIR_MODEL, float)),
    )


def _table(top: _At, key: str, known: Mapping[str, type]) -> dict[str, float | int]:
    if key not in top.m:
        return {}
    t = _At(top.path, top.m[key], key, top.m.lines.get(key, top.m.line))
    t.keys(tuple(known))
    out: dict[str, float | int] = {}
    for k, v in t.m.items():
        ok = type(v) is int or (known[k] is float and type(v) is float)
        if not ok:
            raise t.fail(k, f"expected {'an integer' if known[k] is int else 'a number'}, got {v!r}")
        out[k] = v
    return out


def _zones(top: _At) -> tuple[Zone, ...]:
    zones: list[Zone] = []
    for z in top.items("zones"):
        z.keys(("id", "name", "kind", "rect", "min_rssi"), ("id",))
        zid = z.ident("id")
        if any(o.id == zid for o in zones):
            raise z.fail("id", f"zone {zid!r} is described twice")
        kind = z.m.get("kind", "inside")
        if kind not in ZONE_KINDS:
            raise z.fail("kind", f"expected inside or exit, got {kind!r}")
        rect = z.numbers("rect", 4)
        if rect is not None and not (rect[0] < rect[2] and rect[1] < rect[3]):
            raise z.fail("rect", "expected [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        rssi = z.m.get("min_rssi")
        if rssi is not None and (type(rssi) not in (int, float) or not -127 <= rssi <= 20):
            raise z.fail("min_rssi", f"expected dBm from -127 to 20, got {rssi!r}")
        zones.append(Zone(zid, z.name("name", zid), kind, rect, None if rssi is None else float(rssi), z.m.line))  # type: ignore[arg-type]
    if not zones:
        raise top.fail("zones", "at least one zone is needed")
    return tuple(zones)


def _zone_ref(at: _At, key: str, zones: Sequence[Zone]) -> str:
    zid = at.ident(key)
    if zid not in {z.id for z in zones}:
        raise at.fail(key, f"no zone {zid!r} (zones: {', '.join(z.id for z in zones)})")
    return zid


def _scanners(top: _At, zones: Sequence[Zone]) -> tuple[Scanner, ...]:
    out: list[Scanner] = []
    for s in top.items("scanners"):
        s.keys(("id", "zone", "at"), ("id", "zone"))
        sid = s.ident("id")
        if any(o.id == sid for o in out):
            raise s.fail("id", f"scanner {sid!r} is described twice")
        at = s.numbers("at", 2)
        out.append(Scanner(sid, _zone_ref(s, "zone", zones), None if at is None else (at[0], at[1]), s.m.line))
    return tuple(out)


def _doors(top: _At, zones: Sequence[Zone], scanners: Sequence[Scanner]) -> tuple[Door, ...]:
    out: list[Door] = []
    for d in top.items("doors"):
        d.keys(("id", "zone", "sensor", "channel", "approach"), ("id", "zone"))
        did = d.ident("id")
        if any(o.id == did for o in out):
            raise d.fail("id", f"door {did!r} is described twice")
        zone = _zone_ref(d, "zone", zones)
        if next(z for z in zones if z.id == zone).kind != "exit":
            raise d.fail("zone", f"zone {zone!r} is not an exit zone (a door contact leads out of one)")
        sensor = d.ident("sensor") if "sensor" in d.m else None
        channel = d.m.get("channel")
        if (sensor is None) != (channel is None):
            raise d.fail("channel" if channel is None else "sensor", "sensor and channel go together")
        # as the gateway's venue file takes it (agent/gateway/wristbands/venue.py): what it
        # would refuse is refused here, at the description's line
        if channel is not None and (
            not isinstance(channel, str) or not channel.strip() or len(channel) > 32 or not channel.isprintable()
        ):
            raise d.fail("channel", f"expected the sensor's channel name (1-32 characters), got {channel!r}")
        twin = next((o for o in out if o.sensor is not None and (o.sensor, o.channel) == (sensor, channel)), None)
        if twin is not None:
            raise d.fail("channel", f"{sensor} {channel!r} is already the contact of door {twin.id!r}")
        approach = d.m.get("approach", [])
        ids = {s.id for s in scanners}
        if not isinstance(approach, list) or any(not isinstance(a, str) or a not in ids for a in approach):
            raise d.fail("approach", f"expected a list of scanner ids, got {approach!r}")
        out.append(Door(did, zone, sensor, channel, tuple(approach)))
    return tuple(out)


def _residents(top: _At, zones: Sequence[Zone]) -> tuple[Resident, ...]:
    out: list[Resident] = []
    for r in top.items("residents"):
        r.keys(
            ("reference", "band", "allowed_zones", "quiet_hours", "missing_after_s", "strap_after_s"), ("reference",)
        )
        ref = r.name("reference", "")
        if any(o.reference == ref for o in out):
            raise r.fail("reference", f"resident {ref!r} is described twice")
        allowed = r.m.get("allowed_zones")
        ids = {z.id for z in zones}
        if allowed is not None and (
            not isinstance(allowed, list) or any(not isinstance(a, str) or a not in ids for a in allowed)
        ):
            raise r.fail("allowed_zones", f"expected a list of zone ids, got {allowed!r}")
        quiet = r.m.get("quiet_hours")
        if quiet is not None and not (isinstance(quiet, str) and _HHMM.fullmatch(quiet)):
            raise r.fail("quiet_hours", f'expected "HH:MM-HH:MM" (24 h), got {quiet!r}')
        timeouts = {}
        for key, lo, hi in (("missing_after_s", 10, 86_400), ("strap_after_s", 0, 3_600)):
            v = r.m.get(key)
            if v is not None and (type(v) is not int or not lo <= v <= hi):
                raise r.fail(key, f"expected an integer from {lo} to {hi}, got {v!r}")
            timeouts[key] = v
        band = r.ident("band") if "band" in r.m else None
        owner = next((o for o in out if band is not None and o.band == band), None)
        if owner is not None:
            raise r.fail(
                "band", f"band {band} belongs to two residents: {owner.reference!r} (line {owner.line}) and {ref!r}"
            )
        out.append(Resident(ref, band, None if allowed is None else tuple(allowed), quiet, line=r.m.line, **timeouts))
    return tuple(out)


# --- what it makes --------------------------------------------------------------------------


def _whence(r: Resident) -> str:
    return "its band:" if r.band else "the inventory's band for it"


def with_bands(venue: Venue, registered: Mapping[str, tuple[str, ...]], source: Path) -> Venue:
    """Each resident's band: given, or the band registered for that reference (resident ->
    band ids, from the inventory); VenueError for a resident without one, a resident with two
    registered bands and nothing to choose between them, a band for a resident the description
    lacks, and a band that would belong to two residents."""
    residents: list[Resident] = []
    owners: dict[str, Resident] = {}
    for r in venue.residents:
        found = registered.get(r.reference, ())
        if r.band is None and len(found) > 1:
            # a spare or a replacement not revoked: the gateway would watch only one of them
            raise VenueError(
                f"{source}:{r.line}: resident {r.reference!r} has {len(found)} bands in the inventory "
                f"({', '.join(sorted(found))}): revoke the one no longer worn "
                "(guardian-provision revoke ...) or give band:"
            )
        band = r.band or (found[0] if found else None)
        if band is None:
            raise VenueError(
                f"{source}:{r.line}: resident {r.reference!r} has no band: flash one with "
                f"`guardian-provision flash --kind wristband --resident {json.dumps(r.reference)} ...` or give band:"
            )
        owner = owners.get(band)
        if owner is not None:
            raise VenueError(
                f"{source}:{r.line}: band {band} belongs to two residents: {owner.reference!r} "
                f"(line {owner.line}, {_whence(owner)}) and {r.reference!r} ({_whence(r)})"
            )
        owners[band] = r
        residents.append(
            Resident(r.reference, band, r.allowed_zones, r.quiet_hours, r.missing_after_s, r.strap_after_s, r.line)
        )
    listed = {r.reference for r in venue.residents}
    stray = sorted(ref for ref in registered if ref not in listed)
    if stray:
        raise VenueError(
            f"{source}: band(s) {', '.join(b for s in stray for b in registered[s])} registered for resident(s) "
            f"{', '.join(map(repr, stray))} the description does not list: add them under residents:"
        )
    return Venue(
        venue.id, venue.name, venue.timezone, venue.zones, venue.scanners, venue.doors, tuple(residents),
        venue.settings, venue.air,
    )  # fmt: skip


def _toml(v: object) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def alerts_toml(venue: Venue, source: str = "") -> str:
    """The gateway's venue file (agent/gateway/wristbands/venue.py), every resident with a band."""
    out = [f"# the gateway's venue file, made by guardian-provision venue build{' from ' + source if source else ''}"]
    out.append("# do not edit: change the description and build it again")
    out += [f"venue = {_toml(venue.id)}", f"timezone = {_toml(venue.timezone)}"]
    if venue.settings:
        out += ["", "[settings]", *(f"{k} = {_toml(v)}" for k, v in venue.settings.items())]
    for z in venue.zones:
        out += ["", "[[zones]]", f"id = {_toml(z.id)}", f"name = {_toml(z.name)}", f"kind = {_toml(z.kind)}"]
        out += [f"min_rssi = {_toml(z.min_rssi)}"] if z.min_rssi is not None else []
        out += [f"area = {_toml(list(z.rect))}"] if z.rect is not None else []
    for s in venue.scanners:
        out += ["", "[[scanners]]", f"id = {_toml(s.id)}", f"zone = {_toml(s.zone)}"]
        out += [f"position = {_toml(list(s.at))}"] if s.at is not None else []
    for d in venue.doors:
        out += ["", "[[doors]]", f"id = {_toml(d.id)}", f"zone = {_toml(d.zone)}"]
        out += [f"sensor = {_toml(d.sensor)}", f"channel = {_toml(d.channel)}"] if d.sensor else []
        out += [f"approach = {_toml(list(d.approach))}"] if d.approach else []
    for r in venue.residents:
        if r.band is None:
            raise VenueError(f"resident {r.reference!r} has no band")
        out += ["", "[[residents]]", f"band = {_toml(r.band)}", f"reference = {_toml(r.reference)}"]
        for key in ("allowed_zones", "quiet_hours", "missing_after_s", "strap_after_s"):
            value = getattr(r, key)
            if value is not None:
                out.append(f"{key} = {_toml(list(value) if key == 'allowed_zones' else value)}")
    return "\n".join(out) + "\n"


def air_venue(venue: Venue, source: str = "") -> dict[str, Any]:
    """The virtual air's venue (hil_tests/sim/air.py parse_venue): zones by id with their
    rectangles, scanners with their positions, the radio model."""
    missing = [f"zone {z.id} (line {z.line})" if z.line else f"zone {z.id}" for z in venue.zones if z.rect is None]
    missing += [
        f"scanner {s.id} (line {s.line})" if s.line else f"scanner {s.id}" for s in venue.scanners if s.at is None
    ]
    if missing:
        raise VenueError(
            f"{source + ': ' if source else ''}the virtual air needs rect: for every zone and at: for every "
            f"scanner; missing for {', '.join(missing)}"
        )
    return {
        "name": venue.id,
        "model": dict(venue.air),
        "zones": [{"name": z.id, "rect": list(z.rect or ()), "exit": z.kind == "exit"} for z in venue.zones],
        "scanners": [{"name": s.id, "at": list(s.at or ())} for s in venue.scanners],
    }
