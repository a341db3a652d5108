"""alarm_latency_idle: an alarm post's press, device publish to central's PUBACK, on an idle gateway.

Per run: fresh brokers, agent and central sink; one alarm post (the firmware's MQTT client)
presses ALARMS times, one press every INTERVAL_S, each press a QoS 1 ALARM frame asking for
receipts. Timed from just before the device's publish to:
- receipt 2 (DELIVERED) at the device: the agent sends it when central's broker has
  PUBACKed the batch, so this includes one more local hop than the PUBACK itself (the figure
  the target applies to: an upper bound of publish -> central PUBACK);
- the batch's arrival at central's subscriber (`central_*`);
- receipt 1 (STORED, after the fsync) at the device (`stored_*`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from agent.shared.registry import Device
from tests.bench import rig
from tests.bench.rig import AlarmDevice, Rig, progress

NAME = "alarm_latency_idle"
TARGET_P99_MS = 20.0
ALARMS = 200
WARMUP = 5
INTERVAL_S = 0.03


def alarm_post() -> Device:
    return rig.fleet(1, prefix="AP", kind="alarm_post")[0]


class AlarmTimes:
    """Per-press timings in ms: receipt 2, central arrival, receipt 1."""

    def __init__(self) -> None:
        self.delivered: list[float] = []
        self.central: list[float] = []
        self.stored: list[float] = []
        self.missing = 0

    def add(self, t0: float, r1: float | None, r2: float | None, central: float | None) -> None:
        if r2 is None or r1 is None or central is None:
            self.missing += 1
            return
        self.delivered.append((r2 - t0) * 1000)
        self.stored.append((r1 - t0) * 1000)
        self.central.append((central - t0) * 1000)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"samples": len(self.delivered), "missing": self.missing}
        for name, xs in (("", self.delivered), ("central_", self.central), ("stored_", self.stored)):
            if xs:
                out[f"{name}p50"] = rig.percentile(xs, 50)
                out[f"{name}p99"] = rig.percentile(xs, 99)
                out[f"{name}max"] = max(xs)
        return out


def central_times(sink: rig.SinkProcess, device: str) -> dict[tuple[str, int, int], float]:
    out: dict[tuple[str, int, int], float] = {}
    for b in sink.batches():
        for d, boot, seq in b["p0"]:
            if d == device:
                out.setdefault((d, boot, seq), b["t"])
    return out


Press = tuple[int, float, float | None, float | None]


def collect(times: AlarmTimes, sink: rig.SinkProcess, device: Device, presses: list[Press]) -> None:
    sink.wait(lambda: len(central_times(sink, device.id)) >= len(presses), 5)
    at_central = central_times(sink, device.id)
    for seq, t0, r1, r2 in presses:
        times.add(t0, r1, r2, at_central.get((device.id, 1, seq)))


# what runs beside the presses: given the started rig, a context manager around them
During = Callable[[Rig], contextlib.AbstractContextManager[Any]]


def one_run(extra_config: str = "", during: During | None = None) -> dict[str, float]:
    post = alarm_post()
    with Rig([post], "latency", extra_config=extra_config) as r:
        sink = r.start_sink()
        r.agent.start()
        r.agent.wait_log("uplink_up")
        dev = AlarmDevice(r.local.address, post, rig.FrameFactory([post]))
        beside = during(r) if during is not None else contextlib.nullcontext()
        try:
            with beside:
                for _ in range(WARMUP):
                    dev.alarm()
                presses: list[Press] = []
                next_at = time.monotonic()
                for _ in range(ALARMS):
                    next_at += INTERVAL_S
                    presses.append(dev.alarm())
                    time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            dev.close()
        times = AlarmTimes()
        collect(times, sink, post, presses)
        if sink.errors:
            raise RuntimeError(f"central sink errors: {sink.errors[:3]}")
        return times.summary()


def line(name: str, target: float, results: list[dict[str, float]], extra: dict[str, Any]) -> dict[str, Any]:
    p99s = [r["p99"] for r in results]
    value = rig.median(p99s)
    out: dict[str, Any] = {
        "name": name,
        "value": round(value, 2),
        "unit": "ms (p99, device publish -> receipt 2)",
        "target": target,
        "ok": value <= target and all(r["missing"] == 0 for r in results),
        "p50": round(rig.median([r["p50"] for r in results]), 2),
        "p99": round(value, 2),
        "runs": [round(x, 2) for x in p99s],
        "max": round(max(r["max"] for r in results), 2),
        "central_p50": round(rig.median([r["central_p50"] for r in results]), 2),
        "central_p99": round(rig.median([r["central_p99"] for r in results]), 2),
        "stored_p50": round(rig.median([r["stored_p50"] for r in results]), 2),
        "stored_p99": round(rig.median([r["stored_p99"] for r in results]), 2),
        "samples_per_run": int(rig.median([r["samples"] for r in results])),
        "missing": int(sum(r["missing"] for r in results)),
    }
    out.update(extra)
    return out


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    if NAME not in names:
        return []
    results = []
    for i in range(runs):
        res = one_run()
        progress(
            f"{NAME} run {i + 1}/{runs}: p50 {res.get('p50', 0):.2f} ms, p99 {res.get('p99', 0):.2f} ms "
            f"(central p99 {res.get('central_p99', 0):.2f} ms, stored p99 {res.get('stored_p99', 0):.2f} ms), "
            f"missing {res['missing']}"
        )
        results.append(res)
    return [line(NAME, TARGET_P99_MS, results, {"interval_ms": INTERVAL_S * 1000})]
