"""pipeline_throughput: device frames on the local broker to central's PUBACK, events/s.

Per run: fresh brokers and agent; the sink (central's subscriber) and the agent connected;
then one publisher writes N pre-built QoS 1 heartbeat frames (P2, 100 devices) to the local
broker as fast as the broker takes them. The figure is N divided by the time from the first
publish to the arrival at central of the batch that completes the N events (every batch's
signature and chain checked by the sink). The agent's own counters must agree (N accepted,
nothing rejected) or the run fails.

The baseline, in the same run and against the same central broker: aiomqtt publishing each
event as its own QoS 1 message and awaiting its PUBACK (the obvious forwarder), and the same
with 20 publishes in flight (paho's default window) as a second, stronger reference.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import aiomqtt

from tests.bench import rig
from tests.bench.rig import Publisher, Rig, progress

NAME = "pipeline_throughput"
TARGET_EPS = 50_000
TARGET_RATIO = 12.0
EVENTS = 300_000
BASELINE_EVENTS = 12_000
DEVICES = 100
WINDOW = 20
BASELINE_TOPIC = "bench/baseline/events"


async def _baseline(broker: tuple[str, int], payloads: list[bytes], window: int) -> float:
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt warns about pending publishes
    async with aiomqtt.Client(
        broker[0], broker[1], identifier=f"bench-baseline-{window}", protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        it = iter(payloads)

        async def worker() -> None:
            for p in it:
                await client.publish(BASELINE_TOPIC, p, qos=1)

        t = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(window)))
        return len(payloads) / (time.monotonic() - t)


def baseline(broker: tuple[str, int], payloads: list[bytes], window: int = 1) -> float:
    """Events/s of publishing each payload as its own QoS 1 message with aiomqtt."""
    return asyncio.run(_baseline(broker, payloads, window))


def one_run(packets: list[bytes], frames: list[bytes], devices: list[Any], n: int) -> dict[str, float]:
    with Rig(devices, "throughput") as r:
        base = baseline(r.central.address, frames[:BASELINE_EVENTS])
        base_w = baseline(r.central.address, frames[:BASELINE_EVENTS], WINDOW)
        sink = r.start_sink()
        r.agent.start()
        r.agent.wait_log("uplink_up")
        assert r.agent.pid is not None
        sink.wait(lambda: sink.events >= 0 and any(b["gw"] for b in sink.batches()), 10)  # the start heartbeat
        cpu0 = rig.cpu_seconds(r.agent.pid)
        assert r.local.pid is not None
        local0 = rig.cpu_seconds(r.local.pid)
        pub = Publisher(r.local.address)
        t0 = time.monotonic()
        sender = threading.Thread(target=pub.send, args=(packets[:n],), daemon=True)
        sender.start()
        ok = sink.wait_events(n, 120 + n / 2000)
        cpu = rig.cpu_seconds(r.agent.pid) - cpu0
        local_cpu = rig.cpu_seconds(r.local.pid) - local0
        sender.join(10)
        pub.wait_acked(10)
        pub.close()
        if not ok:
            raise RuntimeError(f"central has {sink.events} of {n} events after the timeout")
        done = next(b for b in _cumulative(sink.batches()) if b["sum"] >= n)
        elapsed = done["t"] - t0
        if sink.errors:
            raise RuntimeError(f"central sink errors: {sink.errors[:3]}")
        counters = r.agent_counters()
        if int(counters.get("accepted", -1)) != n or counters.get("rejected") not in ("{}", None):
            raise RuntimeError(f"agent counters disagree: {counters}")
        return {
            "eps": n / elapsed,
            "baseline": base,
            "baseline_windowed": base_w,
            "agent_cpu_s_per_1k": cpu / n * 1000,
            "local_broker_cpu_s_per_1k": local_cpu / n * 1000,
            "batches": len(sink.batches()),
        }


def _cumulative(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    total = 0
    out = []
    for b in batches:
        total += b["n"] - b["gw"]
        out.append({**b, "sum": total})
    return out


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    if NAME not in names:
        return []
    n = int(EVENTS * scale)
    devices = rig.fleet(DEVICES)
    factory = rig.FrameFactory(devices)
    with rig.timed(f"{NAME}: building {n} frames"):
        packets = rig.heartbeat_packets(factory, devices, n)
        frames = [rig.packet_payload(p) for p in packets[:BASELINE_EVENTS]]
    results = []
    for i in range(runs):
        res = one_run(packets, frames, devices, n)
        progress(
            f"{NAME} run {i + 1}/{runs}: {res['eps']:.0f} events/s, baseline {res['baseline']:.0f}/s "
            f"(windowed {res['baseline_windowed']:.0f}/s), CPU per event: "
            f"agent {res['agent_cpu_s_per_1k'] * 1000:.1f} µs, "
            f"local broker {res['local_broker_cpu_s_per_1k'] * 1000:.1f} µs"
        )
        results.append(res)
    eps = [r["eps"] for r in results]
    value = rig.median(eps)
    base = rig.median([r["baseline"] for r in results])
    base_w = rig.median([r["baseline_windowed"] for r in results])
    return [
        {
            "name": NAME,
            "value": round(value),
            "unit": "events/s",
            "target": TARGET_EPS,
            "ok": value >= TARGET_EPS and value / base >= TARGET_RATIO,
            "p50": round(value),
            "p99": round(rig.percentile(eps, 99)),
            "min": round(min(eps)),
            "runs": [round(x) for x in eps],
            "baseline": round(base),
            "ratio": round(value / base, 1),
            "target_ratio": TARGET_RATIO,
            "baseline_windowed": round(base_w),
            "ratio_windowed": round(value / base_w, 1),
            "events": n,
            "agent_cpu_us_per_event": round(rig.median([r["agent_cpu_s_per_1k"] for r in results]) * 1000, 1),
            "local_broker_cpu_us_per_event": round(
                rig.median([r["local_broker_cpu_s_per_1k"] for r in results]) * 1000, 1
            ),
        }
    ]
