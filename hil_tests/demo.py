"""`make demo`: the venue-demo scenario (hil_tests/scenarios/venue-demo.yaml) on the simulated
rig, with a live terminal view.

The rig is the real software on this machine: two Mosquitto brokers (the gateway's local one
and central's), three alarm posts running the real firmware in the MicroPython unix port, the
gateway agent and central's verifier (which checks every batch signature, the hash chain and
every device MAC). The scenario presses each post's button through its control socket. The
view shows each post's LED, the alarms as central verified them with their press-to-central
latency (from the button going down, so it includes the 30 ms debounce), and the gateway's
buffer per lane and uplink state (its Prometheus metrics). It ends with the scenario's summary.
Exit status 0 when every expectation held, 1 when one failed, 2 when the demo could not run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hil_tests import runner
from hil_tests.scenario import ScenarioError, load
from hil_tests.sim.board import BoardError
from hil_tests.sim.gateway import ProcessError
from hil_tests.sim.mosquitto import BrokerError
from hil_tests.sim.tools import REPO_ROOT, find_micropython

SCENARIO = REPO_ROOT / "hil_tests" / "scenarios" / "venue-demo.yaml"
_LED_STYLE = {
    "amber": "bold yellow",
    "blue": "bold blue",
    "green": "bold green",
    "white": "bold white",
    "red": "bold red",
    "magenta": "bold magenta",
    "off": "dim",
}


def view(rig: runner.SimRig, started: float) -> Group:
    """One frame of the live view."""
    devices = Table(title="devices", expand=True)
    for col in ("device", "zone", "LED", "LED history", "last console line"):
        devices.add_column(col)
    zones = {d.id: d.zone for d in rig.scenario.devices}
    for dev_id, board in rig.boards.items():
        out = board.console_output(max(0, board.console_offset - 400)).decode(errors="replace").strip().splitlines()
        history = " > ".join(c for _, c in board.led_history[-5:])
        led = board.led
        devices.add_row(
            dev_id, zones[dev_id], Text(led, style=_LED_STYLE.get(led, "")), history, out[-1] if out else ""
        )

    alarms = Table(title="verified at central (gateway signature, chain, device MAC)", expand=True)
    for col in ("device", "event", "boot/seq", "batch", "gateway -> central"):
        alarms.add_column(col)
    for ev in rig.verifier.events()[-8:]:
        alarms.add_row(
            ev["device"],
            ev["type_name"],
            f"{ev['boot']}/{ev['seq']}",
            str(ev["batch"]),
            f"{ev['gateway_to_central_ms']} ms",
        )

    m = rig.gateway_metrics()
    lanes = " ".join(f"{lane}={int(m.get(f'ge_backlog_events{{lane={lane}}}', 0))}" for lane in ("P0", "P1", "P2"))
    uplink = "up" if m.get("ge_uplink_up") else "DOWN"
    oldest = m.get("ge_oldest_undelivered_seconds", 0)
    accepted = int(m.get("ge_frames_accepted_total", 0))
    delivered = int(m.get("ge_events_delivered_total", 0))
    gateway = Text(
        f"gateway: uplink {uplink}   buffer {lanes}   oldest undelivered {oldest:.1f} s"
        f"   accepted {accepted}   delivered {delivered}   t={time.monotonic() - started:.1f} s"
    )
    return Group(devices, alarms, gateway)


def summary_table(result: runner.Result) -> Table:
    table = Table(title=f"{result.scenario.name}: {'passed' if result.passed else 'FAILED'}", expand=True)
    for col in ("", "line", "expectation", "measured"):
        table.add_column(col)
    for o in result.outcomes:
        mark = Text("PASS", style="green") if o.passed else Text("FAIL", style="bold red")
        lat = f"{o.latency_ms:.0f} ms" if o.latency_ms is not None else ""
        table.add_row(mark, str(o.expect.line), o.expect.describe(), " ".join(x for x in (lat, o.detail) if x))
    return table


def run(workdir: Path, micropython: str, console: Console, live: bool) -> int:
    scenario = load(SCENARIO)
    started = time.monotonic()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    final: dict[str, Any] = {}

    def on_start(rig: runner.SimRig) -> None:
        if not live:
            return

        def refresh() -> None:
            with Live(view(rig, started), console=console, refresh_per_second=8, transient=False) as display:
                while not stop.wait(0.125):
                    display.update(view(rig, started))
                final["frame"] = view(rig, started)
                display.update(final["frame"])

        t = threading.Thread(target=refresh, name="demo-view", daemon=True)
        t.start()
        threads.append(t)

    def say(msg: str) -> None:
        if not live:
            console.print(msg)

    def on_end(rig: runner.SimRig) -> None:
        # the last frame is drawn while the rig still runs
        stop.set()
        for t in threads:
            t.join(5)
        if not live:
            for dev_id, board in rig.boards.items():
                console.print(f"{dev_id}: LED {' -> '.join(c for _, c in board.led_history)}")

    try:
        result = runner.run(scenario, workdir, micropython, say, on_start, on_end)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    console.print(summary_table(result))
    console.print(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description="The venue demo on the simulated rig.")
    parser.add_argument("--workdir", type=Path, help="keep logs and flash directories here (default: a temp dir)")
    parser.add_argument("--plain", action="store_true", help="no live view (the default when not on a terminal)")
    args = parser.parse_args(argv)
    console = Console()
    micropython = find_micropython()
    if micropython is None:
        print("demo: the MicroPython unix port is needed; run `make setup` or pass MICROPYTHON=/path", file=sys.stderr)
        return 2
    live = console.is_terminal and not args.plain
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            return run(args.workdir, micropython, console, live)
        with tempfile.TemporaryDirectory(prefix="ge-demo-") as tmp:
            return run(Path(tmp), micropython, console, live)
    except (ScenarioError, BoardError, ProcessError, BrokerError, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
