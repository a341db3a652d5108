"""Where the agent's time goes under the throughput load: cProfile on every agent thread.

    python -m tests.bench.profile [--events N] [--top 40] [--sort tottime]

Runs the pipeline_throughput scenario once (fresh brokers, central sink, one publisher) with
the agent started as `python -m tests.bench.profile agent --config FILE --out FILE`, which
runs `guardian-agent run` with a profiler on the event loop and on the committer thread, and
merges both when the agent stops. cProfile slows Python code down by a factor of about two,
so compare the shares, not the absolute times, with `make bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import threading
import time

from tests.bench import rig
from tests.bench.rig import Publisher, Rig, progress


def agent_main(config: str, out: str) -> int:
    """The agent's CLI with a profiler per thread; stats merged into `out` at exit."""
    from agent.cli import main

    profiles: list[cProfile.Profile] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        profiles.append(prof)
        prof.runcall(original_run, self)

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main_prof = cProfile.Profile()
    try:
        return int(main_prof.runcall(main, ["run", "--config", config]))
    finally:
        time.sleep(0.5)  # let the committer thread finish its profile
        stats = pstats.Stats(main_prof)
        for prof in profiles:
            with contextlib.suppress(TypeError):  # a thread still running has no stats yet
                stats.add(prof)
        stats.dump_stats(out)


def scenario(events: int, top: int, sort: str) -> None:
    devices = rig.fleet(100)
    packets = rig.heartbeat_packets(rig.FrameFactory(devices), devices, events)
    with Rig(devices, "profile") as r:
        sink = r.start_sink()
        out = r.dir / "agent.prof"
        log = (r.dir / "agent-profiled.log").open("wb")
        args = ["agent", "--config", str(r.agent.config_file), "--out", str(out)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.profile", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=rig.REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while b"uplink_up" not in (r.dir / "agent-profiled.log").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.1)
            pub = Publisher(r.local.address)
            t0 = time.monotonic()
            pub.send(packets)
            if not sink.wait_events(events, 300):
                raise RuntimeError(f"central has {sink.events} of {events}")
            progress(f"{events} events in {time.monotonic() - t0:.1f}s under the profiler")
            pub.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            log.close()
        stats = pstats.Stats(str(out))
        stats.sort_stats(sort).print_stats(top)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        ap = argparse.ArgumentParser(prog="python -m tests.bench.profile agent")
        ap.add_argument("agent")
        ap.add_argument("--config", required=True)
        ap.add_argument("--out", required=True)
        args = ap.parse_args()
        return agent_main(args.config, args.out)
    ap = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    scenario(args.events, args.top, args.sort)
    return 0


if __name__ == "__main__":
    sys.exit(main())
