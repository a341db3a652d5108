"""wristband_alerts and ble_adverts: the families' alerts on simulated days, and advert resolution speed.

wristband_alerts: tests/bench/wristband_traces.py simulates residents (default 10 residents x
10 days = 100 resident-days) with ground truth; every advert copy a scanner heard goes through
the real AlertEngine (agent/gateway/wristbands/alerts.py) as the BLE source would hand it over. A sample
(the first simulated hours of the same seed) is run a second time through real encrypted
adverts (tests/vectors/wristband.py's construction, cryptography's AES) and the real
BandResolver; its alerts must be identical. Alerts are matched to truth per band and type
(each truth has a window); an unmatched alert is false. Latencies are simulated seconds from
the true event (SOS: its start; FALL: the impact, so the band's 41.5 s stillness check and
cancel window are included; EXIT: entering the exit zone; MISSING: leaving the last covered
zone, so the configured missing_after_s is included; BATTERY_LOW: reaching the threshold,
so alerts held by quiet hours count their wait). The figure does not depend on the machine.

ble_adverts: accepted adverts per second through BandResolver.resolve (structure checks, EID
table probe, counter unmask, AES-CCM check, replay state) on one core, 1000 registered bands.

`python -m tests.bench --only wristband_alerts --scale 0.1` for a quick look; this module also
runs alone: `python -m tests.bench.bench_wristband [--scale F]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import time
from collections import defaultdict
from typing import Any

from agent.gateway.wristbands.advert import Status
from agent.gateway.wristbands.alerts import Alert, AlertEngine
from agent.gateway.wristbands.resolver import BandKey, BandResolver, Sighting
from tests.bench import wristband_traces as wt
from tests.vectors import wristband as ref

NAMES = ("wristband_alerts", "ble_adverts")
RESIDENTS = 10
DAYS = 10
SEED = 20251124
SAMPLE = (8 * 3600, 14 * 3600)  # the resolver sample: 08:00-14:00 of the first simulated day
SCORED = ("SOS", "FALL", "EXIT", "MISSING", "STRAP_REMOVED", "BATTERY_LOW")
EARLY_MS = {"EXIT": 20_000}  # an EXIT may be confirmed just before the walk crosses the zone's edge
TARGETS = {
    "SOS": {"recall": 1.0, "p99_s": 5},
    "FALL": {"recall": 1.0, "p99_s": 90},
    "EXIT": {"recall": 0.99, "p95_s": 15},
}
TARGET_FALSE_PER_MONTH = 1.0
ADVERT_BANDS = 1000
ADVERT_ROUNDS = 100


def root_of(band: str) -> bytes:
    return hashlib.sha256(b"bench root " + band.encode()).digest()[:16]


class EngineSink:
    """Hands each heard advert copy to the engine as the resolver would: first copy `new`."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine
        self.alerts: list[Alert] = []
        self._last: dict[str, int] = {}
        self._status: dict[str, tuple[tuple[int, int, int, int], Status]] = {}

    def _st(self, band: str, status: tuple[int, int, int, int]) -> Status:
        c = self._status.get(band)
        if c is None or c[0] != status:
            c = self._status[band] = (status, Status(*status))
        return c[1]

    def advert(self, t_ms: int, band: str, counter: int, status: tuple[int, int, int, int], heard: list[Any]) -> None:
        st = self._st(band, status)
        new = self._last.get(band) != counter
        self._last[band] = counter
        s = Sighting(band, counter, st, new, False, 0.0)
        on = self.engine.on_sighting
        for scanner, rssi in heard:
            out = on(scanner, rssi, t_ms, s)
            if out:
                self.alerts.extend(out)
            if s.new:
                s = Sighting(band, counter, st, False, False, 0.0)

    def scanner(self, scanner: str, up: bool, t_ms: int) -> None:
        fn = self.engine.scanner_up if up else self.engine.scanner_down
        self.alerts.extend(fn(scanner, t_ms))

    def tick(self, t_ms: int) -> None:
        out = self.engine.tick(t_ms)
        if out:
            self.alerts.extend(out)


class ResolverSink(EngineSink):
    """The same, through real encrypted adverts and the real BandResolver."""

    def __init__(self, engine: AlertEngine, bands: list[str]) -> None:
        super().__init__(engine)
        self.roots = {b: root_of(b) for b in bands}
        self.resolver = BandResolver([BandKey(b, r) for b, r in self.roots.items()])
        self._bytes: dict[str, tuple[int, tuple[int, int, int, int], bytes]] = {}
        self.resolved = 0

    def advert(self, t_ms: int, band: str, counter: int, status: tuple[int, int, int, int], heard: list[Any]) -> None:
        c = self._bytes.get(band)
        if c is None or c[0] != counter or c[1] != status:
            data = ref.advert(self.roots[band], 0, 10, counter, struct.pack(">BBHH", *status))
            c = self._bytes[band] = (counter, status, data)
        for scanner, rssi in heard:
            s = self.resolver.resolve(c[2], t_ms)
            self.resolved += 1
            out = self.engine.on_sighting(scanner, rssi, t_ms, s)
            if out:
                self.alerts.extend(out)


def score(truth: list[wt.Truth], alerts: list[Alert], resident_days: float) -> dict[str, Any]:
    """Per type recall, precision, latency percentiles; false alerts per resident-month."""
    by_key: dict[tuple[str, str], list[wt.Truth]] = defaultdict(list)
    for x in truth:
        by_key[(x.type, x.band)].append(x)
    matched: set[int] = set()
    lat: dict[str, list[float]] = defaultdict(list)
    false: dict[str, int] = defaultdict(int)
    false_list: list[Alert] = []
    for a in sorted(alerts, key=lambda a: a.t_ms):
        name = a.type.name
        if name not in SCORED:
            continue
        early = EARLY_MS.get(name, 2000)
        hit = next(
            (x for x in by_key[(name, a.band)] if id(x) not in matched and x.t_ms - early <= a.t_ms <= x.end_ms),
            None,
        )
        if hit is None:
            false[name] += 1
            false_list.append(a)
        else:
            matched.add(id(hit))
            lat[name].append((a.t_ms - hit.t_ms) / 1000)
    months = resident_days / 30
    missed = [{"type": x.type, "band": x.band, "t_s": x.t_ms // 1000 - wt.T0} for x in truth if id(x) not in matched]
    per_type = {}
    for name in SCORED:
        n_truth = sum(1 for x in truth if x.type == name)
        tp = len(lat[name])
        xs = sorted(lat[name])
        per_type[name] = {
            "recall": round(tp / n_truth, 4) if n_truth else None,
            "precision": round(tp / (tp + false[name]), 4) if tp + false[name] else None,
            "p50_s": _pct(xs, 50),
            "p95_s": _pct(xs, 95),
            "p99_s": _pct(xs, 99),
            "count": n_truth,
            "alerts": tp + false[name],
            "false": false[name],
        }
    other: dict[str, int] = defaultdict(int)
    for a in alerts:
        if a.type.name not in SCORED:
            other[a.type.name] += 1
    false_em = false["EXIT"] + false["MISSING"]
    return {
        "per_type": per_type,
        "false_exit_missing": false_em,
        "false_per_resident_month": round(false_em / months, 3),
        "false_all_per_resident_month": round(sum(false.values()) / months, 3),
        "other_alerts": dict(other),
        "missed": missed[:20],
        "false_alerts": [
            {"type": a.type.name, "band": a.band, "t_s": a.t_ms // 1000 - wt.T0, "zone": a.zone} for a in false_list
        ][:20],
    }


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    rank = max(1, -(-len(xs) * p // 100))
    return round(xs[int(rank) - 1], 1)


def _ok(s: dict[str, Any]) -> bool:
    pt = s["per_type"]
    for name, t in TARGETS.items():
        got = pt[name]
        if got["recall"] is None or got["recall"] < t["recall"]:
            return False
        for k in ("p95_s", "p99_s"):
            if k in t and (got[k] is None or got[k] > t[k]):
                return False
    return bool(s["false_per_resident_month"] <= TARGET_FALSE_PER_MONTH)


def alerts_run(scale: float, progress: Any) -> dict[str, Any]:
    days = max(1, round(DAYS * scale))
    venue = wt.venue(RESIDENTS)
    engine = AlertEngine(venue)
    sink = EngineSink(engine)
    t = time.monotonic()
    trace = wt.simulate(sink, RESIDENTS, days, SEED)
    wall = time.monotonic() - t
    resident_days = RESIDENTS * days
    progress(
        f"wristband_alerts: {resident_days} resident-days, {trace.adverts} adverts, {trace.sightings} sightings, "
        f"{len(sink.alerts)} alerts in {wall:.0f}s"
    )
    s = score(trace.truth, sink.alerts, resident_days)

    # the sample through real adverts and the real resolver: the same alerts
    t = time.monotonic()
    fast = EngineSink(AlertEngine(venue))
    wt.simulate(fast, RESIDENTS, days, SEED, seconds=SAMPLE[1], feed_from=SAMPLE[0])
    slow = ResolverSink(AlertEngine(venue), list(venue.residents))
    wt.simulate(slow, RESIDENTS, days, SEED, seconds=SAMPLE[1], feed_from=SAMPLE[0])

    def key(a: Alert) -> tuple[Any, ...]:
        return (a.type, a.band, a.t_ms, a.zone)

    same = [key(a) for a in fast.alerts] == [key(a) for a in slow.alerts]
    hours = (SAMPLE[1] - SAMPLE[0]) // 3600
    progress(
        f"wristband_alerts: resolver sample {hours} h x {RESIDENTS} residents, {slow.resolved} adverts "
        f"resolved, {len(slow.alerts)} alerts, identical={same}, rejected={dict(slow.resolver.rejected)} "
        f"in {time.monotonic() - t:.0f}s"
    )
    s["resolver_sample"] = {
        "resident_hours": hours * RESIDENTS,
        "window": "08:00-14:00 of day 0",
        "alert_types": sorted(a.type.name for a in slow.alerts),
        "adverts_resolved": slow.resolved,
        "rejected": sum(slow.resolver.rejected.values()),
        "alerts": len(slow.alerts),
        "identical_alerts": same,
    }
    s["resident_days"] = resident_days
    s["adverts"] = trace.adverts
    s["sightings"] = trace.sightings
    s["outages"] = len(trace.outages)
    s["wall_s"] = round(wall, 1)
    s["engine_us_per_sighting_incl_sim"] = round(wall / max(1, trace.sightings) * 1e6, 2)
    s["seed"] = SEED
    return s


def adverts_run(runs: int, progress: Any) -> dict[str, Any]:
    bands = [f"WB-{i:05d}" for i in range(ADVERT_BANDS)]
    keys = [BandKey(b, root_of(b)) for b in bands]
    status = struct.pack(">BBHH", 0x08, 80, 0, 0)
    t = time.monotonic()
    rounds = [
        [ref.advert(k.root, 0, 10, wt.T0 + r, status) for k in keys] for r in range(ADVERT_ROUNDS)
    ]  # round r: every band's advert with counter T0 + r
    progress(f"ble_adverts: built {ADVERT_BANDS * ADVERT_ROUNDS} adverts in {time.monotonic() - t:.1f}s")
    rates = []
    for i in range(runs):
        res = BandResolver(keys)
        res.refresh(wt.T0 * 1000)
        resolve = res.resolve
        t = time.perf_counter()
        for r, batch in enumerate(rounds):
            now = (wt.T0 + r) * 1000 + 500
            for data in batch:
                resolve(data, now)
        rate = ADVERT_BANDS * ADVERT_ROUNDS / (time.perf_counter() - t)
        if res.counts["accepted"] != ADVERT_BANDS * ADVERT_ROUNDS:
            raise RuntimeError(f"resolver accepted {res.counts['accepted']}, rejected {dict(res.rejected)}")
        progress(f"ble_adverts run {i + 1}/{runs}: {rate:.0f} adverts/s")
        rates.append(rate)
    rates.sort()
    return {
        "name": "ble_adverts",
        "value": round(rates[len(rates) // 2]),
        "unit": "adverts/s",
        "target": 50_000,
        "ok": rates[len(rates) // 2] >= 50_000,
        "runs": [round(x) for x in rates],
        "bands": ADVERT_BANDS,
        "adverts_per_run": ADVERT_BANDS * ADVERT_ROUNDS,
        "note": "one core, includes the per-second EID table refresh (1000 bands, windows unchanged)",
    }


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    from tests.bench.rig import progress

    lines = []
    if "wristband_alerts" in names:
        s = alerts_run(scale, progress)
        lines.append(
            {
                "name": "wristband_alerts",
                "value": s["false_per_resident_month"],
                "unit": "false EXIT+MISSING alerts per resident-month",
                "target": TARGET_FALSE_PER_MONTH,
                "ok": _ok(s),
                "targets": TARGETS,
                **s,
            }
        )
    if "ble_adverts" in names:
        lines.append(adverts_run(runs, progress))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_wristband", description=__doc__)
    ap.add_argument("--only", action="append", choices=NAMES)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    for line in run(set(args.only or NAMES), args.runs, args.scale):
        sys.stdout.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
