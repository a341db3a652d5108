"""firmware_size, firmware_heap, firmware_wakeups: the device apps' flash, heap and energy budgets.

All three run the bundles guardian-provision builds (only the modules each app imports,
.mpy) on the rig of tests/bench/firmware_rig.py (virtual boards on the MicroPython unix port,
a real agent between two Mosquitto brokers, the virtual air), and the real boards' bundles
(firmware/boards/*.json: the port's hal, the board file in its checked form, one link).

firmware_size: bytes on flash of every bundle a board gets: each real board's, for each link
it may use (value: the largest alarm post's; target: every one <= 48 KB), and, for
reference, the virtual board's and the bundles that carry both links (`bundle` without
--transport; flash never builds those).

firmware_heap: each app's smallest working heap, bisected in 1 KB steps with
`micropython -X heapsize=<n>K` on a fresh board per trial (the cycles in firmware_rig.py);
value: the largest of the three minima (median over the runs). Targets on the 64-bit unix
port: <= 96 KB for the alarm post and the sensor, <= 64 KB for the wristband. One extra run
per app with the source files (.py, compiled on the device) shows what the .mpy bundle saves.
A real board runs its port's hal instead of the virtual board's: per board, the heap its hal
holds (code and Board objects, tests/bench/mp_hal_heap.py on the fakes of
tests/firmware/fakes.py) less the virtual hal's, added to the minimum, is the real-board
estimate (an upper bound: the fakes' objects are larger than the machine module's).

firmware_wakeups: per app, idle and busy, the virtual board's interpreter's sleeps that ended
per second (voluntary context switches) and its CPU share (schedstat), over WINDOW_S; median
over the runs. These are the simulation's: the virtual board wakes for its control socket,
its radio's repeats and every accelerometer sample. The wristband's energy is modelled from
what its code does on its own board instead (band_energy): the wake-ups its loop makes worn
and idle (one new advert per interval_ms, the hal's naps, the accelerometer only on a free
fall), the CPU time of each kind measured here on the band's own hal (tests/bench/
mp_band_wakes.py), the host-to-nRF52840 factor K from a measured proxy (K_PROXY) and the
datasheet currents (ENERGY; docs/boards.md "Budgets" has the sources). Value: days on a
150 mAh cell at the largest K (target >= 90).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil_tests.sim.firmware import firmware_files
from hil_tests.sim.tools import require_micropython
from provisioning.boards import BoardFile, load_board
from provisioning.bundle import FIRMWARE_DIR, build_bundle
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
ACCEL_HZ = 50  # the virtual band's accelerometer samples (the fall detector's rate)
ACCEL_BATCH = 32  # samples sent together in the worn-idle load (the part's FIFO)
HERE = Path(__file__).resolve().parent
FAKES = HERE.parent / "firmware"  # tests/firmware/fakes.py
# the products' boards (firmware/boards/) and the links each may use
BOARDS: dict[str, tuple[str, ...]] = {
    "alarm_post": ("alarm-post-esp32c3", "alarm-post-picow"),
    "sensor": ("sensor-esp32s3",),
    "wristband": ("wristband-nrf52840",),
}
LINKS: dict[str, tuple[str | None, ...]] = {
    "alarm_post": ("mqtt", "uart"),
    "sensor": ("mqtt", "uart"),
    "wristband": (None,),
}

# The band's energy on its SoC, nRF52840 on MicroPython's zephyr port (docs/boards.md). Currents
# at 3 V, DC/DC on: nRF52840 Product Specification v1.7, "Current consumption"; the
# accelerometer: ST LIS3DH datasheet DocID17530 rev 2, table 12.
ENERGY = {
    "soc": "nRF52840 (MicroPython zephyr port)",
    "cell_mah": 150.0,
    "i_sleep_ua": 3.16,  # System ON, full RAM retention, wake on RTC (I_ON_RAMON_RTC)
    "i_cpu_ma": 3.3,  # CPU at 64 MHz from flash, cache on (52 uA/MHz)
    "i_tx_ma": 4.8,  # radio TX 0 dBm, 1 Mbit/s BLE
    "i_rx_ma": 4.6,  # radio RX 1 Mbit/s BLE
    "t_ramp_us": 140,  # radio ramp-up per channel (default mode), TX and RX
    "t_pdu_us": 376,  # 47 bytes on air per channel: 31-byte advert + 6-byte address + overhead
    "t_listen_us": 190,  # a scannable advert listens for a SCAN_REQ: T_IFS 150 us + its start
    "channels": 3,  # one advertising event: channels 37, 38, 39
    "i_accel_ua": 11.0,  # LIS3DH 50 Hz, high-resolution mode (8-bit low-power mode: 6 uA)
    "t_wake_us": 20,  # a kernel wake-up and thread switch per wake (assumed; Zephyr, 64 MHz)
    "i2c_hz": 400000,  # the accelerometer's bus; the read's bus time counted at CPU current
    "false_free_falls_per_hour": 12,  # assumed: arm swings that drop every axis below ff_mg
}
# Host -> nRF52840 factor for MicroPython: 1,000,000 turns of `for i in range(n): s = a + b`,
# published for Cortex-M4F boards (shaoziyang/micropython_benchmarks, 1.9.4-479/README.md,
# "Int Add", MicroPython 1.9.4), scaled by clock to the nRF52840's 64 MHz, divided by the
# same loop timed here on the unix port: (board, MHz, seconds)
K_PROXY = (("STM32L432 Nucleo_L432KC", 32, 20.86), ("STM32L476 DISC", 80, 8.59), ("STM32F411 Nucleo", 96, 5.86))
NRF_MHZ = 64
DAYS_TARGET = 90
_INT_ADD = """
import time
def f(n=1000000, a=12345, b=56789):
    t = time.ticks_us()
    for i in range(n):
        s = a + b
    return time.ticks_diff(time.ticks_us(), t)
print(min(f() for _ in range(5)))
"""


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _bundle_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")


def size_line(site: FirmwareSite) -> dict[str, Any]:
    per: dict[str, Any] = {}
    out = site.workdir / "size"
    flashed: list[int] = []
    for kind in KINDS:
        files = site.files[kind]
        sizes = {p: (f.stat().st_size if isinstance(f, Path) else len(f)) for p, f in files.items()}
        boards: dict[str, int] = {}
        both: dict[str, int] = {}
        for name in BOARDS[kind]:
            board = load_board(name, FIRMWARE_DIR)
            for link in LINKS[kind]:
                b = build_bundle(kind, out / f"{kind}-{name}-{link}", board=board, transport=link)
                boards[f"{name}/{link}" if link else name] = _bundle_bytes(b.root)
            if LINKS[kind] != (None,):
                both[name] = _bundle_bytes(build_bundle(kind, out / f"{kind}-{name}-both", board=board).root)
        flashed += boards.values()
        per[kind] = {
            "boards": boards,
            "largest": max(boards.values()),
            "virtual_both_links": sum(n for p, n in sizes.items() if p != "manifest.json"),
            "virtual_mpy_bytes": sum(n for p, n in sizes.items() if p.endswith(".mpy")),
        }
        if both:
            per[kind]["both_links"] = both
    return {
        "name": "firmware_size",
        "value": per["alarm_post"]["largest"],
        "unit": "bytes on flash (largest alarm post bundle: real board, one link)",
        "target": SIZE_TARGET,
        "ok": all(n <= SIZE_TARGET for n in flashed),
        **per,
    }


def hal_heap(kind: str, board: BoardFile | None, workdir: Path) -> dict[str, int]:
    """The heap the board's hal holds on the unix port: code and Board objects (mp_hal_heap.py)."""
    name = board.name if board is not None else "virtual"
    b = build_bundle(kind, workdir / "halheap" / f"{kind}-{name}", board=board or load_board("virtual", FIRMWARE_DIR))
    port = board.port if board is not None else "unix"
    args = [require_micropython(), str(HERE / "mp_hal_heap.py"), kind, port]
    if board is not None:
        args.append(str(b.root / board.device_path))
    env = dict(os.environ, MICROPYPATH=f"{b.root}:{b.root}/lib:{FAKES}")
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=b.root, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mp_hal_heap {kind} {name}: {proc.stderr.strip()[-300:]}")
    got: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return got


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
        virtual = hal_heap(kind, None, site.workdir)
        real: dict[str, Any] = {}
        for name in BOARDS[kind]:
            h = hal_heap(kind, load_board(name, FIRMWARE_DIR), site.workdir)
            extra = (h["modules"] + h["objects"] - virtual["modules"] - virtual["objects"]) / 1024
            est = round(_median(mins) + extra, 1)
            real[name] = {
                "hal_code_kb": round(h["modules"] / 1024, 1),
                "hal_objects_kb": round(h["objects"] / 1024, 1),
                "more_than_virtual_kb": round(extra, 1),
                "estimate_kb": est,
                "ok": est <= HEAP_TARGET_KB[kind],
            }
        per[kind] = {
            "min_heap_kb": _median(mins),
            "runs": mins,
            "target_kb": HEAP_TARGET_KB[kind],
            "ok": _median(mins) <= HEAP_TARGET_KB[kind],
            "min_heap_py_sources_kb": kb_py,
            "virtual_hal_kb": round((virtual["modules"] + virtual["objects"]) / 1024, 1),
            "real_boards": real,
        }
    return {
        "name": "firmware_heap",
        "value": max(v["min_heap_kb"] for v in per.values()),
        "unit": "KB (largest of the apps' smallest working heaps, virtual board, 64-bit unix port)",
        "target": HEAP_TARGET_KB,
        "ok": all(v["ok"] for v in per.values()),
        "real_boards_ok": all(r["ok"] for v in per.values() for r in v["real_boards"].values()),
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
            period = ACCEL_BATCH / ACCEL_HZ
            while True:
                t = time.monotonic()
                if t + period > deadline:
                    break
                for _ in range(ACCEL_BATCH):
                    board.accel(0, 0, 1000)
                time.sleep(max(0.0, t + period - time.monotonic()))
            idle(deadline)

        quiet = measure(pid, WINDOW_S, worn, on_air)
        board.hold(2300)
        return quiet, measure(pid, WINDOW_S, idle, on_air)  # the SOS burst


def host_int_add_us() -> float:
    """The K proxy's loop on this machine's unix port: microseconds, best of five."""
    proc = subprocess.run(
        [require_micropython(), "-c", _INT_ADD], capture_output=True, text=True, timeout=120, check=True
    )
    return float(proc.stdout.strip())


def k_factors(host_us: float) -> list[dict[str, Any]]:
    """Host -> nRF52840 slowdown of MicroPython per published Cortex-M4F board (clock-scaled)."""
    return [
        {"board": b, "mhz": mhz, "seconds": sec, "k": round(sec * 1e6 * mhz / NRF_MHZ / host_us)}
        for b, mhz, sec in K_PROXY
    ]


def band_wake_costs(workdir: Path) -> dict[str, float]:
    """Host CPU microseconds per kind of the band's wake-ups, on its own hal (mp_band_wakes.py)."""
    board = load_board(BOARDS["wristband"][0], FIRMWARE_DIR)
    b = build_bundle("wristband", workdir / "bandwakes" / "bundle", board=board)
    env = dict(os.environ, MICROPYPATH=f"{b.root}:{b.root}/lib:{FAKES}")
    args = [require_micropython(), str(HERE / "mp_band_wakes.py"), str(b.root / board.device_path)]
    args.append(str(workdir / "bandwakes" / "data"))
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=b.root, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mp_band_wakes: {proc.stderr.strip()[-300:]}")
    got: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return got


def band_energy(cost: dict[str, float], k: float) -> dict[str, Any]:
    """Average current (uA) by part and days on the cell at host-to-MCU factor k.

    `cost`: mp_band_wakes.py's figures, the schedule (worn, idle) with them: a new advert
    every interval_ms and the controller's advertising event at that interval, the hal's
    looks at its poll set every _NAP_MS, the accelerometer read only after a free fall.
    """
    e = ENERGY
    sched = cost
    cpu = e["i_cpu_ma"] * 1000  # uA while running
    wake = e["t_wake_us"] / 1e6
    bus = 9 / e["i2c_hz"]  # seconds per byte on the bus
    ff = e["false_free_falls_per_hour"] / 3600
    # a free fall that is not a fall: one read of the whole FIFO, then about a second of
    # watching (the detector waits impact_ms for an impact): three watermark batches
    ff_s = (cost["fall"] + 3 * cost["fifo"]) / 1e6 * k + 4 * wake + (32 + 3 * 16) * 6 * bus
    radio_uc = (
        e["channels"]
        * ((e["t_ramp_us"] + e["t_pdu_us"]) * e["i_tx_ma"] + (e["t_ramp_us"] + e["t_listen_us"]) * e["i_rx_ma"])
        / 1000
    )
    parts = {
        "sleep": e["i_sleep_ua"],
        "accelerometer": e["i_accel_ua"],
        "adverts_cpu": sched["adverts_per_s"] * (cost["advert"] / 1e6 * k + wake) * cpu,
        "naps_cpu": sched["naps_per_s"] * (cost["nap"] / 1e6 * k + wake) * cpu,
        "radio": sched["adv_events_per_s"] * radio_uc,
        "free_falls": ff * ff_s * cpu,
    }
    total = sum(parts.values())
    return {
        "k": k,
        "avg_ua": round(total, 1),
        "by_part_ua": {n: round(v, 2) for n, v in parts.items()},
        "days": round(e["cell_mah"] * 1000 / total / 24, 1),
    }


def wakeups_line(site: FirmwareSite, runs: int) -> dict[str, Any]:
    per: dict[str, Any] = {}
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
        per[kind] = {"virtual_idle": _summary(quiet), "virtual_busy": _summary(busy)}
    costs = [band_wake_costs(site.workdir) for _ in range(runs)]
    cost = {n: _median([c[n] for c in costs]) for n in costs[0]}
    hosts = [host_int_add_us() for _ in range(runs)]
    ks = k_factors(_median(hosts))
    kv = sorted(x["k"] for x in ks)
    by_k = [band_energy(cost, k) for k in kv]
    worst = by_k[-1]["days"]
    progress(f"firmware_wakeups band: K {kv}, days {[m['days'] for m in by_k]}")
    return {
        "name": "firmware_wakeups",
        "value": worst,
        "unit": f"days on a {ENERGY['cell_mah']:.0f} mAh cell, wristband worn and idle (K={kv[-1]})",
        "target": DAYS_TARGET,
        "ok": worst >= DAYS_TARGET,
        **per,
        "band_energy": {
            "host_us_per_wake_and_schedule": cost,
            "host_int_add_us": _median(hosts),
            "k_proxy": ks,
            "constants": ENERGY,
            "by_k": by_k,
        },
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
    return out


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
