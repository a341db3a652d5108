"""A venue sensor's channels as the technician names them: `--channel NAME:TYPE[:key=value,...]`.

    --channel smoke:smoke
    --channel kitchen-gas:gas:confirm_ms=8000
    --channel exit-door:door:confirm_ms=120000,clear_ms=2000

They become config.json's `channels` list, in the order given (a channel's place in the list
is its number in the sensor's events). The host checks the form here: a name of 1-16
characters from A-Z a-z 0-9 - _ . used once, a known type, known tuning keys with integer
values, 1 to 8 channels. Whether the tuning suits the type (thresholds inside the valid
range, `off` on the clear side of `on`) is the device's own load_config's to judge
(firmware/apps/sensor/app.py, docs/protocol.md §7.1): the self-test step runs it on the board
and reports its message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from provisioning.errors import ProvisionError

OPTION = "--channel"
SYNTAX = "NAME:TYPE[:key=value,...]"
TYPES = ("door", "extinguisher", "gas", "smoke")  # firmware/apps/sensor/app.py TYPES
TUNABLE = ("on", "off", "confirm_ms", "clear_ms", "fault_ms")
MAX_CHANNELS = 8
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,16}")
INT_RE = re.compile(r"-?[0-9]{1,10}")
INT_LIMIT = 1 << 30  # the device takes integers in -2^30 .. 2^30


@dataclass(frozen=True, slots=True)
class SensorChannel:
    name: str
    type: str
    tuning: tuple[tuple[str, int], ...] = ()  # (key, value), sorted by key

    def config(self) -> dict[str, object]:
        """The channel's object in config.json."""
        return {"name": self.name, "type": self.type, **dict(self.tuning)}


def parse_channel(text: str) -> SensorChannel:
    """One `--channel` value; ProvisionError naming the value and what is wrong with it."""

    def bad(why: str) -> ProvisionError:
        return ProvisionError(f"{OPTION} {text!r}: {why}")

    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise bad(f"expected {SYNTAX}")
    name, typ = parts[0], parts[1]
    if not NAME_RE.fullmatch(name):
        raise bad(f"name {name!r}: expected 1-16 characters from A-Z a-z 0-9 . _ -")
    if typ not in TYPES:
        raise bad(f"unknown type {typ!r} (known: {', '.join(TYPES)})")
    tuning: dict[str, int] = {}
    if len(parts) == 3:
        for item in parts[2].split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise bad(f"{item!r}: expected key=value")
            if key not in TUNABLE:
                raise bad(f"unknown tuning key {key!r} (known: {', '.join(TUNABLE)})")
            if key in tuning:
                raise bad(f"{key} given twice")
            if not INT_RE.fullmatch(value) or not -INT_LIMIT <= int(value) <= INT_LIMIT:
                raise bad(f"{key}={value!r}: expected an integer from {-INT_LIMIT} to {INT_LIMIT}")
            tuning[key] = int(value)
    return SensorChannel(name, typ, tuple(sorted(tuning.items())))


def channels_for(kind: str, values: Sequence[str]) -> tuple[SensorChannel, ...]:
    """The `--channel` values of one flash run for `kind`: required for a sensor, refused otherwise."""
    if kind != "sensor":
        if values:
            raise ProvisionError(f"{OPTION} is for --kind sensor only, not {kind}")
        return ()
    if not values:
        raise ProvisionError(f"--kind sensor needs at least one {OPTION} {SYNTAX}")
    if len(values) > MAX_CHANNELS:
        raise ProvisionError(f"{OPTION}: {len(values)} channels given, a sensor has at most {MAX_CHANNELS}")
    channels = tuple(parse_channel(v) for v in values)
    seen: set[str] = set()
    for value, ch in zip(values, channels, strict=True):
        if ch.name in seen:
            raise ProvisionError(f"{OPTION} {value!r}: channel name {ch.name!r} used twice")
        seen.add(ch.name)
    return channels
