"""`python -m tests.bench [--only NAME] [--runs N] [--scale F]`: run the benchmarks.

One JSON line per benchmark on stdout (docs/benchmarks.md says what each one measures);
progress on stderr. Exit status 1 when a benchmark failed to run (its line then carries
`error`); a missed target is reported in the line (`ok: false`), not by the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from tests.bench import (
    bench_backlog,
    bench_disk,
    bench_firmware,
    bench_latency,
    bench_notify,
    bench_page,
    bench_provision,
    bench_recovery,
    bench_security,
    bench_throughput,
    bench_wristband,
)
from tests.bench.rig import progress

# (benchmark names, runner) in the order `make bench` runs them
MODULES: list[tuple[tuple[str, ...], Callable[[set[str], int, float], list[dict[str, Any]]]]] = [
    ((bench_throughput.NAME,), bench_throughput.run),
    ((bench_latency.NAME,), bench_latency.run),
    ((bench_page.NAME,), bench_page.run),
    (bench_backlog.NAMES, bench_backlog.run),
    ((bench_disk.NAME,), bench_disk.run),
    (bench_wristband.NAMES, bench_wristband.run),
    (bench_firmware.NAMES, bench_firmware.run),
    (bench_notify.NAMES, bench_notify.run),
    (bench_security.NAMES, bench_security.run),
    (bench_recovery.NAMES, bench_recovery.run),
    (bench_provision.NAMES, bench_provision.run),
]
ALL = [name for names, _ in MODULES for name in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    ap.add_argument("--only", action="append", choices=ALL, help="run only this benchmark (repeatable)")
    ap.add_argument("--runs", type=int, default=3, help="runs per benchmark; the value is their median (default 3)")
    ap.add_argument("--scale", type=float, default=1.0, help="scale the event counts (quick checks; default 1)")
    args = ap.parse_args(argv)
    wanted = set(args.only or ALL)
    started = time.monotonic()
    failed = False
    progress(f"benchmarks: {', '.join(n for n in ALL if n in wanted)}; runs {args.runs}; cpus {os.cpu_count()}")
    for names, runner in MODULES:
        chosen = wanted & set(names)
        if not chosen:
            continue
        load = os.getloadavg()[0]
        try:
            lines = runner(chosen, args.runs, args.scale)
        except Exception as exc:  # reported as a line; the other benchmarks still run
            traceback.print_exc(file=sys.stderr)
            lines = [{"name": n, "value": None, "error": f"{type(exc).__name__}: {exc}"} for n in sorted(chosen)]
            failed = True
        for line in lines:
            line["conditions"] = {"cpus": os.cpu_count(), "load1_before": round(load, 2)}
            if args.scale != 1.0:
                line["conditions"]["scale"] = args.scale
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
    progress(f"done in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
