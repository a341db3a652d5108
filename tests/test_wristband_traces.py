"""The wristband benchmark's trace generator and scoring (tests/bench/wristband_traces.py,
tests/bench/bench_wristband.py): conditions are parameters, and an exit no scanner watched is
scored apart. The benchmark itself runs in `make bench`; these keep its machinery honest."""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.gateway.wristbands.alerts import Alert
from agent.shared.protocol import EventType
from tests.bench import bench_wristband as bw
from tests.bench import wristband_traces as wt


class _Count:
    def __init__(self) -> None:
        self.adverts = 0
        self.bands: set[str] = set()
        self.scanner_events: list[tuple[str, bool, int]] = []
        self.doors: list[tuple[str, bool, int]] = []
        self.ticks = 0

    def advert(self, t_ms: int, band: str, counter: int, status: Any, heard: list[Any]) -> None:
        self.adverts += 1
        self.bands.add(band)
        assert heard and all(sc in {s for s, _, _ in wt.SCANNERS} and -96 < rssi < 0 for sc, rssi in heard)

    def scanner(self, scanner: str, up: bool, t_ms: int) -> None:
        self.scanner_events.append((scanner, up, t_ms))

    def door(self, door: str, opened: bool, t_ms: int) -> None:
        self.doors.append((door, opened, t_ms))

    def tick(self, t_ms: int) -> None:
        self.ticks += 1


def test_harsh_conditions_are_parameters_and_the_trace_is_seeded() -> None:
    cond = dataclasses.replace(wt.HARSH, residents=2)
    runs = []
    for _ in range(2):
        sink = _Count()
        trace = wt.simulate(sink, cond, seed=7, seconds=9 * 3600)
        runs.append((sink.adverts, trace.sightings, [(o.scanners, o.start) for o in trace.outages], sink.doors))
    assert runs[0] == runs[1]  # the same seed, the same trace
    assert sink.bands == {"WB-0001", "WB-0002"} and sink.ticks == 9 * 3600
    reboots = [o for o in trace.outages if o.scanners == ("X1",) and o.end - o.start <= 90]
    assert len(reboots) >= 8  # the exit scanner reboots hourly
    downs = [e for e in sink.scanner_events if e[0] == "X1" and not e[1]]
    assert downs and all(e[2] % 1000 == 0 for e in downs)
    # staff and visitors open the front door by day (07:00-21:00), never at night
    opened = [t // 1000 - wt.T0 for _, o, t in sink.doors if o]
    assert opened and all(7 * 3600 <= t < 21 * 3600 for t in opened)
    # advert loss is a parameter: without it, each advert reaches a third more scanners than at 25 %
    plain = wt.simulate(_Count(), dataclasses.replace(cond, loss=0.0), seed=7, seconds=9 * 3600)
    assert plain.adverts == trace.adverts
    assert plain.sightings / plain.adverts > 1.25 * trace.sightings / trace.adverts


def test_an_unwatched_exit_caught_by_missing_is_not_a_false_alert() -> None:
    t = wt.T0 * 1000
    truth = [
        wt.Truth("EXIT", "WB-0001", t, t + 3_600_000, watched=False),
        wt.Truth("EXIT", "WB-0002", t, t + 3_600_000),
    ]
    alerts = [
        Alert(EventType.MISSING, "WB-0001", "r1", "Dining room", t + 200_000),
        Alert(EventType.MISSING, "WB-0002", "r2", "Dining room", t + 200_000),
        Alert(EventType.EXIT, "WB-0002", "r2", "Front door lobby", t + 5_000),
    ]
    s = bw.score(truth, alerts, resident_days=30)
    assert s["unwatched_exits"] == 1 and s["unwatched_caught"] == {"MISSING": 1}
    assert s["counts"]["EXIT"] == 1 and s["latencies"]["EXIT"] == [5.0]  # the watched one only
    assert s["false"]["MISSING"] == 1 and s["false_per_resident_month"] == 1.0  # WB-0002's MISSING
    line = bw.pooled([s, s], [1, 2], 30)
    assert line["value"] == 1.0 and line["worst"] == 1.0 and line["seeds"] == 2
    assert line["per_type"]["EXIT"]["recall"] == 1.0 and line["exit_unwatched"]["count"] == 2
