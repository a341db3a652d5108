"""Care circles: who is told of which alert, in which order, in which language, on which channels.

One TOML file per venue, validated at load into frozen dataclasses; every error names the file
and the dotted key (agent/tomlcheck.py), and never prints a channel URL (they hold secrets):

    venue = "rosewood-house"            # the venue id in central's topics
    name = "Rosewood House"             # shown in messages (default: the venue id)
    timezone = "Europe/London"          # IANA name: times in messages
    escalate_after_s = 120              # 1-3600: no acknowledgement -> the next round

    [[contacts]]
    id = "li-wei"                       # 1-32 of A-Z a-z 0-9 . _ -
    name = "Li Wei"
    language = "zh"                     # zh | en
    channels = ["dingtalk://TOKEN/", "gsm://+8613800138000"]
    alerts = ["SOS", "FALL", "EXIT", "MISSING", "BATTERY_LOW"]   # default: the P0 wristband alerts

    [[staff]]                           # the venue's staff: the last round, and venue alarms
    id = "night-desk"
    ...same keys; alerts default: ALARM, ALARM_HELD, SMOKE, GAS, DEVICE_OFFLINE

    [[residents]]
    band = "WB-0001"                    # the band id the gateway reports
    reference = "Resident 4 (room 4)"   # shown when the alert carries none
    circle = ["li-wei", ["li-na", "zhang-min"]]   # rounds: one contact, or several at once
    escalate_after_s = 60               # optional override
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.notify import channels
from agent.notify.alert import (
    ALERT_NAMES,
    DEFAULT_CONTACT_ALERTS,
    DEFAULT_STAFF_ALERTS,
    WRISTBAND_P0,
    Alert,
)
from agent.notify.messages import LANGUAGES
from agent.shared import tomlcheck

ESCALATE_RANGE = (1.0, 3600.0)
MAX_CHANNELS = 8
MAX_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str
    language: str
    channels: tuple[channels.Channel, ...]
    alerts: frozenset[int]
    staff: bool

    def wants(self, alert_type: int) -> bool:
        return alert_type in self.alerts


@dataclass(frozen=True, slots=True)
class Resident:
    band: str
    reference: str
    rounds: tuple[tuple[str, ...], ...]
    escalate_after_s: float


@dataclass(frozen=True, slots=True)
class Circle:
    """One venue's care circles and staff."""

    path: Path
    venue: str
    name: str
    timezone: zoneinfo.ZoneInfo
    escalate_after_s: float
    contacts: dict[str, Contact]  # family contacts and staff, by id
    staff: tuple[str, ...]
    residents: dict[str, Resident]  # by band id

    def rounds(self, alert: Alert) -> list[tuple[Contact, ...]]:
        """Who is told, round by round. Round 0 goes out at once; the next after escalate_after(alert)."""
        staff = tuple(self.contacts[s] for s in self.staff)
        if alert.wristband:
            resident = self.residents.get(alert.device)
            family = [] if resident is None else [tuple(self.contacts[c] for c in r) for r in resident.rounds]
            if alert.type in WRISTBAND_P0:
                # staff who asked for this type hear it at once; every staff member is the last round
                eager = tuple(s for s in staff if s.wants(alert.type))
                rounds = [tuple(c for c in r if c.wants(alert.type)) for r in family]
                if rounds:
                    rounds[0] = rounds[0] + eager
                else:
                    rounds = [eager]
                rest = tuple(s for s in staff if s not in eager)
                if rest:
                    rounds.append(rest)
                return [r for r in rounds if r]
            # P1: everyone in the circle and staff who asked for it, once
            told = [c for r in family for c in r if c.wants(alert.type)] + [s for s in staff if s.wants(alert.type)]
            return [tuple(dict.fromkeys(told))] if told else []
        if alert.exit_watch is not None:
            # an exit no scanner watches (and its end) is every staff member's, as a venue alarm
            return [staff]
        return [tuple(s for s in staff if s.wants(alert.type))] if any(s.wants(alert.type) for s in staff) else []

    def escalate_after(self, alert: Alert) -> float:
        resident = self.residents.get(alert.device) if alert.wristband else None
        return resident.escalate_after_s if resident is not None else self.escalate_after_s

    def reference(self, alert: Alert) -> str | None:
        if alert.resident:
            return alert.resident
        resident = self.residents.get(alert.device) if alert.wristband else None
        return resident.reference if resident is not None else None


def _raw(t: tomlcheck.Table, key: str) -> Any:
    """A value of any type (None when absent), marked as used for no_unknown_keys()."""
    t.used.add(key)
    return t.data.get(key)


def _contact(t: tomlcheck.Table, staff: bool, modem: bool) -> Contact:
    cid = t.ident("id")
    name = t.text("name", cid)
    language = t.text("language", "en")
    if language not in LANGUAGES:
        raise t.fail("language", f"expected one of {', '.join(LANGUAGES)}, got {language!r}")
    raw = _raw(t, "channels")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_CHANNELS:
        raise t.fail("channels", f"expected a list of 1-{MAX_CHANNELS} channel URLs")
    chans: list[channels.Channel] = []
    for i, url in enumerate(raw):
        if not isinstance(url, str):
            raise t.fail(f"channels[{i}]", f"expected a URL string, got {type(url).__name__}")
        try:
            chans.append(channels.parse(url.strip(), modem=modem))
        except channels.ChannelURLError as exc:
            raise t.fail(f"channels[{i}]", str(exc)) from None
    if len({c.fingerprint for c in chans}) != len(chans):
        raise t.fail("channels", "the same channel URL is listed twice")
    default = DEFAULT_STAFF_ALERTS if staff else DEFAULT_CONTACT_ALERTS
    names = _raw(t, "alerts")
    if names is None:
        alerts = frozenset(default)
    else:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise t.fail("alerts", "expected a list of alert names")
        unknown = [n for n in names if n not in ALERT_NAMES]
        if unknown:
            raise t.fail("alerts", f"unknown alert {unknown[0]!r} (known: {', '.join(sorted(ALERT_NAMES))})")
        alerts = frozenset(ALERT_NAMES[n] for n in names)
    t.no_unknown_keys()
    return Contact(cid, name, language, tuple(chans), alerts, staff)


def _rounds(t: tomlcheck.Table, contacts: dict[str, Contact]) -> tuple[tuple[str, ...], ...]:
    raw = _raw(t, "circle")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ROUNDS:
        raise t.fail("circle", f"expected a list of 1-{MAX_ROUNDS} rounds (a contact id, or a list of ids)")
    rounds: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        ids = [item] if isinstance(item, str) else item
        if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
            raise t.fail(f"circle[{i}]", "expected a contact id or a non-empty list of contact ids")
        for cid in ids:
            contact = contacts.get(cid)
            if contact is None:
                raise t.fail(f"circle[{i}]", f"no contact {cid!r} in [[contacts]]")
            if contact.staff:
                raise t.fail(f"circle[{i}]", f"{cid!r} is staff: staff are told after the circle, leave them out")
            if cid in seen:
                raise t.fail(f"circle[{i}]", f"{cid!r} is already in an earlier round")
            seen.add(cid)
        rounds.append(tuple(ids))
    return tuple(rounds)


def load_circle(path: Path, modem: bool = False) -> Circle:
    """Read and check one venue's care-circle file; ConfigError names the file and key."""
    path = Path(path)
    top = tomlcheck.Table(path, tomlcheck.load(path))
    venue = top.ident("venue")
    name = top.text("name", venue)
    tz_name = top.text("timezone", "UTC")
    try:
        tz = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise top.fail("timezone", f"unknown IANA time zone {tz_name!r} (e.g. Asia/Shanghai)") from None
    escalate = top.number("escalate_after_s", 120.0, *ESCALATE_RANGE)
    contacts: dict[str, Contact] = {}
    staff: list[str] = []
    for key, is_staff in (("contacts", False), ("staff", True)):
        for t in top.tables(key):
            contact = _contact(t, is_staff, modem)
            if contact.id in contacts:
                raise t.fail("id", f"{contact.id!r} is used twice (contacts and staff share one list of ids)")
            contacts[contact.id] = contact
            if is_staff:
                staff.append(contact.id)
    residents: dict[str, Resident] = {}
    for t in top.tables("residents"):
        band = t.ident("band")
        if band in residents:
            raise t.fail("band", f"{band!r} is listed twice")
        reference = t.text("reference")
        if not 1 <= len(reference) <= 64:
            raise t.fail("reference", "expected 1-64 characters (what the home shows, e.g. a room number)")
        rounds = _rounds(t, contacts)
        residents[band] = Resident(band, reference, rounds, t.number("escalate_after_s", escalate, *ESCALATE_RANGE))
        t.no_unknown_keys()
    if not staff:
        raise top.fail("staff", "at least one [[staff]] entry is required: staff are the last round of every alert")
    top.no_unknown_keys()
    return Circle(path, venue, name, tz, escalate, contacts, tuple(staff), residents)


def find_contact(circles: dict[str, Circle], contact_id: str) -> tuple[Circle, Contact] | None:
    for circle in circles.values():
        contact = circle.contacts.get(contact_id)
        if contact is not None:
            return circle, contact
    return None
