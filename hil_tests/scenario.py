"""Scenario files (docs/scenarios.md): a venue, its devices, a timeline of actions and the
expectations that must hold. Parsed from YAML with every error naming the file and line.

PyYAML's node API gives the line of every value; the file is walked node by node so a
mistake deep in the timeline still points at its own line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.shared.protocol import DEVICE_KINDS, EventType

KINDS = DEVICE_KINDS
TRANSPORTS = ("mqtt",)
COLOURS = ("off", "red", "green", "blue", "amber", "cyan", "magenta", "white")
EVENT_TYPES = tuple(t.name for t in EventType)
# a venue sensor's channel types and the settings a scenario may tune (firmware/apps/sensor/app.py)
SENSOR_TYPES = ("smoke", "gas", "door", "extinguisher")
SENSOR_TUNABLE = ("on", "off", "confirm_ms", "clear_ms", "fault_ms")
PROCESSES = ("local_broker", "central_broker", "agent")
DEVICE_ACTIONS = (
    "press",
    "release",
    "click",
    "hold",
    "tamper_open",
    "tamper_close",
    "power_cut",
    "power_on",
    # wristbands
    "move",
    "walk",
    "fall",
    "strap_open",
    "strap_close",
    "battery",
    # venue sensors
    "set",
)
BAND_ACTIONS = ("move", "walk", "fall", "strap_open", "strap_close", "battery")
POST_ACTIONS = ("click", "tamper_open", "tamper_close")
PROCESS_ACTIONS = ("stop", "start", "kill", "restart")
# a step's options and the actions they belong to (an option given to another action is a mistake)
_STEP_OPTIONS = {
    "to": ("move",),
    "zone": ("move",),
    "path": ("walk",),
    "step_s": ("walk",),
    "percent": ("battery",),
    "sensor": ("set",),
    "value": ("set",),
}


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ZoneSpec:
    """A zone; `rect` (x0, y0, x1, y1 in metres) places it for wristbands and the virtual air."""

    id: str
    name: str
    rect: tuple[float, float, float, float] | None
    exit: bool

    def centre(self) -> tuple[float, float]:
        assert self.rect is not None
        return ((self.rect[0] + self.rect[2]) / 2, (self.rect[1] + self.rect[3]) / 2)


@dataclass(frozen=True)
class ScannerSpec:
    id: str
    at: tuple[float, float]
    zone: str


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of a venue sensor: its name (the input the rig feeds), type and tuning."""

    name: str
    type: str
    tuning: tuple[tuple[str, int], ...] = ()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, **dict(self.tuning)}


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: str
    zone: str
    transport: str
    line: int
    at: tuple[float, float] | None = None  # a wristband's starting position
    resident: str = ""  # a wristband's resident reference (shown to families)
    channels: tuple[ChannelSpec, ...] = ()  # a venue sensor's channels


@dataclass(frozen=True)
class Step:
    """One timeline entry: an action on a device or a process, or a wait."""

    line: int
    action: str  # one of DEVICE_ACTIONS, PROCESS_ACTIONS, or "wait"
    target: str  # device id, process name, or "" for wait
    label: str  # defaults to "<action>@<line>"
    ms: int = 0  # click/hold duration
    seconds: float = 0.0  # wait; walk: seconds per point
    points: tuple[tuple[float, float], ...] = ()  # move (one point) and walk
    value: int = 0  # battery percent; set: the reading
    sensor: str = ""  # set: the channel


@dataclass(frozen=True)
class Expect:
    """One expectation; `kind` is event, none, led, count, zero_loss or latency."""

    line: int
    kind: str
    type: str = ""
    device: str = ""
    after: str = ""  # a step label; "" is the start of the timeline
    within: float = 0.0
    colour: str = ""
    equals: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None

    def describe(self) -> str:
        if self.kind == "event":
            return f"{self.type} from {self.device} within {self.within:g} s after {self.after or 'start'}"
        if self.kind == "none":
            src = f" from {self.device}" if self.device else ""
            return f"no {self.type}{src} for {self.within:g} s after {self.after or 'start'}"
        if self.kind == "led":
            return f"{self.device} LED {self.colour} within {self.within:g} s after {self.after or 'start'}"
        if self.kind == "count":
            return f"exactly {self.equals} {self.type}{' from ' + self.device if self.device else ''} at central"
        if self.kind == "latency":
            bounds = [f"p{p} <= {v:g} ms" for p, v in ((50, self.p50_ms), (99, self.p99_ms)) if v is not None]
            return f"{self.type} latency {' and '.join(bounds)}"
        return "zero loss and no verifier errors"


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    venue: str
    zones: tuple[ZoneSpec, ...]
    devices: tuple[DeviceSpec, ...]
    steps: tuple[Step, ...]
    expects: tuple[Expect, ...]
    settle_s: float = 5.0
    labels: dict[str, Step] = field(default_factory=dict)
    scanners: tuple[ScannerSpec, ...] = ()

    def zone(self, zone_id: str) -> ZoneSpec:
        return next(z for z in self.zones if z.id == zone_id)


class _Node:
    """A YAML node with the file name, for errors that point at a line."""

    def __init__(self, path: Path, node: yaml.Node, where: str) -> None:
        self.path = path
        self.node = node
        self.where = where

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def fail(self, message: str) -> ScenarioError:
        return ScenarioError(f"{self.path}:{self.line}: {self.where}: {message}")

    def mapping(self, allowed: tuple[str, ...]) -> dict[str, _Node]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail("expected a mapping (key: value lines)")
        out: dict[str, _Node] = {}
        for k, v in self.node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            child = _Node(self.path, k, f"{self.where}.{key}" if self.where else str(key))
            if key not in allowed:
                raise child.fail(f"unknown key {key!r} (known here: {', '.join(allowed)})")
            if key in out:
                raise child.fail(f"{key!r} given twice")
            out[key] = _Node(self.path, v, f"{self.where}.{key}" if self.where else key)
        return out

    def items(self) -> list[_Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail("expected a list (lines starting with '- ')")
        return [_Node(self.path, n, f"{self.where}[{i}]") for i, n in enumerate(self.node.value)]

    def _scalar(self) -> Any:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("expected a single value")
        return yaml.safe_load(yaml.serialize(self.node))

    def text(self, choices: tuple[str, ...] = ()) -> str:
        value = self._scalar()
        if not isinstance(value, str) or not value:
            raise self.fail(f"expected text, got {value!r}")
        if choices and value not in choices:
            raise self.fail(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def number(self, lo: float = 0.0, hi: float = 3600.0) -> float:
        value = self._scalar()
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.fail(f"expected a number from {lo:g} to {hi:g}, got {value!r}")
        return float(value)

    def integer(self, lo: int = 0, hi: int = 1_000_000) -> int:
        value = self._scalar()
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(f"expected an integer from {lo} to {hi}, got {value!r}")
        return value

    def pair(self) -> tuple[float, float]:
        items = self.items()
        if len(items) != 2:
            raise self.fail("expected [x, y] in metres")
        return items[0].number(-10_000, 10_000), items[1].number(-10_000, 10_000)

    def flag(self) -> bool:
        value = self._scalar()
        if not isinstance(value, bool):
            raise self.fail(f"expected true or false, got {value!r}")
        return value


def load(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the file, line and what was expected."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if root is None:
        raise ScenarioError(f"{path}: empty file")
    top = _Node(path, root, "").mapping(("name", "venue", "devices", "timeline", "expect", "settle_s"))
    for required in ("name", "venue", "devices", "timeline", "expect"):
        if required not in top:
            raise ScenarioError(f"{path}: missing required key {required!r}")
    name = top["name"].text()
    venue_map = top["venue"].mapping(("id", "zones", "scanners"))
    if "id" not in venue_map:
        raise top["venue"].fail("missing 'id'")
    venue = venue_map["id"].text()
    zone_list: list[ZoneSpec] = []
    for z in venue_map["zones"].items() if "zones" in venue_map else []:
        if isinstance(z.node, yaml.ScalarNode):
            zid = z.text()
            zone_list.append(ZoneSpec(zid, zid, None, False))
            continue
        zm = z.mapping(("id", "name", "rect", "exit"))
        if "id" not in zm:
            raise z.fail("missing 'id'")
        zid = zm["id"].text()
        rect = None
        if "rect" in zm:
            r = zm["rect"].items()
            if len(r) != 4:
                raise zm["rect"].fail("expected [x0, y0, x1, y1] in metres")
            x0, y0, x1, y1 = (v.number(-10_000, 10_000) for v in r)
            if x1 <= x0 or y1 <= y0:
                raise zm["rect"].fail("expected x0 < x1 and y0 < y1")
            rect = (x0, y0, x1, y1)
        zone_list.append(
            ZoneSpec(
                zid, zm["name"].text() if "name" in zm else zid, rect, zm["exit"].flag() if "exit" in zm else False
            )
        )
    zones = tuple(zone_list)
    zone_ids = tuple(z.id for z in zones)
    scanners: list[ScannerSpec] = []
    for item in venue_map["scanners"].items() if "scanners" in venue_map else []:
        sm = item.mapping(("id", "at", "zone"))
        if not {"id", "at", "zone"} <= set(sm):
            raise item.fail("a scanner needs id, at: [x, y] and zone")
        scanners.append(ScannerSpec(sm["id"].text(), sm["at"].pair(), sm["zone"].text(zone_ids)))

    devices: list[DeviceSpec] = []
    for item in top["devices"].items():
        d = item.mapping(("id", "kind", "zone", "transport", "at", "resident", "channels"))
        if "id" not in d:
            raise item.fail("missing 'id'")
        dev_id = d["id"].text()
        if any(x.id == dev_id for x in devices):
            raise d["id"].fail(f"device {dev_id!r} listed twice")
        zone = d["zone"].text() if "zone" in d else ""
        if zones and zone and zone not in zone_ids:
            raise d["zone"].fail(f"zone {zone!r} is not one of the venue's zones ({', '.join(zone_ids)})")
        kind = d["kind"].text(KINDS) if "kind" in d else "alarm_post"
        at = d["at"].pair() if "at" in d else None
        if kind == "wristband":
            if at is None:
                raise item.fail("a wristband needs at: [x, y], where it starts")
            if not scanners or any(z.rect is None for z in zones):
                raise item.fail("wristbands need venue zones with rect and at least one scanner")
        channels: list[ChannelSpec] = []
        if kind == "sensor":
            if "channels" not in d:
                raise item.fail("a sensor needs channels: [{name: ..., type: smoke|gas|door|extinguisher}, ...]")
            for ch in d["channels"].items():
                cm = ch.mapping(("name", "type", *SENSOR_TUNABLE))
                if "name" not in cm or "type" not in cm:
                    raise ch.fail("a channel needs name and type")
                ch_name = cm["name"].text()
                if any(c.name == ch_name for c in channels):
                    raise cm["name"].fail(f"channel {ch_name!r} listed twice")
                tuning = tuple((k, cm[k].integer(-1_000_000, 1_000_000)) for k in SENSOR_TUNABLE if k in cm)
                channels.append(ChannelSpec(ch_name, cm["type"].text(SENSOR_TYPES), tuning))
            if not 1 <= len(channels) <= 8:
                raise d["channels"].fail("a sensor has 1 to 8 channels")
        elif "channels" in d:
            raise d["channels"].fail(f"channels are for sensors; {dev_id} is kind {kind}")
        devices.append(
            DeviceSpec(
                dev_id,
                kind,
                zone,
                d["transport"].text(TRANSPORTS) if "transport" in d else "mqtt",
                item.line,
                at,
                d["resident"].text() if "resident" in d else "",
                tuple(channels),
            )
        )
    if not devices:
        raise top["devices"].fail("at least one device is needed")
    ids = tuple(d.id for d in devices)

    steps: list[Step] = []
    labels: dict[str, Step] = {}
    for item in top["timeline"].items():
        s = item.mapping(
            (
                "do",
                "device",
                "process",
                "ms",
                "seconds",
                "label",
                "wait",
                "to",
                "zone",
                "path",
                "step_s",
                "percent",
                "sensor",
                "value",
            )
        )
        if "wait" in s:
            if len(s) != 1:
                raise item.fail("'wait' stands alone: - wait: SECONDS")
            step = Step(item.line, "wait", "", f"wait@{item.line}", seconds=s["wait"].number(0, 600))
        else:
            if "do" not in s:
                raise item.fail("expected 'do: ACTION' or 'wait: SECONDS'")
            action = s["do"].text(DEVICE_ACTIONS + PROCESS_ACTIONS)
            if action in DEVICE_ACTIONS:
                if "device" not in s:
                    raise item.fail(f"'{action}' needs 'device: ID'")
                target = s["device"].text(ids)
            else:
                if "process" not in s:
                    raise item.fail(f"'{action}' needs 'process: {'|'.join(PROCESSES)}'")
                target = s["process"].text(PROCESSES)
            ms = 0
            if action in ("click", "hold"):
                default = 150 if action == "click" else 0
                ms = s["ms"].integer(10, 60_000) if "ms" in s else default
                if not ms:
                    raise item.fail("'hold' needs 'ms: MILLISECONDS'")
            elif "ms" in s:
                raise s["ms"].fail(f"'ms' applies to click and hold, not {action}")
            for key, owners in _STEP_OPTIONS.items():
                if key in s and action not in owners:
                    raise s[key].fail(f"'{key}' applies to {' and '.join(owners)}, not {action}")
            device_kinds = {d.id: d.kind for d in devices}
            if action in BAND_ACTIONS and device_kinds.get(target) != "wristband":
                raise item.fail(f"'{action}' is for wristbands; {target} is not one")
            if action in POST_ACTIONS and device_kinds.get(target) != "alarm_post":
                raise item.fail(f"'{action}' is for alarm posts; {target} is not one")
            if action == "set" and device_kinds.get(target) != "sensor":
                raise item.fail(f"'set' is for sensors; {target} is not one")
            points: tuple[tuple[float, float], ...] = ()
            step_s = 0.0
            value = 0
            sensor = ""
            if action == "move":
                if ("to" in s) == ("zone" in s):
                    raise item.fail("'move' needs to: [x, y] or zone: ID")
                points = (
                    (s["to"].pair(),)
                    if "to" in s
                    else (next(z for z in zones if z.id == s["zone"].text(zone_ids)).centre(),)
                )
            elif action == "walk":
                if "path" not in s:
                    raise item.fail("'walk' needs path: [[x, y], ...]")
                points = tuple(p.pair() for p in s["path"].items())
                step_s = s["step_s"].number(0.1, 60) if "step_s" in s else 1.0
            elif action == "battery":
                if "percent" not in s:
                    raise item.fail("'battery' needs percent: 0..100")
                value = s["percent"].integer(0, 100)
            elif action == "set":
                if "sensor" not in s or "value" not in s:
                    raise item.fail("'set' needs sensor: CHANNEL and value: READING")
                spec = next(d for d in devices if d.id == target)
                sensor = s["sensor"].text(tuple(c.name for c in spec.channels))
                value = s["value"].integer(-(1 << 31), (1 << 31) - 1)
            label = s["label"].text() if "label" in s else f"{action}@{item.line}"
            if label in labels:
                raise s["label"].fail(f"label {label!r} used twice")
            step = Step(
                item.line, action, target, label, ms=ms, seconds=step_s, points=points, value=value, sensor=sensor
            )
        labels[step.label] = step
        steps.append(step)

    expects: list[Expect] = []
    for item in top["expect"].items():
        e = item.mapping(
            (
                "event",
                "none",
                "led",
                "count",
                "zero_loss",
                "latency",
                "device",
                "after",
                "within",
                "for",
                "colour",
                "equals",
                "p50_ms",
                "p99_ms",
            )
        )
        kinds = [k for k in ("event", "none", "led", "count", "zero_loss", "latency") if k in e]
        if len(kinds) != 1:
            raise item.fail("each expectation has exactly one of: event, none, led, count, zero_loss, latency")
        kind = kinds[0]
        after = ""
        if "after" in e:
            after = e["after"].text()
            if after not in labels:
                raise e["after"].fail(f"no timeline step is labelled {after!r}")
        device = e["device"].text(ids) if "device" in e else ""
        if kind == "event":
            if not device or "within" not in e:
                raise item.fail("'event' needs 'device' and 'within'")
            expects.append(
                Expect(item.line, kind, e["event"].text(EVENT_TYPES), device, after, e["within"].number(0.1))
            )
        elif kind == "none":
            if "for" not in e:
                raise item.fail("'none' needs 'for: SECONDS'")
            expects.append(Expect(item.line, kind, e["none"].text(EVENT_TYPES), device, after, e["for"].number(0.1)))
        elif kind == "led":
            if not device or "within" not in e:
                raise item.fail("'led' needs 'device' and 'within'")
            colour = e["led"].text(COLOURS)
            expects.append(Expect(item.line, kind, "", device, after, e["within"].number(0.1), colour=colour))
        elif kind == "count":
            if "equals" not in e:
                raise item.fail("'count' needs 'equals: N'")
            expects.append(Expect(item.line, kind, e["count"].text(EVENT_TYPES), device, equals=e["equals"].integer()))
        elif kind == "latency":
            p50 = e["p50_ms"].number(0, 600_000) if "p50_ms" in e else None
            p99 = e["p99_ms"].number(0, 600_000) if "p99_ms" in e else None
            if p50 is None and p99 is None:
                raise item.fail("'latency' needs p50_ms and/or p99_ms")
            expects.append(Expect(item.line, kind, e["latency"].text(EVENT_TYPES), p50_ms=p50, p99_ms=p99))
        else:
            if not e["zero_loss"].flag():
                raise e["zero_loss"].fail("only 'zero_loss: true' makes sense")
            expects.append(Expect(item.line, kind))
    if not expects:
        raise top["expect"].fail("a scenario without expectations proves nothing")
    settle = top["settle_s"].number(0, 600) if "settle_s" in top else 5.0
    return Scenario(
        path, name, venue, zones, tuple(devices), tuple(steps), tuple(expects), settle, labels, tuple(scanners)
    )
