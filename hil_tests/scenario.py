"""Scenario files (docs/scenarios.md): a venue, its devices, a timeline of actions and the
expectations that must hold. Parsed from YAML with every error naming the file and line.

PyYAML's node API gives the line of every value; the file is walked node by node so a
mistake deep in the timeline still points at its own line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from agent.gateway.wristbands import venue as engine_venue
from agent.shared.errors import ConfigError
from agent.shared.protocol import DEVICE_KINDS, EventType
from hil_tests.sim.air import Model, VenueError, parse_venue

KINDS = DEVICE_KINDS
TRANSPORTS = ("mqtt",)
COLOURS = ("off", "red", "green", "blue", "amber", "cyan", "magenta", "white")
EVENT_TYPES = tuple(t.name for t in EventType)
# a venue sensor's channel types and the settings a scenario may tune (firmware/apps/sensor/app.py)
SENSOR_TYPES = ("smoke", "gas", "door", "extinguisher")
SENSOR_TUNABLE = ("on", "off", "confirm_ms", "clear_ms", "fault_ms")
# "gateway" is the gateway's Pi: the agent and the local broker together; as an expectation's
# device, the gateway's own events
GATEWAY = "gateway"
PROCESSES = ("local_broker", "central_broker", "agent", GATEWAY)
# buzzer patterns a `sound` expectation names: one short beep (a press), two (help is coming),
# the evacuation pattern (ISO 8201 temporal-three), nothing at all
SOUNDS = ("beep", "double", "t3", "silent")
# settings.devices: key -> (the kinds it applies to, lowest, highest), as the firmware checks them
# (firmware/lib/reporter.py LINK_DEFAULTS, the alarm post's and the sensor's own)
_LINKED = ("alarm_post", "sensor")
DEVICE_SETTINGS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "heartbeat_s": (_LINKED, 1, 86400),
    "keepalive_s": (_LINKED, 0, 65535),
    "resend_s": (_LINKED, 1, 3600),
    "recheck_s": (_LINKED, 1, 86400),
    "green_s": (_LINKED, 0, 86400),
    "ack_s": (_LINKED, 0, 86400),
    "outbox": (_LINKED, 5, 1000),
    "long_press_ms": (("alarm_post",), 100, 60000),
    "debounce_ms": (("alarm_post",), 1, 1000),
    "sample_ms": (("sensor",), 20, 60000),
    "interval_ms": (("wristband",), 100, 10000),
    "sos_hold_ms": (("wristband",), 100, 10000),
}
RADIO_SETTINGS = Model.__slots__  # the virtual air's model (hil_tests/sim/air.py)
ENGINE_SETTINGS = tuple(f.name for f in fields(engine_venue.Settings))  # the venue file's [settings]
ENGINE_FLOATS = {f.name: f.type in ("float", float) for f in fields(engine_venue.Settings)}  # else integers
SCANNER_SETTINGS = ("watchdog_s",)  # every [[ble]] scanner of the simulated rig
# the local broker: "test" (anonymous, its store kept across restarts, the tests' default) or
# "packaged" (packaging/mosquitto/guardian-local.conf: logins, ACL, no store, as deployed)
LOCAL_BROKERS = ("test", "packaged")


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
class DoorSpec:
    """A venue sensor's door channel mapped to an exit zone (the venue file's [[doors]])."""

    id: str
    zone: str
    sensor: str
    channel: str
    approach: tuple[str, ...] = ()


@dataclass(frozen=True)
class RigSettings:
    """What `settings:` tunes on the simulated rig: the radio, the alert engine, the devices'
    timing and the scanners' watchdog, each as (key, value) pairs in file order, and which
    configuration the gateway's local broker runs."""

    radio: tuple[tuple[str, float], ...] = ()
    engine: tuple[tuple[str, float], ...] = ()
    devices: tuple[tuple[str, int], ...] = ()
    scanners: tuple[tuple[str, int], ...] = ()
    local_broker: str = "test"  # one of LOCAL_BROKERS

    def for_kind(self, kind: str) -> dict[str, int]:
        """The device settings that apply to a device of `kind`."""
        return {k: v for k, v in self.devices if kind in DEVICE_SETTINGS[k][0]}


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
    """One timeline entry: an action on a device, a process or a scanner, or a wait."""

    line: int
    action: str  # one of ACTIONS, or "wait"
    target: str  # device id, process name, or "" for wait
    label: str  # defaults to "<action>@<line>"
    ms: int = 0  # click/hold duration
    seconds: float = 0.0  # wait; walk: seconds per point; reboot: how long the gateway is down
    points: tuple[tuple[float, float], ...] = ()  # move (one point) and walk
    value: int = 0  # battery percent; set: the reading
    sensor: str = ""  # set: the channel
    hard: bool = False  # reboot: a power cut (kill -9), not a clean shutdown


@dataclass(frozen=True)
class Expect:
    """One expectation; `kind` is one of EXPECTATIONS."""

    line: int
    kind: str
    type: str = ""
    device: str = ""
    after: str = ""  # a step label; "" is the start of the timeline
    within: float = 0.0  # event, none, led, sound: the window; held: how long
    colour: str = ""
    equals: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    types: tuple[str, ...] = ()  # order: the sequence
    start: float = 0.0  # held: the window starts this long after `after`
    sound: str = ""  # one of SOUNDS
    duplicates: int = 0  # once: deliveries of the event beyond the first that are allowed

    def describe(self) -> str:
        special = _DESCRIBE.get(self.kind)
        if special is not None:
            return special(self)
        return self._describe_basic()

    def _describe_basic(self) -> str:
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


def _source(e: Expect) -> str:
    return f" from {e.device}" if e.device else ""


_DESCRIBE: dict[str, Callable[[Expect], str]] = {
    "order": lambda e: (
        f"{' then '.join(e.types)}{_source(e)} at central after {e.after or 'start'}, nothing else of these"
    ),
    "once": lambda e: (
        f"exactly one {e.type}{_source(e)} after {e.after or 'start'}, delivered once"
        + (f" (up to {e.duplicates} repeat(s) allowed)" if e.duplicates else "")
    ),
    "held": lambda e: (
        f"{e.device} LED {e.colour} all along {e.start:g}-{e.start + e.within:g} s after {e.after or 'start'}"
    ),
    "sound": lambda e: f"{e.device} buzzer {e.sound} within {e.within:g} s after {e.after or 'start'}",
}


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
    doors: tuple[DoorSpec, ...] = ()
    settings: RigSettings = RigSettings()

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
        try:
            return SafeConstructor().construct_object(self.node, deep=True)
        except yaml.YAMLError as exc:  # a tagged value that does not hold, e.g. !!int x
            raise self.fail(f"not a valid value: {getattr(exc, 'problem', exc)}") from exc

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


# --- the file --------------------------------------------------------------------------

_SECTIONS = ("name", "venue", "devices", "timeline", "expect", "settle_s", "settings")
_REQUIRED = ("name", "venue", "devices", "timeline", "expect")


def load(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the file, line and what was expected."""
    path = Path(path)
    top = _read(path).mapping(_SECTIONS)
    for required in _REQUIRED:
        if required not in top:
            raise ScenarioError(f"{path}: missing required key {required!r}")
    name = top["name"].text()
    venue, zones, scanners = _venue(top["venue"])
    devices = _devices(top["devices"], zones, scanners)
    doors = _doors(top["venue"], zones, scanners, devices)
    settings = _settings(top["settings"]) if "settings" in top else RigSettings()
    steps = _timeline(top["timeline"], zones, devices, scanners)
    labels = {step.label: step for step in steps}
    expects = _expectations(top["expect"], labels, tuple(d.id for d in devices))
    settle = top["settle_s"].number(0, 600) if "settle_s" in top else 5.0
    return Scenario(path, name, venue, zones, devices, steps, expects, settle, labels, scanners, doors, settings)


def _read(path: Path) -> _Node:
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
    return _Node(path, root, "")


# --- venue ---------------------------------------------------------------------------------


def _venue(node: _Node) -> tuple[str, tuple[ZoneSpec, ...], tuple[ScannerSpec, ...]]:
    venue = node.mapping(("id", "zones", "scanners", "doors"))
    if "id" not in venue:
        raise node.fail("missing 'id'")
    zones = tuple(_zone(z) for z in venue["zones"].items()) if "zones" in venue else ()
    zone_ids = tuple(z.id for z in zones)
    scanners = tuple(_scanner(s, zone_ids) for s in venue["scanners"].items()) if "scanners" in venue else ()
    return venue["id"].text(), zones, scanners


def _zone(node: _Node) -> ZoneSpec:
    if isinstance(node.node, yaml.ScalarNode):  # a bare name: a zone without a place
        zid = node.text()
        return ZoneSpec(zid, zid, None, False)
    zm = node.mapping(("id", "name", "rect", "exit"))
    if "id" not in zm:
        raise node.fail("missing 'id'")
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
    return ZoneSpec(zid, zm["name"].text() if "name" in zm else zid, rect, zm["exit"].flag() if "exit" in zm else False)


def _scanner(node: _Node, zone_ids: tuple[str, ...]) -> ScannerSpec:
    sm = node.mapping(("id", "at", "zone"))
    if not {"id", "at", "zone"} <= set(sm):
        raise node.fail("a scanner needs id, at: [x, y] and zone")
    return ScannerSpec(sm["id"].text(), sm["at"].pair(), sm["zone"].text(zone_ids))


def _doors(
    node: _Node, zones: tuple[ZoneSpec, ...], scanners: tuple[ScannerSpec, ...], devices: tuple[DeviceSpec, ...]
) -> tuple[DoorSpec, ...]:
    """venue.doors: [{id, zone (an exit zone), sensor (a sensor device), channel (its door channel),
    approach: [scanner, ...]}]; read after the devices, which they name."""
    venue = node.mapping(("id", "zones", "scanners", "doors"))
    if "doors" not in venue:
        return ()
    exits = tuple(z.id for z in zones if z.exit)
    sensors = {d.id: d for d in devices if d.kind == "sensor"}
    doors: list[DoorSpec] = []
    for item in venue["doors"].items():
        dm = item.mapping(("id", "zone", "sensor", "channel", "approach"))
        if not {"id", "zone", "sensor", "channel"} <= set(dm):
            raise item.fail("a door needs id, zone (an exit zone), sensor and channel")
        door_id = dm["id"].text()
        if any(d.id == door_id for d in doors):
            raise dm["id"].fail(f"door {door_id!r} listed twice")
        if not exits:
            raise dm["zone"].fail("the venue has no exit zone (exit: true) for a door to lead out of")
        zone = dm["zone"].text(exits)
        sensor = sensors.get(dm["sensor"].text(tuple(sensors) or ("(no sensor among the devices)",)))
        assert sensor is not None
        doors_of = tuple(c.name for c in sensor.channels if c.type == "door") or ("(no door channel)",)
        channel = dm["channel"].text(doors_of)
        approach = (
            tuple(a.text(tuple(sc.id for sc in scanners)) for a in dm["approach"].items()) if "approach" in dm else ()
        )
        doors.append(DoorSpec(door_id, zone, sensor.id, channel, approach))
    return tuple(doors)


# --- settings ------------------------------------------------------------------------------


def _settings(node: _Node) -> RigSettings:
    sm = node.mapping(("radio", "engine", "devices", "scanners", "local_broker"))
    radio = _radio(sm["radio"]) if "radio" in sm else ()
    engine = _engine(sm["engine"]) if "engine" in sm else ()
    devices: list[tuple[str, int]] = []
    if "devices" in sm:
        for k, v in sm["devices"].mapping(tuple(DEVICE_SETTINGS)).items():
            _, lo, hi = DEVICE_SETTINGS[k]
            devices.append((k, v.integer(lo, hi)))
    scanners: tuple[tuple[str, int], ...] = ()
    if "scanners" in sm:
        scanners = tuple((k, v.integer(2, 86_400)) for k, v in sm["scanners"].mapping(SCANNER_SETTINGS).items())
    broker = sm["local_broker"].text(LOCAL_BROKERS) if "local_broker" in sm else "test"
    return RigSettings(radio, engine, tuple(devices), scanners, broker)


def _radio(node: _Node) -> tuple[tuple[str, float], ...]:
    """settings.radio: the virtual air's model, checked by the air's own parser."""
    radio = tuple((k, v.number(-1000, 1000)) for k, v in node.mapping(RADIO_SETTINGS).items())
    try:
        parse_venue({"name": "check", "model": dict(radio), "zones": [{"name": "z", "rect": [0, 0, 1, 1]}]})
    except VenueError as exc:
        raise node.fail(str(exc).split("model: ", 1)[-1]) from None
    return radio


def _engine(node: _Node) -> tuple[tuple[str, float], ...]:
    """settings.engine: the alert engine's [settings], checked by the venue file's own parser."""
    engine = tuple(
        (k, v.number(0, 86_400) if ENGINE_FLOATS[k] else float(v.integer(0, 86_400)))
        for k, v in node.mapping(ENGINE_SETTINGS).items()
    )
    doc = {
        "venue": "check",
        "settings": {k: v if ENGINE_FLOATS[k] else int(v) for k, v in engine},
        "zones": [{"id": "z"}],
    }
    try:
        engine_venue.parse(doc, Path("settings.engine"))
    except ConfigError as exc:
        raise node.fail(str(exc).split(": ", 1)[-1]) from None
    return engine


# --- devices -------------------------------------------------------------------------------


def _devices(node: _Node, zones: tuple[ZoneSpec, ...], scanners: tuple[ScannerSpec, ...]) -> tuple[DeviceSpec, ...]:
    devices: list[DeviceSpec] = []
    for item in node.items():
        devices.append(_device(item, zones, scanners, tuple(d.id for d in devices)))
    if not devices:
        raise node.fail("at least one device is needed")
    return tuple(devices)


def _device(
    item: _Node, zones: tuple[ZoneSpec, ...], scanners: tuple[ScannerSpec, ...], listed: tuple[str, ...]
) -> DeviceSpec:
    d = item.mapping(("id", "kind", "zone", "transport", "at", "resident", "channels"))
    if "id" not in d:
        raise item.fail("missing 'id'")
    dev_id = d["id"].text()
    if dev_id in listed:
        raise d["id"].fail(f"device {dev_id!r} listed twice")
    zone_ids = tuple(z.id for z in zones)
    zone = d["zone"].text() if "zone" in d else ""
    if zones and zone and zone not in zone_ids:
        raise d["zone"].fail(f"zone {zone!r} is not one of the venue's zones ({', '.join(zone_ids)})")
    kind = d["kind"].text(KINDS) if "kind" in d else "alarm_post"
    at = d["at"].pair() if "at" in d else None
    if kind == "wristband":
        if at is None:
            raise item.fail("a wristband needs at: [x, y], where it starts")
        if not scanners or not zones or any(z.rect is None for z in zones):
            raise item.fail("wristbands need venue zones with rect and at least one scanner")
    channels: tuple[ChannelSpec, ...] = ()
    if kind == "sensor":
        if "channels" not in d:
            raise item.fail("a sensor needs channels: [{name: ..., type: smoke|gas|door|extinguisher}, ...]")
        channels = _channels(d["channels"])
    elif "channels" in d:
        raise d["channels"].fail(f"channels are for sensors; {dev_id} is kind {kind}")
    transport = d["transport"].text(TRANSPORTS) if "transport" in d else "mqtt"
    resident = d["resident"].text() if "resident" in d else ""
    return DeviceSpec(dev_id, kind, zone, transport, item.line, at, resident, channels)


def _channels(node: _Node) -> tuple[ChannelSpec, ...]:
    channels: list[ChannelSpec] = []
    for ch in node.items():
        cm = ch.mapping(("name", "type", *SENSOR_TUNABLE))
        if "name" not in cm or "type" not in cm:
            raise ch.fail("a channel needs name and type")
        ch_name = cm["name"].text()
        if any(c.name == ch_name for c in channels):
            raise cm["name"].fail(f"channel {ch_name!r} listed twice")
        tuning = tuple((k, cm[k].integer(-1_000_000, 1_000_000)) for k in SENSOR_TUNABLE if k in cm)
        channels.append(ChannelSpec(ch_name, cm["type"].text(SENSOR_TYPES), tuning))
    if not 1 <= len(channels) <= 8:
        raise node.fail("a sensor has 1 to 8 channels")
    return tuple(channels)


# --- timeline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepIn:
    """One timeline entry being read: its keys, its action and target, and what the
    sections above it declared (an action's parser may check its options against them)."""

    item: _Node
    keys: dict[str, _Node]
    action: str
    target: str
    zones: tuple[ZoneSpec, ...]
    device: DeviceSpec | None  # the target, for device actions

    def step(self, **options: Any) -> Step:
        return Step(self.item.line, self.action, self.target, "", **options)

    def need(self, *keys: str, usage: str) -> None:
        if not all(k in self.keys for k in keys):
            raise self.item.fail(f"'{self.action}' needs {usage}")


def _plain(s: StepIn) -> Step:
    return s.step()


def _click(s: StepIn) -> Step:
    return s.step(ms=s.keys["ms"].integer(10, 60_000) if "ms" in s.keys else 150)


def _hold(s: StepIn) -> Step:
    s.need("ms", usage="'ms: MILLISECONDS'")
    return s.step(ms=s.keys["ms"].integer(10, 60_000))


def _move(s: StepIn) -> Step:
    if ("to" in s.keys) == ("zone" in s.keys):
        raise s.item.fail("'move' needs to: [x, y] or zone: ID")
    if "to" in s.keys:
        return s.step(points=(s.keys["to"].pair(),))
    zone_id = s.keys["zone"].text(tuple(z.id for z in s.zones))
    return s.step(points=(next(z for z in s.zones if z.id == zone_id).centre(),))


def _walk(s: StepIn) -> Step:
    s.need("path", usage="path: [[x, y], ...]")
    points = tuple(p.pair() for p in s.keys["path"].items())
    return s.step(points=points, seconds=s.keys["step_s"].number(0.1, 60) if "step_s" in s.keys else 1.0)


def _battery(s: StepIn) -> Step:
    s.need("percent", usage="percent: 0..100")
    return s.step(value=s.keys["percent"].integer(0, 100))


def _set(s: StepIn) -> Step:
    s.need("sensor", "value", usage="sensor: CHANNEL and value: READING")
    assert s.device is not None
    sensor = s.keys["sensor"].text(tuple(c.name for c in s.device.channels))
    return s.step(sensor=sensor, value=s.keys["value"].integer(-(1 << 31), (1 << 31) - 1))


def _reboot(s: StepIn) -> Step:
    s.need("down_s", usage="'down_s: SECONDS' (how long the gateway is off)")
    hard = s.keys["hard"].flag() if "hard" in s.keys else False
    return s.step(seconds=s.keys["down_s"].number(0, 600), hard=hard)


@dataclass(frozen=True)
class Action:
    """A timeline action (docs/scenarios.md, "Actions").

    Attributes:
        on: "device" (the step names `device: ID`), "process" (`process: NAME`) or "scanner"
            (`scanner: ID`, one of the venue's).
        kinds: the device kinds it is for, or the processes; () for every one.
        options: the keys it takes besides do, device/process/scanner and label.
        parse: reads those options into the step.
    """

    on: str
    kinds: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    parse: Callable[[StepIn], Step] = _plain


_POST, _BAND, _SENSOR = ("alarm_post",), ("wristband",), ("sensor",)
# Adding an action: one row here (and its parser when it takes options), one in the rigs
# that can run it (hil_tests/runner.py), one in docs/scenarios.md.
ACTIONS: dict[str, Action] = {
    "press": Action("device"),
    "release": Action("device"),
    "click": Action("device", _POST, ("ms",), _click),
    "hold": Action("device", (), ("ms",), _hold),
    "tamper_open": Action("device", _POST),
    "tamper_close": Action("device", _POST),
    "power_cut": Action("device"),
    "power_on": Action("device"),
    # wristbands
    "move": Action("device", _BAND, ("to", "zone"), _move),
    "walk": Action("device", _BAND, ("path", "step_s"), _walk),
    "fall": Action("device", _BAND),
    "strap_open": Action("device", _BAND),
    "strap_close": Action("device", _BAND),
    "battery": Action("device", _BAND, ("percent",), _battery),
    # venue sensors
    "set": Action("device", _SENSOR, ("sensor", "value"), _set),
    # the gateway's processes ("gateway": the agent and the local broker together)
    "stop": Action("process"),
    "start": Action("process"),
    "kill": Action("process"),
    "restart": Action("process"),
    "reboot": Action("process", ("gateway",), ("down_s", "hard"), _reboot),
    # a BLE scanner's radio goes deaf (or hears again); the agent's watchdog notices
    "scanner_down": Action("scanner"),
    "scanner_up": Action("scanner"),
}
_TARGETS = ("device", "process", "scanner")
_KIND_PLURAL = {"alarm_post": "alarm posts", "wristband": "wristbands", "sensor": "sensors"}


def _step_options() -> tuple[str, ...]:
    # read from the table on every load, so a new row's options are known at once
    return tuple(dict.fromkeys(o for a in ACTIONS.values() for o in a.options))


@dataclass(frozen=True)
class _Declared:
    """What the sections above the timeline declared, for its steps to name."""

    zones: tuple[ZoneSpec, ...]
    devices: tuple[DeviceSpec, ...]
    scanners: tuple[ScannerSpec, ...]


def _timeline(
    node: _Node, zones: tuple[ZoneSpec, ...], devices: tuple[DeviceSpec, ...], scanners: tuple[ScannerSpec, ...] = ()
) -> tuple[Step, ...]:
    steps: list[Step] = []
    declared = _Declared(zones, devices, scanners)
    for item in node.items():
        steps.append(_step(item, declared, {s.label for s in steps}))
    return tuple(steps)


def _step(item: _Node, declared: _Declared, labels: set[str]) -> Step:
    options = _step_options()
    s = item.mapping(("do", *_TARGETS, "label", "wait", *options))
    if "wait" in s:
        if len(s) != 1:
            raise item.fail("'wait' stands alone: - wait: SECONDS")
        step = Step(item.line, "wait", "", f"wait@{item.line}", seconds=s["wait"].number(0, 600))
    else:
        step = _action(item, s, options, declared)
    if step.label in labels:
        raise s.get("label", item).fail(f"label {step.label!r} used twice")
    return step


def _action(item: _Node, s: dict[str, _Node], options: tuple[str, ...], declared: _Declared) -> Step:
    if "do" not in s:
        raise item.fail("expected 'do: ACTION' or 'wait: SECONDS'")
    action = s["do"].text(tuple(ACTIONS))
    spec = ACTIONS[action]
    if spec.on not in s:
        processes = spec.kinds if spec.on == "process" and spec.kinds else PROCESSES
        usage = {"device": "device: ID", "process": f"process: {'|'.join(processes)}", "scanner": "scanner: ID"}
        raise item.fail(f"'{action}' needs '{usage[spec.on]}'")
    for other in _TARGETS:
        if other != spec.on and other in s:
            raise s[other].fail(f"'{action}' acts on a {spec.on}, not a {other}")
    device = None
    if spec.on == "device":
        target = s["device"].text(tuple(d.id for d in declared.devices))
        device = next(d for d in declared.devices if d.id == target)
    elif spec.on == "scanner":
        ids = tuple(sc.id for sc in declared.scanners) or ("(the venue has no scanners)",)
        target = s["scanner"].text(ids)
    else:
        target = s["process"].text(spec.kinds or PROCESSES)
    for key in options:
        if key in s and key not in spec.options:
            owners = [name for name, a in ACTIONS.items() if key in a.options]
            raise s[key].fail(f"'{key}' applies to {_and(owners)}, not {action}")
    if device is not None and spec.kinds and device.kind not in spec.kinds:
        raise item.fail(f"'{action}' is for {_and([_KIND_PLURAL[k] for k in spec.kinds])}; {target} is not one")
    step = spec.parse(StepIn(item, s, action, target, declared.zones, device))
    return replace(step, label=s["label"].text() if "label" in s else f"{action}@{item.line}")


# --- expectations --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExpectIn:
    """One expectation being read: its keys, and the labels and devices it may name."""

    item: _Node
    keys: dict[str, _Node]
    kind: str
    ids: tuple[str, ...]
    labels: dict[str, Step]

    def need(self, *keys: str, usage: str) -> None:
        if not all(k in self.keys for k in keys):
            raise self.item.fail(f"'{self.kind}' needs {usage}")

    def event_type(self) -> str:
        return self.keys[self.kind].text(EVENT_TYPES)

    def device(self) -> str:
        # "gateway": the gateway's own events (heartbeats, SCANNER_BLIND, ...), whatever its id
        return self.keys["device"].text((*self.ids, GATEWAY)) if "device" in self.keys else ""

    def board(self) -> str:
        """A device with an LED and a buzzer (not the gateway)."""
        return self.keys["device"].text(self.ids) if "device" in self.keys else ""

    def after(self) -> str:
        if "after" not in self.keys:
            return ""
        after = self.keys["after"].text()
        if after not in self.labels:
            raise self.keys["after"].fail(f"no timeline step is labelled {after!r}")
        return after


def _expect_event(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.device()
    e.need("device", "within", usage="'device' and 'within'")
    return Expect(e.item.line, e.kind, e.event_type(), device, after, e.keys["within"].number(0.1))


def _expect_none(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.device()
    e.need("for", usage="'for: SECONDS'")
    return Expect(e.item.line, e.kind, e.event_type(), device, after, e.keys["for"].number(0.1))


def _expect_led(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.board()
    e.need("device", "within", usage="'device' and 'within'")
    colour = e.keys["led"].text(COLOURS)
    return Expect(e.item.line, e.kind, "", device, after, e.keys["within"].number(0.1), colour=colour)


def _expect_count(e: _ExpectIn) -> Expect:
    device = e.device()
    e.need("equals", usage="'equals: N'")
    return Expect(e.item.line, e.kind, e.event_type(), device, equals=e.keys["equals"].integer())


def _expect_latency(e: _ExpectIn) -> Expect:
    p50 = e.keys["p50_ms"].number(0, 600_000) if "p50_ms" in e.keys else None
    p99 = e.keys["p99_ms"].number(0, 600_000) if "p99_ms" in e.keys else None
    if p50 is None and p99 is None:
        raise e.item.fail("'latency' needs p50_ms and/or p99_ms")
    return Expect(e.item.line, e.kind, e.event_type(), p50_ms=p50, p99_ms=p99)


def _expect_order(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.device()
    types = tuple(t.text(EVENT_TYPES) for t in e.keys["order"].items())
    if len(types) < 2:
        raise e.keys["order"].fail("expected a list of two or more event types, e.g. [EXIT, BACK_INSIDE]")
    return Expect(e.item.line, e.kind, device=device, after=after, types=types)


def _expect_once(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.device()
    dup = e.keys["duplicates"].integer(0, 1000) if "duplicates" in e.keys else 0
    return Expect(e.item.line, e.kind, e.event_type(), device, after, duplicates=dup)


def _expect_held(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.board()
    e.need("device", "for", usage="'device' and 'for: SECONDS'")
    start = e.keys["from"].number(0, 3600) if "from" in e.keys else 0.0
    colour = e.keys["held"].text(COLOURS)
    return Expect(e.item.line, e.kind, "", device, after, e.keys["for"].number(0.1), colour=colour, start=start)


def _expect_sound(e: _ExpectIn) -> Expect:
    after, device = e.after(), e.board()
    e.need("device", "within", usage="'device' and 'within'")
    sound = e.keys["sound"].text(SOUNDS)
    return Expect(e.item.line, e.kind, "", device, after, e.keys["within"].number(0.1), sound=sound)


def _expect_zero_loss(e: _ExpectIn) -> Expect:
    if not e.keys["zero_loss"].flag():
        raise e.keys["zero_loss"].fail("only 'zero_loss: true' makes sense")
    return Expect(e.item.line, e.kind)


# expectation kind -> (the options it takes, its parser); docs/scenarios.md, "Expectations"
EXPECTATIONS: dict[str, tuple[tuple[str, ...], Callable[[_ExpectIn], Expect]]] = {
    "event": (("device", "after", "within"), _expect_event),
    "none": (("device", "after", "for"), _expect_none),
    "led": (("device", "after", "within"), _expect_led),
    "count": (("device", "equals"), _expect_count),
    "zero_loss": ((), _expect_zero_loss),
    "latency": (("p50_ms", "p99_ms"), _expect_latency),
    "order": (("device", "after"), _expect_order),
    "once": (("device", "after", "duplicates"), _expect_once),
    "held": (("device", "after", "from", "for"), _expect_held),
    "sound": (("device", "after", "within"), _expect_sound),
}


def _and(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _expectations(node: _Node, labels: dict[str, Step], ids: tuple[str, ...]) -> tuple[Expect, ...]:
    expects = tuple(_expectation(item, labels, ids) for item in node.items())
    if not expects:
        raise node.fail("a scenario without expectations proves nothing")
    return expects


def _expectation(item: _Node, labels: dict[str, Step], ids: tuple[str, ...]) -> Expect:
    known = tuple(dict.fromkeys(o for options, _ in EXPECTATIONS.values() for o in options))
    e = item.mapping((*EXPECTATIONS, *known))
    kinds = [k for k in EXPECTATIONS if k in e]
    if len(kinds) != 1:
        raise item.fail(f"each expectation has exactly one of: {', '.join(EXPECTATIONS)}")
    kind = kinds[0]
    options, parse = EXPECTATIONS[kind]
    for key in known:
        if key in e and key not in options:
            owners = [k for k, (opts, _) in EXPECTATIONS.items() if key in opts]
            raise e[key].fail(f"'{key}' applies to {_and(owners)}, not {kind}")
    return parse(_ExpectIn(item, e, kind, ids, labels))
