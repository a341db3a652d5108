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

KINDS = ("alarm_post",)
TRANSPORTS = ("mqtt",)
COLOURS = ("off", "red", "green", "blue", "amber", "cyan", "magenta", "white")
EVENT_TYPES = ("ALARM", "ALARM_HELD", "TAMPER", "ONLINE", "HEARTBEAT", "GATEWAY_HEARTBEAT")
PROCESSES = ("local_broker", "central_broker", "agent")
DEVICE_ACTIONS = ("press", "release", "click", "hold", "tamper_open", "tamper_close", "power_cut", "power_on")
PROCESS_ACTIONS = ("stop", "start", "kill", "restart")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: str
    zone: str
    transport: str
    line: int


@dataclass(frozen=True)
class Step:
    """One timeline entry: an action on a device or a process, or a wait."""

    line: int
    action: str  # one of DEVICE_ACTIONS, PROCESS_ACTIONS, or "wait"
    target: str  # device id, process name, or "" for wait
    label: str  # defaults to "<action>@<line>"
    ms: int = 0  # click/hold duration
    seconds: float = 0.0  # wait


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
    zones: tuple[str, ...]
    devices: tuple[DeviceSpec, ...]
    steps: tuple[Step, ...]
    expects: tuple[Expect, ...]
    settle_s: float = 5.0
    labels: dict[str, Step] = field(default_factory=dict)


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
    venue_map = top["venue"].mapping(("id", "zones"))
    if "id" not in venue_map:
        raise top["venue"].fail("missing 'id'")
    venue = venue_map["id"].text()
    zones = tuple(z.text() for z in venue_map["zones"].items()) if "zones" in venue_map else ()

    devices: list[DeviceSpec] = []
    for item in top["devices"].items():
        d = item.mapping(("id", "kind", "zone", "transport"))
        if "id" not in d:
            raise item.fail("missing 'id'")
        dev_id = d["id"].text()
        if any(x.id == dev_id for x in devices):
            raise d["id"].fail(f"device {dev_id!r} listed twice")
        zone = d["zone"].text() if "zone" in d else ""
        if zones and zone and zone not in zones:
            raise d["zone"].fail(f"zone {zone!r} is not one of the venue's zones ({', '.join(zones)})")
        devices.append(
            DeviceSpec(
                dev_id,
                d["kind"].text(KINDS) if "kind" in d else "alarm_post",
                zone,
                d["transport"].text(TRANSPORTS) if "transport" in d else "mqtt",
                item.line,
            )
        )
    if not devices:
        raise top["devices"].fail("at least one device is needed")
    ids = tuple(d.id for d in devices)

    steps: list[Step] = []
    labels: dict[str, Step] = {}
    for item in top["timeline"].items():
        s = item.mapping(("do", "device", "process", "ms", "seconds", "label", "wait"))
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
            label = s["label"].text() if "label" in s else f"{action}@{item.line}"
            if label in labels:
                raise s["label"].fail(f"label {label!r} used twice")
            step = Step(item.line, action, target, label, ms=ms)
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
    return Scenario(path, name, venue, zones, tuple(devices), tuple(steps), tuple(expects), settle, labels)
