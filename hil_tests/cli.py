"""guardian-rig: runs scenarios (docs/scenarios.md) on the simulated rig or a bench.

    guardian-rig run SCENARIO [--rig sim|BENCH.yaml] [--json] [--workdir DIR]
    guardian-rig check SCENARIO [SCENARIO ...]
    guardian-rig practice [--dir DIR] [--posts N] [--sensors N] [--bands N]

`run` exits 0 only if every expectation held; 1 if one failed; 2 when the scenario or the
rig could not be used (the message says why). User errors print as `guardian-rig: message`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agent.shared.cli_table import Command, add_commands, handler_of
from hil_tests import runner
from hil_tests.rig.errors import RigInfraError
from hil_tests.scenario import ScenarioError, load
from hil_tests.sim.board import BoardError
from hil_tests.sim.gateway import ProcessError
from hil_tests.sim.mosquitto import BrokerError
from hil_tests.sim.tools import find_micropython

PROG = "guardian-rig"


class RigError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def cmd_check(args: argparse.Namespace) -> int:
    for path in args.scenario:
        sc = load(path)
        print(
            f"{path}: ok ({sc.name}: {len(sc.devices)} devices, {len(sc.steps)} steps, {len(sc.expects)} expectations)"
        )
    return 0


def cmd_practice(args: argparse.Namespace) -> int:
    """A practice venue until Ctrl-C (hil_tests/practice.py)."""
    import time

    from hil_tests.practice import PracticeVenue, Tray

    micropython = find_micropython()
    if micropython is None:
        raise RigError("practice needs the MicroPython unix port (make setup, or MICROPYTHON=/path)")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="ge-practice-"))
    with PracticeVenue(workdir, Tray(args.posts, args.sensors, args.bands), micropython) as venue:
        venue.start()
        print(venue.plan(workdir / "station"), flush=True)
        try:
            while True:
                venue.watch(lambda m: print(m, flush=True))
                time.sleep(1)  # the gateway looks at its inbox once a second
        except KeyboardInterrupt:
            print("practice venue stopped", flush=True)
    return 0


def _count(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"expected 0 to 16, got {text!r}")
    return int(text)


def _practice_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, help="where the venue lives (default: a new temporary directory)")
    p.add_argument("--posts", type=_count, default=3, help="virtual alarm posts (default 3)")
    p.add_argument("--sensors", type=_count, default=1, help="virtual venue sensors (default 1)")
    p.add_argument("--bands", type=_count, default=1, help="virtual wristbands (default 1)")


def cmd_run(args: argparse.Namespace) -> int:
    scenario = load(args.scenario)
    bench = None if args.rig == "sim" else Path(args.rig)
    micropython = find_micropython()
    if bench is None and micropython is None:
        raise RigError("the simulated rig needs the MicroPython unix port (make setup, or MICROPYTHON=/path)")
    say: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if args.json else print
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result = runner.run(scenario, args.workdir, micropython, say, bench=bench)
        else:
            with tempfile.TemporaryDirectory(prefix="ge-rig-") as tmp:
                result = runner.run(scenario, Path(tmp), micropython, say, bench=bench)
    except pytest.UsageError as exc:  # the bench file (shared with the pytest plugin)
        raise RigError(str(exc)) from exc
    except (BoardError, ProcessError, BrokerError, RigInfraError) as exc:
        raise RigError(f"the rig failed (infrastructure, not the product): {exc}") from exc
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        for o in result.outcomes:
            mark = "PASS" if o.passed else "FAIL"
            lat = f" ({o.latency_ms:.0f} ms)" if o.latency_ms is not None else ""
            detail = f": {o.detail}" if o.detail else ""
            print(f"{mark} line {o.expect.line}: {o.expect.describe()}{lat}{detail}")
        verdict = "passed" if result.passed else "FAILED"
        for what in result.infra[:5]:
            print(f"rig trouble during the run: {what}")
        print(f"{scenario.name}: {verdict} in {result.duration_s:.1f} s")
    return 0 if result.passed else 1


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", type=Path)
    p.add_argument("--rig", default="sim", help="'sim' (default): the simulated rig; or a bench file (docs/hil.md)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--workdir", type=Path, help="keep logs and flash directories here")


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", type=Path, nargs="+")


COMMANDS = (
    Command("run", cmd_run, _run_arguments, "run a scenario and judge its expectations"),
    Command("check", cmd_check, _check_arguments, "validate scenario files"),
    Command(
        "practice",
        cmd_practice,
        _practice_arguments,
        "a practice venue: blank virtual boards, broker and gateway, to rehearse guardian-provision",
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Run Guardian Edge scenarios on the rig.")
    add_commands(parser, COMMANDS)
    args = parser.parse_args(argv)
    try:
        return handler_of(args)(args)
    except (ScenarioError, RigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
