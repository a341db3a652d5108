"""alarm_latency_page: alarm_latency_idle with the status page open and refreshing.

The same presses as alarm_latency_idle (tests/bench/bench_latency.py) while the agent serves its
status page to SSE_CLIENTS live clients (server-sent events, a new view every second) and one
client polling /api/status every POLL_MS (tests/bench/page_clients.py, its own process). The
baseline is alarm_latency_idle itself (page off), measured in the same run, runs alternating
page off / page on so that both see the same machine. The target is alarm_latency_idle's: the
page must not move the alarm p99 past it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.gateway.status.auth import write_token_file
from hil_tests.sim.tools import REPO_ROOT, free_port
from tests.bench import bench_latency, rig
from tests.bench.rig import Rig, progress

NAME = "alarm_latency_page"
SSE_CLIENTS = 8  # [status_page] max_live's default: the most the page serves live
POLL_MS = 500


class PageClients:
    """tests/bench/page_clients.py as a process, started once the agent's page listens."""

    def __init__(self, r: Rig, port: int, token_file: Path) -> None:
        r.agent.wait_log("status_page_listening")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.bench.page_clients", "--url", f"http://127.0.0.1:{port}"),
                *("--token-file", str(token_file), "--sse", str(SSE_CLIENTS), "--poll-ms", str(POLL_MS)),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or "{}")
        if first.get("k") != "ready":
            self.close()
            raise RuntimeError(f"page clients did not start: {first}")
        self.result: dict[str, Any] = {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=15)
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.result = lines[-1] if lines else {}


def page_run() -> tuple[dict[str, float], dict[str, Any]]:
    port = free_port()
    clients: list[PageClients] = []
    with tempfile.TemporaryDirectory(prefix="ge-bench-page-") as tmp:
        token_file = Path(tmp) / "status.token"
        digest = write_token_file(token_file).hex()

        @contextlib.contextmanager
        def open_page(r: Rig) -> Iterator[None]:
            c = PageClients(r, port, token_file)
            clients.append(c)
            try:
                yield
            finally:
                c.close()

        page = f'[status_page]\nlisten = "127.0.0.1:{port}"\ntoken_sha256 = "{digest}"\n'
        res = bench_latency.one_run(extra_config=page, during=open_page)
    seen = clients[0].result if clients else {}
    if seen.get("error"):
        raise RuntimeError(f"page clients failed: {seen['error']}")
    return res, seen


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    if NAME not in names:
        return []
    base: list[dict[str, float]] = []
    page: list[dict[str, float]] = []
    updates: list[int] = []
    polls: list[int] = []
    for i in range(runs):
        b = bench_latency.one_run()
        base.append(b)
        p, seen = page_run()
        page.append(p)
        updates.append(int(seen.get("live_updates", 0)))
        polls.append(int(seen.get("polls", 0)))
        progress(
            f"{NAME} run {i + 1}/{runs}: page off p99 {b.get('p99', 0):.2f} ms, page on p99 {p.get('p99', 0):.2f} ms "
            f"({updates[-1]} live updates to {SSE_CLIENTS} clients, {polls[-1]} polls)"
        )
    line = bench_latency.line(NAME, bench_latency.TARGET_P99_MS, page, {})
    baseline = rig.median([r["p99"] for r in base])
    line.update(
        {
            "baseline_p99": round(baseline, 2),
            "baseline_p50": round(rig.median([r["p50"] for r in base]), 2),
            "baseline_runs": [round(r["p99"], 2) for r in base],
            "delta_p99": round(line["value"] - baseline, 2),
            "sse_clients": SSE_CLIENTS,
            "poll_ms": POLL_MS,
            "live_updates_per_run": int(rig.median(updates)),
            "polls_per_run": int(rig.median(polls)),
        }
    )
    line["ok"] = line["ok"] and all(u > 0 for u in updates) and all(p > 0 for p in polls)
    return [line]
