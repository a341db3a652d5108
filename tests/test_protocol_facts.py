"""The firmware's own protocol constants agree with agent/shared/protocol.py.

The firmware cannot import CPython code, so it keeps its own numbers (firmware/lib/frame.py,
firmware/lib/reporter.py, firmware/lib/link.py, firmware/main.py, the apps). Its source is read
with ast, as written (no interpreter needed), and compared with the protocol module: event type
codes and names, receipt kinds, the frame flags and external_aad labels, lanes, topic shapes and
device kinds.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import pytest

from agent.shared import protocol
from agent.shared.protocol import EventType, priority_of

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


def _constants(path: Path) -> dict[str, Any]:
    """Module-level NAME = literal (or const(literal)) assignments of a firmware module."""
    out: dict[str, Any] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "const":
            value = value.args[0]
        try:
            out[node.targets[0].id] = ast.literal_eval(value)
        except ValueError:
            continue
    return out


def _strings(path: Path) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


FRAME = _constants(FIRMWARE / "lib" / "frame.py")


def test_event_types_match_by_name_and_code() -> None:
    firmware = {name[2:]: value for name, value in FRAME.items() if name.startswith("T_")}
    assert firmware, "no T_ constants found in firmware/lib/frame.py"
    for name, code in firmware.items():
        assert name in EventType.__members__, f"firmware T_{name} = {code} is not a protocol event type"
        assert EventType[name] == code, f"firmware T_{name} = {code}, protocol {name} = {int(EventType[name])}"
    # every type a device raises in a frame has its constant on the device
    devices = {protocol.ALARM_POST, protocol.SENSOR}
    raised = {t.name for t, who in protocol.RAISED_BY.items() if devices & set(who)}
    assert raised == set(firmware), f"device-raised types without a firmware constant: {sorted(raised - set(firmware))}"


def test_every_type_has_a_raiser_and_a_lane_in_its_range() -> None:
    assert set(protocol.RAISED_BY) == set(EventType)
    assert [priority_of(t) for t in (1, 63, 64, 127, 128, 255)] == [0, 0, 1, 1, 2, 2]
    assert protocol.type_name(2) == "ALARM_HELD" and protocol.type_name(200) == "TYPE_200"


def test_receipt_kinds_flags_and_labels() -> None:
    firmware = {name[2:]: value for name, value in FRAME.items() if name.startswith("R_")}
    assert firmware == {name: kind for kind, name in protocol.RECEIPT_NAMES.items()}
    assert firmware == {"STORED": 1, "DELIVERED": 2, "ACKNOWLEDGED": 3, "DROPPED": 4}  # pinned (docs/protocol.md §3)
    assert FRAME["FLAG_RECEIPTS"] == protocol.FLAG_RECEIPTS == 1
    assert FRAME["AAD_FRAME"] == protocol.AAD_FRAME == b"ge/1/frame"
    assert FRAME["AAD_RECEIPT"] == protocol.AAD_RECEIPT == b"ge/1/receipt"


def test_lanes_the_firmware_gives_its_events() -> None:
    reporter = _constants(FIRMWARE / "lib" / "reporter.py")
    lanes = {name: reporter[name] for name in ("P0", "P1") if name in reporter}
    assert lanes == {"P0": protocol.P0, "P1": protocol.P1}
    # wherever a lane and an event type stand side by side, (P1, frame.T_TAMPER) or
    # (frame.T_SMOKE, P0, ...), the lane is the type's
    checked: set[str] = set()
    for path in sorted((FIRMWARE / "apps").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            items = node.elts if isinstance(node, ast.Tuple) else node.args if isinstance(node, ast.Call) else []
            for a, b in itertools.pairwise(items):
                for lane, typ in ((a, b), (b, a)):
                    if (
                        isinstance(lane, ast.Name)
                        and lane.id in lanes
                        and isinstance(typ, ast.Attribute)
                        and typ.attr.startswith("T_")
                    ):
                        name = typ.attr[2:]
                        where = f"{path.relative_to(FIRMWARE)}:{typ.lineno}"
                        assert lanes[lane.id] == EventType[name].lane, f"{where}: {name} sent as {lane.id}"
                        checked.add(name)
    assert {"TAMPER", "SMOKE", "GAS", "DOOR_HELD_OPEN", "EXTINGUISHER", "SENSOR_CLEAR", "SENSOR_FAULT"} <= checked


@pytest.mark.parametrize("module", ["lib/link.py", "lib/reporter.py"])
def test_local_topic_shapes(module: str) -> None:
    shapes = {protocol.device_up("%s"), protocol.device_down("%s"), protocol.device_status("%s")}
    assert shapes == {"ge/dev/%s/up", "ge/dev/%s/down", "ge/dev/%s/status"}  # pinned (docs/protocol.md §5)
    used = {s for s in _strings(FIRMWARE / module) if s.startswith("ge/")}
    assert used and used <= shapes, f"{module} uses topics {sorted(used - shapes)} the protocol does not have"


def test_central_topic_shapes() -> None:
    topics = protocol.gateway_topics("V", "GW")
    assert topics == ("venues/V/gateways/GW/batches", "venues/V/gateways/GW/status", "venues/V/gateways/GW/commands")
    assert protocol.BATCH_FILTER == "venues/+/gateways/+/batches"


def test_device_kinds_are_the_firmware_apps() -> None:
    main = ast.parse((FIRMWARE / "launch.py").read_text())  # main.py imports launch.py, which starts the app
    started = {
        n.comparators[0].value
        for n in ast.walk(main)
        if isinstance(n, ast.Compare)
        and isinstance(n.left, ast.Name)
        and n.left.id == "kind"
        and isinstance(n.comparators[0], ast.Constant)
    }
    assert started == set(protocol.DEVICE_KINDS)
    apps = {p.name for p in (FIRMWARE / "apps").iterdir() if (p / "app.py").exists()}
    assert apps - {"rig_fixture"} == set(protocol.DEVICE_KINDS)
