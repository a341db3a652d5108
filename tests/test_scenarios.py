"""The shipped scenarios run on the simulated rig and pass; scenario files with mistakes are
refused with the file and line; a scenario whose expectation does not hold fails (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil_tests import runner
from hil_tests.scenario import ACTIONS, EXPECTATIONS, Action, ScenarioError, Step, StepIn, load
from hil_tests.sim.tools import REPO_ROOT

SCENARIOS = sorted((REPO_ROOT / "hil_tests" / "scenarios").glob("*.yaml"))


def _door_exit_and_venue_blind(rig: runner.SimRig) -> None:
    # what the scenario format cannot say: the gateway's SCANNER_BLIND about the exit zone itself
    # (data 4: the venue alert's context) besides the scanner's own, and why EXIT was raised
    venue = [e["data"] for e in rig.verifier.events(type_name="SCANNER_BLIND") if "4" in e["data"]]
    assert [(d["1"], d["3"], d["4"]["zone"], d["4"]["watched"]) for d in venue] == [("scan-door", 0, "Front door", 0)]
    (exit_alert,) = rig.verifier.events(device="WB-0001", type_name="EXIT")
    assert exit_alert["data"]["3"]["reason"].startswith("door front opened at "), exit_alert["data"]


# per shipped scenario, checks of the verified events beyond its expectations (while the rig runs)
EXTRA: dict[str, Callable[[runner.SimRig], None]] = {"wristband-exit-door-unwatched": _door_exit_and_venue_blind}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_passes(path: Path, tmp_path: Path, micropython: str) -> None:
    extra: list[AssertionError] = []

    def on_end(rig: runner.SimRig) -> None:
        try:
            EXTRA.get(path.stem, lambda _: None)(rig)
        except AssertionError as exc:
            extra.append(exc)

    result = runner.run(load(path), tmp_path, micropython, on_end=on_end)
    failed = [o.as_json() for o in result.outcomes if not o.passed]
    assert result.passed, failed
    assert len(result.outcomes) == len(load(path).expects)
    assert not extra, extra


GOOD = """\
name: t
venue: {id: v}
devices:
  - {id: AP-1}
timeline:
  - {do: click, device: AP-1, label: p}
expect:
  - {event: ALARM, device: AP-1, after: p, within: 5}
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("name: t", "name: t\ncolour: red", ":2: colour: unknown key 'colour'"),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: jump, device: AP-1, label: p}",
            ":6: timeline[0].do: expected one of",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: click, device: AP-9, label: p}",
            ":6: timeline[0].device: expected one of AP-1",
        ),
        ("after: p,", "after: q,", ":8: expect[0].after: no timeline step is labelled 'q'"),
        ("within: 5}", "within: -1}", ":8: expect[0].within: expected a number"),
        ("  - {id: AP-1}", "  - {id: AP-1}\n  - {id: AP-1}", ":5: devices[1].id: device 'AP-1' listed twice"),
        ("timeline:", "timeline: [", "not valid YAML"),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: hold, device: AP-1, label: p}",
            ":6: timeline[0]: 'hold' needs 'ms",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {event: ALARM, led: red, device: AP-1}",
            ":8: expect[0]: each",
        ),
        # venue sensors
        ("  - {id: AP-1}", "  - {id: AP-1, kind: sensor}", ":4: devices[0]: a sensor needs channels"),
        (
            "  - {id: AP-1}",
            "  - {id: AP-1, kind: sensor, channels: [{name: s, type: steam}]}",
            ":4: devices[0].channels[0].type: expected one of smoke, gas, door, extinguisher",
        ),
        (
            "  - {id: AP-1}",
            "  - {id: AP-1, kind: sensor, channels: [{name: s, type: smoke, confirm: 3}]}",
            ":4: devices[0].channels[0].confirm: unknown key",
        ),
        (
            "  - {id: AP-1}",
            "  - {id: AP-1, channels: [{name: s, type: smoke}]}",
            ":4: devices[0].channels: channels are for sensors; AP-1 is kind alarm_post",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: set, device: AP-1, sensor: smoke, value: 3, label: p}",
            ":6: timeline[0]: 'set' is for sensors; AP-1 is not one",
        ),
        (
            "  - {id: AP-1}\ntimeline:\n  - {do: click, device: AP-1, label: p}",
            "  - {id: AP-1, kind: sensor, channels: [{name: smoke, type: smoke}]}\ntimeline:\n"
            "  - {do: set, device: AP-1, sensor: gas, value: 3, label: p}",
            ":6: timeline[0].sensor: expected one of smoke",
        ),
        (
            "  - {id: AP-1}\ntimeline:\n  - {do: click, device: AP-1, label: p}",
            "  - {id: AP-1, kind: sensor, channels: [{name: smoke, type: smoke}]}\ntimeline:\n"
            "  - {do: set, device: AP-1, sensor: smoke, label: p}",
            ":6: timeline[0]: 'set' needs sensor: CHANNEL and value: READING",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: click, device: AP-1, value: 3, label: p}",
            ":6: timeline[0].value: 'value' applies to set, not click",
        ),
        # a key with no value is a mistake like any other, not a crash of the YAML loader
        ("{do: click, device: AP-1, label: p}", "{do: , device: AP-1, label: p}", ":6: timeline[0].do: expected text"),
        ("within: 5}", "within: }", ":8: expect[0].within: expected a number from 0.1 to 3600, got None"),
        # a key that belongs to another action or expectation is refused, never ignored
        (
            "{do: click, device: AP-1, label: p}",
            "{do: click, device: AP-1, process: agent, label: p}",
            ":6: timeline[0].process: 'click' acts on a device, not a process",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {count: ALARM, equals: 1, within: 5}",
            ":8: expect[0].within: 'within' applies to event, led and sound, not count",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {latency: ALARM, p99_ms: 100, after: p}",
            ":8: expect[0].after: 'after' applies to event, none, led, order, once, held and sound, not latency",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {led: red, colour: blue, device: AP-1, within: 5}",
            ":8: expect[0].colour: unknown key 'colour'",
        ),
        (
            "venue: {id: v}\ndevices:\n  - {id: AP-1}",
            "venue: {id: v, scanners: [{id: s, at: [1, 1], zone: z}]}\n"
            "devices:\n  - {id: AP-1, kind: wristband, at: [1, 1]}",
            ":4: devices[0]: wristbands need venue zones with rect and at least one scanner",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: click, device: AP-1, label: p}\n  - {do: click, device: AP-1, label: p}",
            ":7: timeline[1].label: label 'p' used twice",
        ),
        # settings: each section checked by the rules of the part it sets
        ("within: 5}", "within: 5}\nsettings:\n  radio: {loss: 1.5}", ":10: settings.radio: loss must be in [0, 1)"),
        (
            "within: 5}",
            "within: 5}\nsettings:\n  local_broker: cloud",
            ":10: settings.local_broker: expected one of test, packaged, got 'cloud'",
        ),
        ("within: 5}", "within: 5}\nsettings:\n  radio: {noise: 3}", ":10: settings.radio.noise: unknown key 'noise'"),
        (
            "within: 5}",
            "within: 5}\nsettings:\n  engine: {zone_confirm: 0}",
            ":10: settings.engine: settings.zone_confirm",
        ),
        (
            "within: 5}",
            "within: 5}\nsettings:\n  engine: {zone_confirm: 2.5}",
            ":10: settings.engine.zone_confirm: expected an integer",
        ),
        (
            "within: 5}",
            "within: 5}\nsettings:\n  devices: {resend_s: 0}",
            ":10: settings.devices.resend_s: expected an integer from 1 to 3600",
        ),
        (
            "within: 5}",
            "within: 5}\nsettings:\n  scanners: {watchdog_s: 1}",
            ":10: settings.scanners.watchdog_s: expected an integer from 2",
        ),
        # the gateway's reboot, scanner outages
        (
            "{do: click, device: AP-1, label: p}",
            "{do: reboot, process: gateway, label: p}",
            ":6: timeline[0]: 'reboot' needs 'down_s",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: reboot, process: agent, down_s: 5, label: p}",
            ":6: timeline[0].process: expected one of gateway, got 'agent'",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: reboot, down_s: 5, label: p}",
            ":6: timeline[0]: 'reboot' needs 'process: gateway'",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: scanner_down, scanner: s1, label: p}",
            ":6: timeline[0].scanner: expected one of (the venue has no scanners), got 's1'",
        ),
        (
            "{do: click, device: AP-1, label: p}",
            "{do: scanner_up, device: AP-1, label: p}",
            ":6: timeline[0]: 'scanner_up' needs 'scanner: ID'",
        ),
        # order, once, held, sound
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {order: [ALARM]}",
            ":8: expect[0].order: expected a list of two",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {order: [ALARM, BOOM]}",
            ":8: expect[0].order[1]: expected one of",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {once: ALARM, duplicates: -1}",
            ":8: expect[0].duplicates: expected an integer",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {held: blue, device: AP-1}",
            ":8: expect[0]: 'held' needs 'device' and 'for: SECONDS'",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {held: blue, device: gateway, for: 2}",
            ":8: expect[0].device: expected one of AP-1, got 'gateway'",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {sound: siren, device: AP-1, within: 2}",
            ":8: expect[0].sound: expected one of beep, double, t3, silent",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {sound: beep, device: AP-1, for: 2}",
            ":8: expect[0].for: 'for' applies to none and held, not sound",
        ),
        # doors name an exit zone and a sensor's door channel
        (
            "venue: {id: v}\ndevices:\n  - {id: AP-1}",
            "venue: {id: v, zones: [hall], doors: [{id: d, zone: hall, sensor: AP-1, channel: c}]}\n"
            "devices:\n  - {id: AP-1}",
            ":2: venue.doors[0].zone: the venue has no exit zone",
        ),
    ],
)
def test_mistakes_name_file_and_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ScenarioError) as exc:
        load(path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value), str(exc.value)


def test_every_action_is_one_row_runnable_and_documented() -> None:
    device_actions = {name for name, a in ACTIONS.items() if a.on == "device"}
    assert set(runner.SIM_DEVICE_ACTIONS) == device_actions
    assert set(runner.BENCH_ACTIONS) <= device_actions
    docs = (REPO_ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")
    actions = docs[docs.index("## Actions") : docs.index("## Expectations")]
    expectations = docs[docs.index("## Expectations") : docs.index("## Summary")]
    assert [a for a in ACTIONS if f"`{a}`" not in actions] == []
    assert [k for k in EXPECTATIONS if f"`{k}" not in expectations] == []


def test_a_new_action_is_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(s: StepIn) -> Step:
        return s.step(value=s.keys["times"].integer(1, 5))

    monkeypatch.setitem(ACTIONS, "beep", Action("device", ("alarm_post",), ("times",), parse))
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("{do: click, device: AP-1, label: p}", "{do: beep, device: AP-1, times: 3, label: p}"))
    (step,) = load(path).steps
    assert (step.action, step.target, step.value, step.label) == ("beep", "AP-1", 3, "p")
    path.write_text(GOOD.replace("{do: click, device: AP-1, label: p}", "{do: click, device: AP-1, times: 3}"))
    with pytest.raises(ScenarioError, match=r":6: timeline\[0\]\.times: 'times' applies to beep, not click"):
        load(path)


def test_a_failing_expectation_fails_the_run_with_json(tmp_path: Path, micropython: str) -> None:
    path = tmp_path / "s.yaml"
    # the post is never pressed: no ALARM arrives, and the JSON says which line failed
    path.write_text(
        GOOD.replace("{do: click, device: AP-1, label: p}", "{wait: 0.1, label: p}")
        .replace("- {wait: 0.1, label: p}", "- {do: power_on, device: AP-1, label: p}")
        .replace("within: 5", "within: 1")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hil_tests.cli", "run", str(path), "--json", "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["passed"] is False
    assert summary["expectations"] == [
        {
            "line": 8,
            "kind": "event",
            "what": "ALARM from AP-1 within 1 s after p",
            "passed": False,
            "detail": "no ALARM from AP-1 at central within 1 s",
        }
    ]


def test_buzzer_patterns_from_the_output_history() -> None:
    def pulses(*spans: tuple[float, float]) -> list[tuple[float, int]]:
        return [change for a, b in spans for change in ((a, 1), (b, 0))]

    assert runner.sound_of(pulses((1.0, 1.12)), 0.5, 3.0) == ["beep"]
    assert runner.sound_of(pulses((1.0, 1.12), (1.24, 1.36)), 0.5, 3.0) == ["double"]  # help is coming
    assert runner.sound_of(pulses((1.0, 1.12), (2.0, 2.12)), 0.5, 3.0) == ["beep", "beep"]
    assert runner.sound_of(pulses((1.0, 2.0)), 0.5, 3.0) == ["tone"]
    assert runner.sound_of(pulses((0.2, 0.3)), 0.5, 3.0) == []  # before the window
    t3 = pulses((0.0, 0.5), (1.0, 1.5), (2.0, 2.5), (4.0, 4.5), (5.0, 5.5), (6.0, 6.5))
    assert runner.sound_of(t3, -0.1, 8.0) == ["t3"]
    assert runner.sound_of(t3, -0.1, 3.0) != ["t3"], "the 1.5 s pause is part of the pattern"
    uneven = pulses((0.0, 0.5), (1.0, 1.2), (2.0, 2.5), (4.0, 4.5))
    assert runner.sound_of(uneven, -0.1, 8.0) != ["t3"]


class FakeVerifier:
    def __init__(self, events: list[dict[str, Any]], again: list[dict[str, Any]]) -> None:
        self._events, self._again = events, again

    def events(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self._events if all(e.get(k) == v for k, v in match.items())]

    def records_of(self, *kinds: str) -> list[dict[str, Any]]:
        return [r for r in self._again if r["kind"] in kinds]


class FakeRig:
    def __init__(self, verifier: FakeVerifier, leds: list[tuple[float, str]] | None = None) -> None:
        self.verifier = verifier
        self.leds = leds or []

    def led_history(self, device: str) -> list[tuple[float, str]]:
        return self.leds


def _ev(typ: str, device: str, seq: int, batch: int, t: float) -> dict[str, Any]:
    return {
        "kind": "event",
        "type_name": typ,
        "device": device,
        "boot": 1,
        "seq": seq,
        "gateway": "GW-1",
        "epoch": 7,
        "batch": batch,
        "central_ms": int(t * 1000),
    }


def _judge(tmp_path: Path, expect: str, rig: FakeRig) -> runner.Outcome:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("  - {event: ALARM, device: AP-1, after: p, within: 5}", f"  - {expect}"))
    sc = load(path)
    judge = runner.Judge(sc, rig, 100.0, 100.0)  # type: ignore[arg-type]
    judge.stamp(sc.steps[0], 100.0, 100.0)
    outcome = judge.check(sc.expects[0], final=True)
    assert outcome is not None
    return outcome


def test_once_counts_every_repeated_delivery_and_order_is_exact(tmp_path: Path) -> None:
    exit_ = _ev("EXIT", "AP-1", 2, 3, 101.0)
    back = _ev("BACK_INSIDE", "AP-1", 4, 5, 120.0)
    clean = FakeRig(FakeVerifier([exit_, back], []))
    assert _judge(tmp_path, "{once: EXIT, device: AP-1}", clean).passed
    assert _judge(tmp_path, "{order: [EXIT, BACK_INSIDE], device: AP-1}", clean).passed
    # its batch delivered again, and the event once more in another batch: three deliveries
    again = [
        {"kind": "duplicate_batch", "gateway": "GW-1", "epoch": 7, "seq": 3},
        {"kind": "duplicate_event", "device": "AP-1", "boot": 1, "seq": 2, "batch": 9},
        {"kind": "duplicate_batch", "gateway": "GW-1", "epoch": 7, "seq": 5},  # another batch: not EXIT's
    ]
    twice = FakeRig(FakeVerifier([exit_, back], again))
    out = _judge(tmp_path, "{once: EXIT, device: AP-1}", twice)
    assert not out.passed and "2 repeated deliveries" in out.detail
    assert _judge(tmp_path, "{once: EXIT, device: AP-1, duplicates: 2}", twice).passed
    second = FakeRig(FakeVerifier([exit_, _ev("EXIT", "AP-1", 3, 4, 110.0), back], []))
    out = _judge(tmp_path, "{order: [EXIT, BACK_INSIDE], device: AP-1}", second)
    assert not out.passed and out.detail == "central got EXIT then EXIT then BACK_INSIDE"
    assert not _judge(tmp_path, "{once: EXIT}", second).passed
    before = FakeRig(FakeVerifier([_ev("EXIT", "AP-1", 2, 3, 99.0), back], []))  # before the step: not counted
    assert _judge(tmp_path, "{order: [EXIT, BACK_INSIDE], after: p}", before).detail == "central got BACK_INSIDE"


def test_held_needs_the_colour_all_along_the_window(tmp_path: Path) -> None:
    expect = "{held: amber, device: AP-1, after: p, from: 1, for: 3}"
    steady = FakeRig(FakeVerifier([], []), [(99.0, "off"), (100.2, "amber"), (106.0, "green")])
    assert _judge(tmp_path, expect, steady).passed
    early = FakeRig(FakeVerifier([], []), [(100.2, "amber"), (103.5, "blue")])
    out = _judge(tmp_path, expect, early)
    assert not out.passed and out.detail == "LED went blue 2.50 s into the window"
    late = FakeRig(FakeVerifier([], []), [(101.5, "amber")])
    assert _judge(tmp_path, expect, late).detail == "LED was off when the window began"
