"""A 1,000,000-event backlog: rss_1m_buffered, drain_1m and alarm_latency_backlog.

One scenario per run, with fresh brokers and agent:
1. Fill: central's broker is down; one publisher writes 1,000,000 QoS 1 heartbeat frames
   (P2, 200 devices) to the local broker, through the real ingest path (verify, replay,
   group commit). Full when the agent's buffer holds them all (counted in its SQLite file
   through a read-only connection).
2. rss_1m_buffered: the agent's VmRSS once the backlog is complete and the agent is idle
   (VmHWM, the peak during the fill, as a detail).
3. Central's broker starts; the agent reconnects on its own backoff. drain_1m: from the
   first sign of the uplink at central (the agent's retained `online` status or its first
   batch, whichever the sink sees first) to the arrival at central of the batch that
   completes the 1,000,000 events.
4. alarm_latency_backlog: during the drain an alarm post presses every INTERVAL_S; timed
   like alarm_latency_idle (device publish -> receipt 2).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench import bench_latency, rig
from tests.bench.rig import AlarmDevice, Publisher, Rig, progress

NAMES = ("alarm_latency_backlog", "drain_1m", "rss_1m_buffered")
BACKLOG = 1_000_000
DEVICES = 200
INTERVAL_S = 0.05
TARGETS = {"alarm_latency_backlog": 50.0, "drain_1m": 30.0, "rss_1m_buffered": 80.0}


def buffered(db: Path) -> int:
    """Rows in the agent's events table (a read-only connection; WAL lets it read alongside)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT count(*) FROM events").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def rss_hwm_kb(pid: int) -> tuple[int, int]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0])
    return vals["VmRSS"], vals["VmHWM"]


class Presser(threading.Thread):
    """Presses an alarm every INTERVAL_S until stopped; keeps the timings."""

    def __init__(self, dev: AlarmDevice) -> None:
        super().__init__(daemon=True, name="bench-alarms")
        self.dev = dev
        self.presses: list[tuple[int, float, float | None, float | None]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self.stop.is_set():
                next_at += INTERVAL_S
                self.presses.append(self.dev.alarm())
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the scenario
            self.error = exc


def one_run(packets: list[bytes], devices: list[Any], n: int, with_alarms: bool, drain: bool) -> dict[str, Any]:
    post = bench_latency.alarm_post()
    out: dict[str, Any] = {}
    with Rig([*devices, post], "backlog", start_central=False) as r:
        r.agent.start()
        assert r.agent.pid is not None
        time.sleep(0.5)
        out["rss_start_mb"] = rss_hwm_kb(r.agent.pid)[0] / 1024
        db = r.agent.data_dir / "buffer.db"
        pub = Publisher(r.local.address)
        t_fill = time.monotonic()
        pub.send(packets[:n])
        if not pub.wait_acked(120):
            raise RuntimeError("the local broker did not acknowledge every frame")
        pub.close()
        deadline = time.monotonic() + 60 + n / 5000
        while (count := buffered(db)) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        if count < n + 1:  # the devices' events and the gateway's start heartbeat
            raise RuntimeError(f"the agent buffered {count} of {n} events")
        out["fill_s"] = time.monotonic() - t_fill
        progress(f"backlog: {count} events buffered in {out['fill_s']:.1f}s")
        time.sleep(1.0)
        rss, hwm = rss_hwm_kb(r.agent.pid)
        out["rss_mb"] = rss / 1024
        out["hwm_mb"] = hwm / 1024
        out["db_mb"] = sum(p.stat().st_size for p in db.parent.glob("buffer.db*")) / 1e6
        if not drain:
            return out

        r.central.start()
        sink = r.start_sink()
        dev = AlarmDevice(r.local.address, post, rig.FrameFactory([post])) if with_alarms else None
        presser = Presser(dev) if dev is not None else None
        started = threading.Event()

        def on_batch(_: dict[str, Any]) -> None:
            if presser is not None and not started.is_set():
                started.set()
                presser.start()

        sink.on_batch = on_batch
        backlog_events = 0

        def drained() -> bool:
            nonlocal backlog_events
            backlog_events = sum(b["n"] - b["gw"] - len(b["p0"]) for b in sink.batches())
            return backlog_events >= n

        ok = sink.wait(drained, 180)
        if presser is not None:
            presser.stop.set()
            presser.join(15)
        if dev is not None:
            dev.close()
        if not ok:
            raise RuntimeError(f"central has {backlog_events} of {n} backlog events after the timeout")
        batches = sink.batches()
        total = 0
        t_done = 0.0
        for b in batches:
            total += b["n"] - b["gw"] - len(b["p0"])
            if total >= n:
                t_done = b["t"]
                break
        online = sink.first("status", "online")
        t_up = min(batches[0]["t"], online["t"] if online is not None else batches[0]["t"])
        out["drain_s"] = t_done - t_up
        out["batches"] = len(batches)
        if sink.errors:
            raise RuntimeError(f"central sink errors: {sink.errors[:3]}")
        if presser is not None:
            if presser.error is not None:
                raise RuntimeError(f"alarm post failed: {presser.error!r}")
            times = bench_latency.AlarmTimes()
            bench_latency.collect(times, sink, post, presser.presses)
            out["alarms"] = times.summary()
        counters = r.agent_counters()
        if counters.get("rejected") not in ("{}", None):
            raise RuntimeError(f"agent rejected frames: {counters}")
        return out


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    chosen = names & set(NAMES)
    if not chosen:
        return []
    n = int(BACKLOG * scale)
    devices = rig.fleet(DEVICES)
    factory = rig.FrameFactory(devices)
    with rig.timed(f"backlog: building {n} frames"):
        packets = rig.heartbeat_packets(factory, devices, n)
    drain = bool(chosen & {"drain_1m", "alarm_latency_backlog"})
    with_alarms = "alarm_latency_backlog" in chosen
    results = []
    for i in range(runs):
        res = one_run(packets, devices, n, with_alarms, drain)
        msg = f"backlog run {i + 1}/{runs}: fill {res['fill_s']:.1f}s, RSS {res['rss_mb']:.1f} MB"
        msg += f" (peak {res['hwm_mb']:.1f})"
        if drain:
            msg += f", drain {res['drain_s']:.2f}s"
        if "alarms" in res:
            a = res["alarms"]
            msg += f", alarms p50 {a.get('p50', 0):.1f} ms p99 {a.get('p99', 0):.1f} ms ({a['samples']} presses)"
        progress(msg)
        results.append(res)
    lines: list[dict[str, Any]] = []
    if "alarm_latency_backlog" in chosen:
        lines.append(
            bench_latency.line(
                "alarm_latency_backlog",
                TARGETS["alarm_latency_backlog"],
                [r["alarms"] for r in results],
                {"interval_ms": INTERVAL_S * 1000, "backlog": n},
            )
        )
    if "drain_1m" in chosen:
        xs = [r["drain_s"] for r in results]
        v = rig.median(xs)
        lines.append(
            {
                "name": "drain_1m",
                "value": round(v, 2),
                "unit": "s",
                "target": TARGETS["drain_1m"],
                "ok": v <= TARGETS["drain_1m"],
                "p50": round(v, 2),
                "p99": round(rig.percentile(xs, 99), 2),
                "runs": [round(x, 2) for x in xs],
                "events": n,
                "events_per_s": round(n / v),
                "batches": int(rig.median([r["batches"] for r in results])),
                "with_alarms": with_alarms,
            }
        )
    if "rss_1m_buffered" in chosen:
        xs = [r["rss_mb"] for r in results]
        v = rig.median(xs)
        lines.append(
            {
                "name": "rss_1m_buffered",
                "value": round(v, 1),
                "unit": "MB (VmRSS, MiB)",
                "target": TARGETS["rss_1m_buffered"],
                "ok": v <= TARGETS["rss_1m_buffered"],
                "p50": round(v, 1),
                "p99": round(rig.percentile(xs, 99), 1),
                "runs": [round(x, 1) for x in xs],
                "peak_during_fill": round(rig.median([r["hwm_mb"] for r in results]), 1),
                "at_start": round(rig.median([r["rss_start_mb"] for r in results]), 1),
                "events": n,
                "fill_s": round(rig.median([r["fill_s"] for r in results]), 1),
                "fill_events_per_s": round(n / rig.median([r["fill_s"] for r in results])),
                "db_mb": round(rig.median([r["db_mb"] for r in results]), 1),
            }
        )
    return lines
