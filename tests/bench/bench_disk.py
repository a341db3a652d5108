"""disk_full: the share of alarms given receipt 1 while the agent's data filesystem is full.

Per run, with fresh brokers and agent, the agent's data directory on a tmpfs of FS_BYTES
(hil_tests/sim/smallfs.py; mounting needs CAP_SYS_ADMIN, else the line carries the reason):
1. Central's broker is down. A runaway log (a file of allocated blocks) takes all of the
   filesystem but FILL_ROOM; a publisher writes P2 heartbeat frames (100 devices) until the
   agent logs `disk_full`: its own backlog filled the rest.
2. The runaway log then takes whatever is free every LOG_EVERY_S for the rest of the run, so
   the filesystem stays full whatever the agent gives back, and telemetry keeps coming
   (TELEMETRY_RATE frames/s). An alarm post presses ALARMS times, one press every INTERVAL_S,
   each a QoS 1 ALARM frame asking for receipts, and waits up to RECEIPT_TIMEOUT_S for
   receipt 1 (STORED: committed with fsync in the buffer).
The value is presses with receipt 1 / presses (median over the runs); also the receipt 1
latency (p50/p99 over a run's presses, median over the runs), the agent's evictions per lane
and its disk fields from its `agent_stopped` line, and the filesystem's free bytes at the end.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from hil_tests.sim import smallfs
from tests.bench import bench_latency, rig
from tests.bench.rig import AlarmDevice, Publisher, Rig, progress

NAME = "disk_full"
TARGET = 1.0
FS_BYTES = 32 << 20
FILL_ROOM = 4 << 20
ALARMS = 100
INTERVAL_S = 0.05
RECEIPT_TIMEOUT_S = 5.0
TELEMETRY_RATE = 2000
LOG_EVERY_S = 0.05
DEVICES = 100


class Background(threading.Thread):
    """Runs `step` every `every` seconds until stopped; keeps the first error."""

    def __init__(self, name: str, every: float, step: Any) -> None:
        super().__init__(daemon=True, name=name)
        self.every = every
        self.step = step
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.every):
                self.step()
        except BaseException as exc:  # reported by the run
            self.error = exc


def _full(log: str) -> bool:
    """The agent met the full disk: it says so (`disk_full`), or a commit failed (an agent
    without the disk handling, measured the same way for comparison)."""
    return "disk_full" in log or "commit_failed" in log


class Telemetry:
    """P2 heartbeat frames of `devices`, round robin, each device's seq going on across calls."""

    def __init__(self, factory: rig.FrameFactory, devices: list[Any]) -> None:
        self.factory = factory
        self.devices = devices
        self.sent = 0

    def packets(self, n: int) -> list[bytes]:
        out = []
        for i in range(self.sent, self.sent + n):
            device = self.devices[i % len(self.devices)].id
            seq = i // len(self.devices) + 1
            blob = self.factory.frame(device, 1, seq, rig.fwframe.T_HEARTBEAT, seq, {1: seq, 2: 0}, 0)
            out.append(rig.publish_packet(f"ge/dev/{device}/up".encode(), blob, i % 65535 + 1))
        self.sent += n
        return out


def one_run() -> dict[str, Any]:
    post = bench_latency.alarm_post()
    devices = rig.fleet(DEVICES)
    factory = rig.FrameFactory(devices)
    with Rig([*devices, post], "disk", start_central=False, data_fs=FS_BYTES) as r:
        fs = r.data_fs
        assert fs is not None
        r.agent.start()
        fs.hog(leave=FILL_ROOM)
        pub = Publisher(r.local.address)
        telemetry = Telemetry(factory, devices)

        t0 = time.monotonic()
        while not _full(r.agent.log_text()) and time.monotonic() - t0 < 120:
            pub.send(telemetry.packets(500))
            time.sleep(0.01)
        if not _full(r.agent.log_text()):
            raise RuntimeError(f"the disk never filled ({fs.free()} bytes free)")
        fill_s = time.monotonic() - t0
        progress(f"{NAME}: the agent's backlog filled the disk after {telemetry.sent} frames, {fill_s:.1f}s")
        runaway = Background("bench-runaway-log", LOG_EVERY_S, fs.hog)
        flood = Background("bench-telemetry", 0.05, lambda: pub.send(telemetry.packets(int(TELEMETRY_RATE * 0.05))))
        runaway.start()
        flood.start()
        dev = AlarmDevice(r.local.address, post, rig.FrameFactory([post]))
        presses = []
        try:
            next_at = time.monotonic()
            for _ in range(ALARMS):
                next_at += INTERVAL_S
                presses.append(dev.alarm(RECEIPT_TIMEOUT_S, until=rig.fwframe.R_STORED))
                time.sleep(max(0.0, next_at - time.monotonic()))
            free_end = fs.free()
        finally:
            dev.close()
            for bg in (flood, runaway):
                bg.stop.set()
                bg.join(10)
            pub.close()
        for bg in (flood, runaway):
            if bg.error is not None:
                raise RuntimeError(f"{bg.name}: {bg.error!r}")
        counters = r.agent_counters()
        stored = [(r1 - t) * 1000 for _, t, r1, _ in presses if r1 is not None]
        return {
            "share": len(stored) / len(presses),
            "stored_p50": rig.percentile(stored, 50) if stored else None,
            "stored_p99": rig.percentile(stored, 99) if stored else None,
            "presses": len(presses),
            "fill_frames": telemetry.sent,
            "free_end": free_end,
            "evicted": counters.get("evicted"),
            "disk": counters.get("disk"),
            "disk_reserve": counters.get("disk_reserve"),
        }


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    if NAME not in names:
        return []
    reason = smallfs.unavailable("tmpfs")
    if reason is not None:
        return [{"name": NAME, "value": None, "error": f"no small filesystem to fill: {reason}"}]
    results = []
    for i in range(runs):
        res = one_run()
        progress(
            f"{NAME} run {i + 1}/{runs}: {res['share']:.3f} of {res['presses']} alarms got receipt 1 "
            f"(p50 {res['stored_p50'] or 0:.1f} ms, p99 {res['stored_p99'] or 0:.1f} ms), evicted {res['evicted']}, "
            f"disk {res['disk']}, reserve {res['disk_reserve']}, free at the end {res['free_end']}"
        )
        results.append(res)
    value = rig.median([r["share"] for r in results])
    p99s = [r["stored_p99"] for r in results if r["stored_p99"] is not None]
    return [
        {
            "name": NAME,
            "value": round(value, 4),
            "unit": "share of alarms with receipt 1 while the data filesystem is full",
            "target": TARGET,
            "ok": value >= TARGET,
            "runs": [round(r["share"], 4) for r in results],
            "stored_p50_ms": round(rig.median([r["stored_p50"] for r in results if r["stored_p50"] is not None]), 2)
            if p99s
            else None,
            "stored_p99_ms": round(rig.median(p99s), 2) if p99s else None,
            "presses_per_run": ALARMS,
            "fs_bytes": FS_BYTES,
            "evicted": [r["evicted"] for r in results],
            "free_end": [r["free_end"] for r in results],
        }
    ]
