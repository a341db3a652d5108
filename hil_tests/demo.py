"""`make demo`: a simulated venue, end to end, on this machine.

Two Mosquitto brokers on free loopback ports (the gateway's local one and central's), three
alarm posts running the real firmware in the MicroPython unix port, the gateway agent and the
central verifier as real processes. Each post's button is pressed through its control socket;
for each alarm the demo prints the event as central verified it, the press-to-central latency
(from the button going down, so it includes the 30 ms debounce) and the post's LED once the
receipts are back. Everything it started is stopped at the end. Exit status 0 when every alarm
was verified at central with a clean chain, 1 otherwise, 2 when the demo could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.registry import Device
from hil_tests.sim.board import BoardError, VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, firmware_files
from hil_tests.sim.gateway import AgentProcess, CentralVerifier, ProcessError
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import find_micropython

POSTS = (("AP-0001", "entrance"), ("AP-0002", "bar"), ("AP-0003", "kitchen"))
VENUE = "demo-venue"


def _say(msg: str) -> None:
    print(msg, flush=True)


def run(workdir: Path, micropython: str, timeout: float) -> int:
    keys = {dev: secrets.token_bytes(32) for dev, _ in POSTS}
    devices = [Device(dev, "alarm_post", keys[dev], VENUE, zone) for dev, zone in POSTS]
    with contextlib.ExitStack() as stack:
        local = Mosquitto(workdir / "local", name="local", persistence=True)
        central = Mosquitto(workdir / "central", name="central", persistence=True)
        for broker in (local, central):
            broker.start()
            stack.callback(broker.kill)
        _say(f"brokers   local 127.0.0.1:{local.port}   central 127.0.0.1:{central.port}")

        agent = AgentProcess(workdir / "gateway", local.address, central.address, devices, "GW-DEMO", VENUE)
        # central holds the device keys too (the registry), so it audits every device MAC
        verifier = CentralVerifier(central.address, [agent.public_key_file], device_keys=agent.devices_file)
        verifier.start()
        stack.callback(verifier.stop)
        agent.start()
        stack.callback(agent.stop)
        agent.wait_log("uplink_up")
        _say(f"gateway   GW-DEMO running, log {agent.log_path}")

        boards: dict[str, VirtualBoard] = {}
        for dev, _ in POSTS:
            board = VirtualBoard(dev, workdir / dev, micropython=micropython)
            stack.callback(board.close)
            board.install(firmware_files("alarm_post"), alarm_post_config(dev, keys[dev], local.address))
            board.power_on()
            boards[dev] = board
        for board in boards.values():
            board.wait_console("alarm_post: connected", timeout=15)
        _say(f"posts     {', '.join(boards)} booted the firmware and connected; console logs in {workdir}")

        pressed: dict[str, float] = {}
        for dev, board in boards.items():
            pressed[dev] = time.time()
            board.click()
            time.sleep(0.2)  # one press after another, like a person walking past the posts
        deadline = time.monotonic() + timeout

        def alarms() -> dict[str, dict[str, Any]]:
            return {e["device"]: e for e in verifier.events(type_name="ALARM")}

        verifier.wait_for(lambda: len(alarms()) == len(boards), max(0.0, deadline - time.monotonic()))
        for board in boards.values():
            with contextlib.suppress(BoardError):
                board.wait_led("green", timeout=max(0.1, deadline - time.monotonic()))

        got = alarms()
        _say("")
        title = "verified at central (gateway signature, chain, device MAC)"
        _say(f"{'post':8} {'zone':9} {title:60} {'latency':>8}  LED")
        ok = True
        for dev, zone in POSTS:
            board = boards[dev]
            leds = " -> ".join(c for _, c in board.led_history)
            ev = got.get(dev)
            if ev is None:
                ok = False
                _say(f"{dev:8} {zone:9} {'NOT VERIFIED':60} {'-':>8}  {leds}")
                continue
            what = f"{ev['type_name']} boot {ev['boot']} seq {ev['seq']} P{ev['priority']} batch {ev['batch']}"
            latency = ev["central_ms"] - pressed[dev] * 1000
            _say(f"{dev:8} {zone:9} {what:60} {latency:6.0f}ms  {leds}")
            if board.led != "green":
                ok = False
        problems = verifier.problems()
        for p in problems:
            _say(f"verifier  problem: {p}")
        ok = ok and not problems
        events = verifier.events()
        _say("")
        _say(f"central   {len(events)} events verified ({', '.join(sorted({e['type_name'] for e in events}))})")
    stats = agent.stats()
    if stats:
        _say(f"gateway   {' '.join(f'{k}={v}' for k, v in stats.items())}")
    _say("result    " + ("every alarm verified at central, every post green" if ok else "FAILED: see above"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, help="keep logs and flash directories here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the alarms (default 30)")
    args = parser.parse_args(argv)
    micropython = find_micropython()
    if micropython is None:
        print("demo: the MicroPython unix port is needed; run `make setup` or pass MICROPYTHON=/path", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            rc = run(args.workdir, micropython, args.timeout)
        else:
            with tempfile.TemporaryDirectory(prefix="ge-demo-") as tmp:
                rc = run(Path(tmp), micropython, args.timeout)
    except (BoardError, ProcessError, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    _say(f"demo      finished in {time.monotonic() - start:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
