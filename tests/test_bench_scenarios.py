"""`guardian-rig run SCENARIO --rig bench.yaml`: the bench runner drives devices through the
fixture's serial line protocol, samples their LEDs through it, reads their consoles and asks
central's verifier, with nothing but the bench file to go on. Here the bench file names
simulated hardware (virtual boards' console ptys, the simulated fixture's pty, a gateway of
real brokers and the real agent), so the bench code path runs end to end in CI; a scenario a
bench cannot play is refused before anything is touched."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hil_tests.runner import SimRig
from hil_tests.scenario import load
from hil_tests.sim.fixture import SimFixture
from hil_tests.sim.tools import REPO_ROOT

SCENARIO = """\
name: bench smoke and press
venue: {id: rig}
devices:
  - {id: AP-0001, kind: alarm_post}
  - id: VS-0001
    kind: sensor
    channels: [{name: smoke, type: smoke, confirm_ms: 1000, clear_ms: 1000}]
timeline:
  - {do: click, device: AP-0001, label: press}
  - {do: set, device: VS-0001, sensor: smoke, value: 500, label: fire}
  - wait: 2.5
  - {do: set, device: VS-0001, sensor: smoke, value: 10, label: aired}
expect:
  - {event: ALARM, device: AP-0001, after: press, within: 5}
  - {led: green, device: AP-0001, after: press, within: 5}
  - {event: SMOKE, device: VS-0001, after: fire, within: 5}
  - {led: red, device: VS-0001, after: fire, within: 5}
  - {event: SENSOR_CLEAR, device: VS-0001, after: aired, within: 5}
  - {none: SMOKE, device: AP-0001, after: press, for: 1}
  - {count: SMOKE, equals: 1}
  - zero_loss: true
"""


def _rig(args: list[str], cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hil_tests.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@pytest.fixture
def bench(tmp_path: Path, micropython: str) -> Iterator[Path]:
    """A bench file for the scenario's venue (one alarm post, one smoke sensor), as a bench has
    it: the simulated rig's devices running and provisioned for its gateway, the fixture on a
    serial port. Central's verifier is the bench runner's own, so the rig's is stopped."""
    source = tmp_path / "venue.yaml"
    source.write_text(SCENARIO)
    rig = SimRig(load(source), tmp_path / "venue", micropython)
    try:
        rig.start()
        rig.verifier.stop()  # one verifier per central broker client id: the bench runner's
        rig.boards["VS-0001"].set_value("smoke", 10)
        boards = [rig.boards["AP-0001"], rig.boards["VS-0001"]]
        fixture = SimFixture(boards)
        try:
            path = tmp_path / "bench.yaml"
            path.write_text(
                yaml.safe_dump(
                    {
                        "fixture": {"path": fixture.port},
                        "central": {
                            "broker": f"{rig.central.address[0]}:{rig.central.address[1]}",
                            "gateway_key": str(rig.agent.public_key_file),
                            "device_keys": str(rig.agent.devices_file),
                        },
                        "devices": [
                            {"id": b.name, "channel": ch, "console": {"path": b.console_path}}
                            for ch, b in enumerate(boards)
                        ],
                    }
                )
            )
            yield path
        finally:
            fixture.close()
    finally:
        rig.close()


def test_a_scenario_runs_on_a_bench_through_the_fixture_and_consoles(bench: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "bench-smoke.yaml"
    scenario.write_text(SCENARIO)
    proc = _rig([str(scenario), "--rig", str(bench), "--json"], REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rig"] == str(bench) and summary["passed"] is True
    assert "infra_errors" not in summary
    by_line = {e["line"]: e for e in summary["expectations"]}
    assert by_line[21]["detail"].startswith("2 saved alarms")  # the post's ALARM and the sensor's SMOKE
    assert all(e["passed"] for e in summary["expectations"]), summary


def test_a_bench_refuses_what_only_the_simulation_can_do(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.replace("  - wait: 2.5\n", "  - wait: 2.5\n  - {do: kill, process: agent}\n"))
    proc = _rig([str(scenario), "--rig", str(tmp_path / "no-such-bench.yaml")], REPO_ROOT, timeout=30)
    assert proc.returncode == 2
    assert f"{scenario}:12: 'kill agent' cannot run on a bench" in proc.stderr and "--rig sim" in proc.stderr


def test_a_missing_bench_file_is_named(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    proc = _rig([str(scenario), "--rig", str(tmp_path / "no-such-bench.yaml")], REPO_ROOT, timeout=30)
    assert proc.returncode == 2 and "no-such-bench.yaml" in proc.stderr, proc.stderr
