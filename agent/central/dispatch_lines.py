"""What a dispatcher reads from `guardian-agent verify`: one line per event or problem.

    14:03:07 CST  ALARM         P0  venue-1 / hall        AP-0001/1/2   via GW-1   12 ms
    14:03:09 CST  SOS           P0  rosewood / garden     WB-0001/1700000000/5   via GW-1   35 ms   Resident 4 (room 4)
    !! GAP  GW-1 (epoch 1700000000): batches 5, 6 never arrived

The time is when the gateway received the event, in the venue's time zone (`--timezone`); the
latency is from the gateway receiving it to central verifying it. The reference (DEVICE/BOOT/SEQ)
is what `guardian-agent command ... ack` takes. Zones: a wristband alert carries the zone it was
raised in; for posts and sensors they come from the device list central holds (`--devices`:
provisioning's export, or the device registry), keyed by device id. Telemetry (P2: heartbeats)
is left out unless asked for (`--telemetry`). Chain and audit problems start with `!!`,
notices (a new epoch, joining a chain) with `--`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.shared import tomlcheck
from agent.shared.errors import ConfigError
from agent.shared.protocol import EventType

# how each problem kind reads; the others are printed with their fields
_PROBLEMS = {
    "bad_signature": "!! BAD SIGNATURE",
    "unknown_signer": "!! UNKNOWN GATEWAY",
    "revoked_gateway": "!! REVOKED GATEWAY",
    "malformed": "!! MALFORMED BATCH",
    "fork": "!! FORK (two different batches with one sequence number)",
    "chain_break": "!! CHAIN BREAK (a batch does not follow the one before)",
    "gap": "!! GAP",
    "audit_failed": "!! AUDIT FAILED (the device MAC does not verify)",
    "stale_epoch": "!! STALE EPOCH",
    "new_epoch": "-- new hash chain (the gateway lost its chain state)",
    "joined": "-- joined the gateway's chain (batches before it were sent before this verifier started)",
    "reordered": "-- a late batch arrived and filled its gap",
}
_QUIET = ("duplicate_batch",)  # resends: central dedupes them; counted in the summary


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    kind: str
    venue: str
    zone: str


def load_devices(path: Path) -> dict[str, DeviceInfo]:
    """Device id -> kind, venue, zone from provisioning's export (.json, .csv) or a registry (.toml).

    Only those three fields are read: keys in a registry file are not kept. The export's
    `zone_name` (the zone as people read it, e.g. 大厅) is shown where it is given.
    """
    path = Path(path)
    try:
        if path.suffix == ".toml":
            top = tomlcheck.Table(path, tomlcheck.load(path))
            rows: list[Mapping[str, Any]] = [t.data for t in top.tables("device")]
        elif path.suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise ConfigError(f"{path}: expected provisioning's export (.json or .csv) or a registry (.toml)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the device list: {exc}") from None
    if not isinstance(rows, list):
        raise ConfigError(f"{path}: expected a list of devices")
    out: dict[str, DeviceInfo] = {}
    for i, row in enumerate(rows):
        fields = [row.get(k) if isinstance(row, Mapping) else None for k in ("id", "kind", "venue", "zone")]
        dev_id, kind, venue, zone = (f if isinstance(f, str) else "" for f in fields)
        if not (dev_id and kind and venue and isinstance(fields[3], str)):
            raise ConfigError(f"{path}: device {i + 1}: id, kind, venue and zone are required text")
        name = row.get("zone_name") if isinstance(row, Mapping) else None
        out[dev_id] = DeviceInfo(kind, venue, name if isinstance(name, str) and name else zone)
    return out


def parse_timezones(values: list[str]) -> tuple[zoneinfo.ZoneInfo | None, dict[str, zoneinfo.ZoneInfo]]:
    """`--timezone ZONE` (every venue) and `--timezone VENUE=ZONE`, IANA names."""
    default: zoneinfo.ZoneInfo | None = None
    per_venue: dict[str, zoneinfo.ZoneInfo] = {}
    for value in values:
        venue, sep, name = value.rpartition("=")
        try:
            tz = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"--timezone {value!r}: {name!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None
        if sep:
            per_venue[venue] = tz
        else:
            default = tz
    return default, per_venue


class Lines:
    """Turns verifier records into dispatcher lines (None: not shown)."""

    def __init__(
        self,
        devices: Mapping[str, DeviceInfo],
        timezone: zoneinfo.ZoneInfo | None = None,
        venue_timezones: Mapping[str, zoneinfo.ZoneInfo] | None = None,
        telemetry: bool = False,
    ) -> None:
        self.devices = devices
        self.timezone = timezone  # None: this machine's local time zone
        self.venue_timezones = dict(venue_timezones or {})
        self.telemetry = telemetry

    def __call__(self, rec: dict[str, Any]) -> str | None:
        kind = rec["kind"]
        if kind == "event":
            return self.event(rec)
        if kind == "summary":
            counts = {k: v for k, v in rec.items() if k != "kind"}
            return "summary: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing received")
        if kind in _QUIET:
            return None
        head = _PROBLEMS.get(kind, f"!! {kind.upper()}")
        detail = ", ".join(f"{k} {_brief(v)}" for k, v in rec.items() if k != "kind")
        return f"{head}: {detail}" if detail else head

    def event(self, rec: dict[str, Any]) -> str | None:
        if rec["priority"] >= 2 and not self.telemetry:
            return None
        venue = rec.get("venue") or self._device_venue(rec["device"]) or "?"
        zone = self.zone(rec) or "-"
        when = self.local_time(rec["received_ms"], venue)
        latency = rec.get("gateway_to_central_ms")
        parts = [
            when,
            f"{rec['type_name']:<14}",
            f"P{rec['priority']}",
            f"{venue} / {zone}",
            rec["ref"],
            f"via {rec['gateway']}",
            "" if latency is None else f"{latency} ms",
        ]
        detail = describe(rec, self._zone_of)
        if detail:
            parts.append(detail)
        return "  ".join(p for p in parts if p)

    def zone(self, rec: dict[str, Any]) -> str | None:
        data = rec.get("data", {})
        info = self.devices.get(rec["device"])
        if rec["device"] == rec["gateway"]:
            # the gateway's events about a device (DEVICE_OFFLINE, ...) name it in key 1
            named = data.get("1")
            return self._zone_of(named) if isinstance(named, str) else None
        if isinstance(data.get("2"), str) and (info is None or info.kind == "wristband"):
            return str(data["2"])  # a wristband alert: the zone it was raised in
        return info.zone if info is not None else None

    def local_time(self, ms: int, venue: str) -> str:
        tz = self.venue_timezones.get(venue, self.timezone)
        t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        local = t.astimezone(tz) if tz is not None else t.astimezone()
        return local.strftime("%Y-%m-%d %H:%M:%S %Z")

    def _zone_of(self, device: str) -> str | None:
        info = self.devices.get(device)
        return info.zone if info is not None else None

    def _device_venue(self, device: str) -> str | None:
        info = self.devices.get(device)
        return info.venue if info is not None else None


Data = Mapping[str, Any]
ZoneOf = Callable[[str], "str | None"]


def _presses(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    return f"{d['1']} presses" if isinstance(d.get("1"), int) else ""


def _held(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    return f"held {d['1'] / 1000:.1f} s" if isinstance(d.get("1"), int) else ""


def _tamper(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    return "enclosure opened" if d.get("1") == 1 else "enclosure closed"


def _device_state(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    device = d.get("1")
    if not isinstance(device, str):
        return ""
    where = zone_of(device)
    ms = d.get("2")
    verb = "silent" if rec["type"] == EventType.DEVICE_OFFLINE else "was offline"
    took = f", {verb} {ms // 1000} s" if isinstance(ms, int) else ""
    why = f" ({d['3']})" if isinstance(d.get("3"), str) else ""
    return f"device {device}{f' in {where}' if where else ''}{took}{why}"


def _notified(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    return f"people told of {d.get('1')}/{d.get('2')}/{d.get('3')} by the gateway"


def _sensor(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    return f"channel {d['3']}, reading {d.get('2')}" if isinstance(d.get("3"), str) else ""


def _band(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    return str(d["1"]) if isinstance(d.get("1"), str) else ""  # the resident's reference


def _blind(rec: dict[str, Any], d: Data, zone_of: ZoneOf) -> str:
    if not isinstance(d.get("1"), str):
        return ""
    # the gateway's own (a scanner hears nothing) or a band's (its zone's scanners are down)
    return f"scanner {d['1']} hears nothing" if rec["device"] == rec["gateway"] else str(d["1"])


_DESCRIBE: dict[int, Callable[[dict[str, Any], Data, ZoneOf], str]] = {
    EventType.ALARM: _presses,
    EventType.ALARM_HELD: _held,
    EventType.TAMPER: _tamper,
    EventType.DEVICE_OFFLINE: _device_state,
    EventType.DEVICE_ONLINE: _device_state,
    EventType.NOTIFIED: _notified,
    EventType.SCANNER_BLIND: _blind,
    **dict.fromkeys(
        (
            EventType.SMOKE,
            EventType.GAS,
            EventType.DOOR_HELD_OPEN,
            EventType.EXTINGUISHER,
            EventType.SENSOR_CLEAR,
            EventType.SENSOR_FAULT,
        ),
        _sensor,
    ),
    **dict.fromkeys(
        (
            EventType.SOS,
            EventType.FALL,
            EventType.EXIT,
            EventType.MISSING,
            EventType.STRAP_REMOVED,
            EventType.BATTERY_LOW,
            EventType.BACK_INSIDE,
        ),
        _band,
    ),
}


def describe(rec: dict[str, Any], zone_of: ZoneOf) -> str:
    """The few words an event's data says (docs/protocol.md §2.1, §4.4); "" when nothing."""
    how = _DESCRIBE.get(rec["type"])
    return how(rec, rec.get("data", {}), zone_of) if how is not None else ""


def _brief(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)
