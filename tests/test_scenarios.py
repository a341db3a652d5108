"""The shipped scenarios run on the simulated rig and pass; scenario files with mistakes are
refused with the file and line; a scenario whose expectation does not hold fails (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil_tests import runner
from hil_tests.scenario import ACTIONS, EXPECTATIONS, Action, ScenarioError, Step, StepIn, load
from hil_tests.sim.tools import REPO_ROOT

SCENARIOS = sorted((REPO_ROOT / "hil_tests" / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_passes(path: Path, tmp_path: Path, micropython: str) -> None:
    result = runner.run(load(path), tmp_path, micropython)
    failed = [o.as_json() for o in result.outcomes if not o.passed]
    assert result.passed, failed
    assert len(result.outcomes) == len(load(path).expects)


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
            ":8: expect[0].within: 'within' applies to event and led, not count",
        ),
        (
            "  - {event: ALARM, device: AP-1, after: p, within: 5}",
            "  - {latency: ALARM, p99_ms: 100, after: p}",
            ":8: expect[0].after: 'after' applies to event, none and led, not latency",
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
