"""firmware_size, firmware_heap, firmware_wakeups: the device apps' flash, heap and energy budgets.

All three run the bundles guardian-provision builds (only the modules each app imports,
.mpy) on the rig of tests/bench/firmware_rig.py (virtual boards on the MicroPython unix port,
a real agent between two Mosquitto brokers, the virtual air).

firmware_size: bytes of each app's bundle (value: the alarm post's .mpy bytes; target: every
bundle, .mpy and the two source files, <= 48 KB).

firmware_heap: each app's smallest working heap, bisected in 1 KB steps with
`micropython -X heapsize=<n>K` on a fresh board per trial (the cycles in firmware_rig.py);
value: the largest of the three minima (median over the runs). Targets on the 64-bit unix
port: <= 96 KB for the alarm post and the sensor, <= 64 KB for the wristband. One extra run
per app with the source files (.py, compiled on the device) shows what the .mpy bundle saves.

firmware_wakeups: per app, idle and busy, the interpreter's sleeps that ended per second
(voluntary context switches: each is one return from poll() that had blocked) and its CPU
share (schedstat), over WINDOW_S; median over the runs. For the wristband an energy model
turns the idle-wear figures into days on a 150 mAh cell (ENERGY below, docs/boards.md
"Budgets" gives the constants and their sources); value: those days (target >= 90).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil_tests.sim.firmware import firmware_files
from tests.bench.firmware_rig import (
    HEAP_TARGET_KB,
    KINDS,
    SIZE_TARGET,
    SMOKE,
    FirmwareSite,
    Load,
    _seen,
    idle,
    measure,
    min_heap,
    wait_stage,
)
from tests.bench.rig import progress

NAMES = ("firmware_size", "firmware_heap", "firmware_wakeups")
WINDOW_S = 10.0
ACCEL_HZ = 50  # the fall detector's sample rate
ACCEL_WATERMARK = 32  # samples per FIFO read (one wake), as a watermark interrupt would give

# The band's energy model. Currents at 3 V with the DC/DC regulator on, from the nRF52840
# Product Specification v1.7 (section "Current consumption"), and the accelerometer's data
# sheet; docs/boards.md "Budgets" lists them with their sources.
ENERGY = {
    "soc": "nRF52840 (MicroPython zephyr port)",
    "cell_mah": 150.0,
    "i_sleep_ua": 3.16,  # System ON, full RAM retention, wake on RTC (I_ON_RAMON_RTC)
    "i_cpu_ma": 3.3,  # CPU at 64 MHz running from flash, cache on (52 uA/MHz)
    "i_tx_ma": 4.8,  # radio TX at 0 dBm, 1 Mbit/s BLE
    "t_ramp_us": 140,  # radio TX ramp-up per channel (default mode)
    "t_pdu_us": 376,  # 47 bytes on air per channel: 31-byte advert + 6-byte address + overhead
    "channels": 3,  # one advertising event: channels 37, 38, 39
    # the controller advertises once per interval (interval_ms 1000 while idle); the virtual
    # radio also sends at once when the data changes, so the air's count is not used here
    "adv_events_per_s": 1.0,
    "i_accel_ua": 4.0,  # LIS3DH low-power mode at 50 Hz (data sheet: 4 uA at 50 Hz, LP mode)
    # host CPU time -> MCU CPU time: MicroPython bytecode on a 64 MHz Cortex-M4F is taken
    # to run K times slower than on one core of the machine running the bench; K is not
    # measured here (no board), so the days are given for K = 50, 100 and 200 and the
    # target is checked at the pessimistic end
    "k_nominal": 100,
    "k_range": (50, 100, 200),
}
DAYS_TARGET = 90


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def size_line(site: FirmwareSite) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for kind in KINDS:
        files = site.files[kind]
        sizes = {p: (f.stat().st_size if isinstance(f, Path) else len(f)) for p, f in files.items()}
        mpy = sum(n for p, n in sizes.items() if p.endswith(".mpy"))
        total = sum(n for p, n in sizes.items() if p != "manifest.json")
        per[kind] = {"mpy_bytes": mpy, "bundle_bytes": total, "files": len(sizes) - 1}
    return {
        "name": "firmware_size",
        "value": per["alarm_post"]["mpy_bytes"],
        "unit": "bytes of .mpy (alarm post)",
        "target": SIZE_TARGET,
        "ok": all(v["bundle_bytes"] <= SIZE_TARGET for v in per.values()),
        **per,
    }


def heap_line(site: FirmwareSite, runs: int) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for kind in KINDS:
        mins = []
        for i in range(runs):
            kb, trials = min_heap(site, kind, 16, 256)
            progress(f"firmware_heap {kind} run {i + 1}/{runs}: {kb} KB ({len(trials)} trials)")
            mins.append(kb)
        src = firmware_files(kind)
        kb_py, _ = min_heap(site, kind, 16, 256, files=src)
        progress(f"firmware_heap {kind} from .py sources: {kb_py} KB")
        per[kind] = {
            "min_heap_kb": _median(mins),
            "runs": mins,
            "target_kb": HEAP_TARGET_KB[kind],
            "ok": _median(mins) <= HEAP_TARGET_KB[kind],
            "min_heap_py_sources_kb": kb_py,
        }
    return {
        "name": "firmware_heap",
        "value": max(v["min_heap_kb"] for v in per.values()),
        "unit": "KB (largest of the apps' smallest working heaps, 64-bit unix port)",
        "target": HEAP_TARGET_KB,
        "ok": all(v["ok"] for v in per.values()),
        **per,
    }


def _loads(site: FirmwareSite, kind: str) -> tuple[Load, Load]:
    """(idle, busy) of one fresh board of `kind`."""
    with site.board(kind, None) as board:
        assert board.pid is not None
        pid = board.pid
        if kind == "alarm_post":
            wait_stage(board, _seen(board, "alarm_post: connected"), "connect")
            wait_stage(board, _seen(board, "event 1/1 delivered"), "online delivered")
            quiet = measure(pid, WINDOW_S, idle)

            def presses(deadline: float) -> None:
                while time.monotonic() < deadline - 1:
                    t = time.monotonic()
                    board.click()
                    time.sleep(max(0.0, t + 1.0 - time.monotonic()))
                idle(deadline)

            return quiet, measure(pid, WINDOW_S, presses)
        if kind == "sensor":
            board.set_value("smoke", 20)
            wait_stage(board, _seen(board, "sensor: connected"), "connect")
            quiet = measure(pid, WINDOW_S, idle)
            board.set_value("smoke", SMOKE)
            wait_stage(board, _seen(board, "confirmed"), "smoke confirmed")
            return quiet, measure(pid, WINDOW_S, idle)  # the sounder's pattern runs
        assert site.air is not None
        air = site.air
        wait_stage(board, _seen(board, f"wristband: {board.name} up"), "boot")

        def on_air() -> int:
            return sum(1 for a in air.adverts() if a[2] == 0.0)

        def worn(deadline: float) -> None:
            period = ACCEL_WATERMARK / ACCEL_HZ
            while True:
                t = time.monotonic()
                if t + period > deadline:
                    break
                for _ in range(ACCEL_WATERMARK):
                    board.accel(0, 0, 1000)
                time.sleep(max(0.0, t + period - time.monotonic()))
            idle(deadline)

        quiet = measure(pid, WINDOW_S, worn, on_air)
        board.hold(2300)
        return quiet, measure(pid, WINDOW_S, idle, on_air)  # the SOS burst


def energy(load: Load, k: float) -> dict[str, float]:
    """Average current (uA) and days on the cell for the band at this host-to-MCU factor."""
    e = ENERGY
    duty = min(1.0, load.cpu_share * k)
    adv_uc = e["channels"] * (e["t_ramp_us"] + e["t_pdu_us"]) * e["i_tx_ma"] / 1000  # uC per advert
    i_ua = e["i_sleep_ua"] * (1 - duty) + duty * e["i_cpu_ma"] * 1000 + e["adv_events_per_s"] * adv_uc + e["i_accel_ua"]
    return {
        "k": k,
        "mcu_duty": round(duty, 5),
        "avg_ua": round(i_ua, 2),
        "days": round(e["cell_mah"] * 1000 / i_ua / 24, 1),
    }


def wakeups_line(site: FirmwareSite, runs: int) -> dict[str, Any]:
    per: dict[str, Any] = {}
    band_idle: list[Load] = []
    for kind in KINDS:
        quiet: list[Load] = []
        busy: list[Load] = []
        for i in range(runs):
            q, b = _loads(site, kind)
            quiet.append(q)
            busy.append(b)
            progress(
                f"firmware_wakeups {kind} run {i + 1}/{runs}: idle {q.wakeups_per_s}/s cpu {q.cpu_share:.4f}, "
                f"busy {b.wakeups_per_s}/s cpu {b.cpu_share:.4f}"
            )
        per[kind] = {"idle": _summary(quiet), "busy": _summary(busy)}
        if kind == "wristband":
            band_idle = quiet
    model = _band_model(band_idle)
    worst = min(m["days"] for m in model["days_by_k"])
    return {
        "name": "firmware_wakeups",
        "value": worst,
        "unit": f"days on a {ENERGY['cell_mah']:.0f} mAh cell, wristband idle-wear (K={max(ENERGY['k_range'])})",
        "target": DAYS_TARGET,
        "ok": worst >= DAYS_TARGET,
        **per,
        "band_energy": model,
    }


def _summary(loads: list[Load]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "wakeups_per_s": _median([x.wakeups_per_s for x in loads]),
        "cpu_share": _median([x.cpu_share for x in loads]),
        "cpu_us_per_wakeup": _median([x.cpu_us_per_wakeup for x in loads]),
        "runs": len(loads),
    }
    if loads and loads[0].adverts_per_s is not None:
        out["adverts_per_s"] = _median([x.adverts_per_s or 0.0 for x in loads])
        out["cpu_us_per_advert"] = round(
            _median([x.cpu_share / max(x.adverts_per_s or 0.0, 1e-9) for x in loads]) * 1e6, 1
        )
    return out


def _band_model(loads: list[Load]) -> dict[str, Any]:
    mid = Load(
        WINDOW_S,
        _median([x.wakeups_per_s for x in loads]),
        _median([x.cpu_share for x in loads]),
        _median([x.cpu_us_per_wakeup for x in loads]),
        _median([x.adverts_per_s or 0.0 for x in loads]),
    )
    return {
        "constants": {k: v for k, v in ENERGY.items() if k != "k_range"},
        "host_cpu_share": mid.cpu_share,
        "adverts_per_s": mid.adverts_per_s,
        "days_by_k": [energy(mid, k) for k in ENERGY["k_range"]],
    }


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    lines = []
    with tempfile.TemporaryDirectory(prefix="ge-fwbench-") as tmp, FirmwareSite(Path(tmp)) as site:
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("firmware_size", lambda: size_line(site)),
            ("firmware_heap", lambda: heap_line(site, runs)),
            ("firmware_wakeups", lambda: wakeups_line(site, runs)),
        ]
        for name, fn in steps:
            if name in names:
                lines.append(fn())
    return lines
