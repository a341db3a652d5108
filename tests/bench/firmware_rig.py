"""The device apps' real cycles on virtual boards, under a chosen heap: the firmware budgets' rig.

Every trial flashes the app's bundle as guardian-provision builds it (provisioning/bundle.py:
only the modules the app imports, compiled to .mpy) onto a fresh virtual board
(hil_tests/sim/board.py) whose interpreter runs as `micropython -X heapsize=<n>K`, then runs
the app's cycle against real parts:

    alarm_post  two presses, each delivered (receipt 2 after central's broker PUBACKed it)
    sensor      a smoke reading confirmed and the SMOKE event delivered
    wristband   SOS held 2.3 s; the burst's adverts on the virtual air carry the SOS flag
                (checked with the gateway's resolver and the band's key)

A trial fails when the console shows a MemoryError, a crash or a traceback, when the board
resets, or when the cycle does not complete within its deadline. Posts and sensors report to a
real agent between two Mosquitto brokers (started once per `FirmwareSite`, with enough device
ids registered for every trial); bands advertise into a VirtualAir.

`min_heap()` bisects the smallest heap that completes the cycle; `measure_wakeups()` reads a
running board's interpreter from /proc (context switches: every sleep in poll() that ends is
one; CPU time from schedstat). Used by `make bench` (tests/bench/bench_firmware.py) and by the
heap budget test in `make test` (tests/test_firmware_budgets.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.gateway.wristbands.advert import SOS, AdvertError, band_root
from agent.gateway.wristbands.resolver import BandKey, BandResolver
from agent.shared.registry import Device
from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, sensor_config, wristband_config
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import require_micropython
from provisioning.bundle import MANIFEST, Bundle, build_bundle

KINDS = ("alarm_post", "sensor", "wristband")
PREFIX = {"alarm_post": "AP-H", "sensor": "VS-H", "wristband": "WB-H"}
HEAP_TARGET_KB = {"alarm_post": 96, "sensor": 96, "wristband": 64}  # 64-bit unix port
SIZE_TARGET = 48 * 1024  # bytes per app bundle
IDS_PER_KIND = 200
FAIL_MARKERS = (b"MemoryError", b"app crashed", b"Traceback")
CYCLE_S = 20.0  # deadline of one stage of a cycle
SMOKE = 400  # milli-dB/m: above the smoke channel's threshold (150)
SENSOR_CHANNELS = [{"name": "smoke", "type": "smoke", "confirm_ms": 500}]
VENUE = {
    "name": "bench",
    "model": {"shadowing_db": 0, "loss": 0.0, "sensitivity_dbm": -120, "seed": 1},
    "zones": [{"name": "room", "rect": [0, 0, 10, 10]}],
    "scanners": [],
}
SOS_ADVERTS = 5  # SOS-flagged adverts on air that complete a band's cycle
PRESS_GAP_S = 0.2  # between the starts of the alarm post's two 150 ms clicks (issue 11's two clicks)


def key_of(device: str) -> bytes:
    return hashlib.sha256(b"bench key " + device.encode()).digest()


def bundle_files(bundle: Bundle) -> dict[str, str | bytes | Path]:
    """Device path -> host file: the bundle exactly as flashed (manifest.json included)."""
    files: dict[str, str | bytes | Path] = {f.path: bundle.root / f.path for f in bundle.files}
    files[MANIFEST] = bundle.manifest
    return files


def build_bundles(workdir: Path) -> dict[str, Bundle]:
    return {kind: build_bundle(kind, workdir / "bundles" / kind) for kind in KINDS}


def heap_interpreter(workdir: Path, heap_kb: int | None) -> str:
    """A micropython executable for VirtualBoard that runs with `-X heapsize=<heap_kb>K`."""
    real = require_micropython()
    if heap_kb is None:
        return real
    path = workdir / f"micropython-{heap_kb}k"
    if not path.exists():
        path.write_text(f'#!/bin/sh\nexec {shlex.quote(real)} -X heapsize={heap_kb}K "$@"\n')
        path.chmod(0o755)
    return str(path)


@dataclass(frozen=True, slots=True)
class Trial:
    kind: str
    heap_kb: int | None
    ok: bool
    reason: str  # "" when ok; else what failed (marker, reset or the stage that timed out)
    seconds: float


class CycleFailed(Exception):
    pass


class FirmwareSite:
    """Brokers, the agent and the virtual air, started once; boards come and go per trial."""

    def __init__(self, workdir: Path, kinds: tuple[str, ...] = KINDS) -> None:
        self.workdir = Path(workdir)
        self.kinds = kinds
        self.files: dict[str, dict[str, str | bytes | Path]] = {}
        self._next = dict.fromkeys(KINDS, 0)
        self._stack = contextlib.ExitStack()
        self.local: Mosquitto | None = None
        self.agent: AgentProcess | None = None
        self.air: VirtualAir | None = None
        self.resolver: BandResolver | None = None

    def __enter__(self) -> FirmwareSite:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for kind in self.kinds:
            self.files[kind] = bundle_files(build_bundle(kind, self.workdir / "bundles" / kind))
        if "alarm_post" in self.kinds or "sensor" in self.kinds:
            local = Mosquitto(self.workdir / "local", name="local")
            central = Mosquitto(self.workdir / "central", name="central")
            for broker in (local, central):
                broker.start()
                self._stack.callback(broker.kill)
            devices = [
                Device(self.device_id(kind, n), kind, key_of(self.device_id(kind, n)), "venue-1", "hall")
                for kind in ("alarm_post", "sensor")
                if kind in self.kinds
                for n in range(IDS_PER_KIND)
            ]
            agent = AgentProcess(self.workdir / "gw", local.address, central.address, devices)
            agent.start()
            self._stack.callback(agent.kill)
            agent.wait_log("uplink_up")
            self.local, self.agent = local, agent
        if "wristband" in self.kinds:
            self.air = self._stack.enter_context(VirtualAir(parse_venue(VENUE)))
            bands = [self.device_id("wristband", n) for n in range(IDS_PER_KIND)]
            self.resolver = BandResolver([BandKey(b, band_root(key_of(b))) for b in bands])

    def device_id(self, kind: str, n: int) -> str:
        return f"{PREFIX[kind]}{n:04d}"

    def _new_id(self, kind: str) -> str:
        n = self._next[kind]
        if n >= IDS_PER_KIND:
            raise RuntimeError(f"{kind}: all {IDS_PER_KIND} registered device ids used")
        self._next[kind] = n + 1
        return self.device_id(kind, n)

    def config(self, kind: str, device: str) -> dict[str, Any]:
        key = key_of(device)
        if kind == "wristband":
            return wristband_config(device, key)
        assert self.local is not None
        if kind == "sensor":
            return sensor_config(device, key, self.local.address, SENSOR_CHANNELS)
        return alarm_post_config(device, key, self.local.address)

    @contextlib.contextmanager
    def board(
        self, kind: str, heap_kb: int | None, files: Mapping[str, str | bytes | Path] | None = None
    ) -> Iterator[VirtualBoard]:
        """A fresh board of `kind` with its own device id, flashed and powered, closed after."""
        dev = self._new_id(kind)
        air = self.air.address if kind == "wristband" and self.air is not None else None
        sensors = ("smoke",) if kind == "sensor" else ()
        board = VirtualBoard(
            dev,
            self.workdir / "boards" / dev,
            micropython=heap_interpreter(self.workdir, heap_kb),
            air=air,
            sensors=sensors,
        )
        try:
            board.install(files if files is not None else self.files[kind], self.config(kind, dev))
            board.power_on()
            yield board
        finally:
            board.close()

    def trial(self, kind: str, heap_kb: int | None, files: Mapping[str, str | bytes | Path] | None = None) -> Trial:
        """Run the app's cycle once on a fresh board with this heap."""
        t0 = time.monotonic()
        try:
            with self.board(kind, heap_kb, files) as board:
                CYCLES[kind](self, board)
        except CycleFailed as exc:
            return Trial(kind, heap_kb, False, str(exc), time.monotonic() - t0)
        return Trial(kind, heap_kb, True, "", time.monotonic() - t0)

    def sos_adverts(self, since: int) -> int:
        """Adverts on the air from `since` on whose status carries the SOS flag."""
        assert self.air is not None and self.resolver is not None
        n = 0
        for _, _, _, _, raw in self.air.adverts(since):
            try:
                sighting = self.resolver.resolve(raw, int(time.time() * 1000))
            except AdvertError:
                continue
            if sighting.status.flags & SOS:
                n += 1
        return n


def wait_stage(board: VirtualBoard, done: Callable[[], bool], stage: str, timeout: float = CYCLE_S) -> None:
    """Wait for `done`; CycleFailed at a failure marker, a reset or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        out = board.console_output()
        for marker in FAIL_MARKERS:
            if marker in out:
                raise CycleFailed(f"{stage}: {marker.decode()}")
        if board.resets:
            raise CycleFailed(f"{stage}: the board reset")
        if done():
            return
        if time.monotonic() >= deadline:
            raise CycleFailed(f"{stage}: not within {timeout:.0f}s")
        time.sleep(0.05)


def _seen(board: VirtualBoard, text: str) -> Callable[[], bool]:
    needle = text.encode()
    return lambda: needle in board.console_output()


def post_cycle(site: FirmwareSite, board: VirtualBoard) -> None:
    # two clicks PRESS_GAP_S apart (a person pressing again at once), each delivered
    wait_stage(board, _seen(board, "alarm_post: connected"), "connect")
    first = time.monotonic()
    board.click()
    wait_stage(board, _seen(board, "event 1/2 type 1 saved"), "press 1 saved")
    time.sleep(max(0.0, first + PRESS_GAP_S - time.monotonic()))
    board.click()
    for seq in (2, 3):
        wait_stage(board, _seen(board, f"event 1/{seq} delivered"), f"press {seq - 1} delivered")


def sensor_cycle(site: FirmwareSite, board: VirtualBoard) -> None:
    wait_stage(board, _seen(board, "sensor: connected"), "connect")
    board.set_value("smoke", SMOKE)
    wait_stage(board, _seen(board, "event 1/2 delivered"), "smoke delivered")


def band_cycle(site: FirmwareSite, board: VirtualBoard) -> None:
    assert site.air is not None
    wait_stage(board, _seen(board, f"wristband: {board.name} up"), "boot")
    since = len(site.air.adverts())
    board.hold(2300)
    wait_stage(board, lambda: site.sos_adverts(since) >= SOS_ADVERTS, "SOS adverts on air")


CYCLES: dict[str, Callable[[FirmwareSite, VirtualBoard], None]] = {
    "alarm_post": post_cycle,
    "sensor": sensor_cycle,
    "wristband": band_cycle,
}


def min_heap(
    site: FirmwareSite,
    kind: str,
    lo_kb: int = 8,
    hi_kb: int = 256,
    files: Mapping[str, str | bytes | Path] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[int, list[Trial]]:
    """The smallest heap (KB, 1 KB steps) that completes the cycle, by bisection; and the trials."""
    trials = [site.trial(kind, hi_kb, files)]
    if not trials[0].ok:
        raise RuntimeError(f"{kind}: the cycle fails even with {hi_kb} KB: {trials[0].reason}")
    while hi_kb - lo_kb > 1:
        mid = (lo_kb + hi_kb) // 2
        t = site.trial(kind, mid, files)
        trials.append(t)
        if log is not None:
            log(f"{kind}: {mid} KB {'ok' if t.ok else 'fails (' + t.reason + ')'} in {t.seconds:.1f}s")
        if t.ok:
            hi_kb = mid
        else:
            lo_kb = mid
    return hi_kb, trials


# ------------------------------------------------------------------------ wakeups and CPU


@dataclass(frozen=True, slots=True)
class ProcSample:
    t: float  # monotonic seconds
    cpu_s: float  # CPU time of the process (user + system)
    switches: int  # voluntary context switches: the sleeps that ended


def proc_sample(pid: int) -> ProcSample:
    """The interpreter's CPU time and sleeps so far, from /proc (Linux)."""
    t = time.monotonic()
    cpu_s: float
    try:
        cpu_s = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            switches = int(line.split()[1])
    return ProcSample(t, cpu_s, switches)


@dataclass(frozen=True, slots=True)
class Load:
    seconds: float
    wakeups_per_s: float
    cpu_share: float  # CPU seconds per second of the one interpreter
    cpu_us_per_wakeup: float
    adverts_per_s: float | None = None


def measure(
    pid: int, seconds: float, during: Callable[[float], None], adverts: Callable[[], int] | None = None
) -> Load:
    """Sample the process around `during(deadline)`, which drives the board until the deadline."""
    a0 = adverts() if adverts is not None else 0
    s0 = proc_sample(pid)
    during(s0.t + seconds)
    s1 = proc_sample(pid)
    dt = s1.t - s0.t
    wakes = s1.switches - s0.switches
    cpu = s1.cpu_s - s0.cpu_s
    return Load(
        round(dt, 2),
        round(wakes / dt, 2),
        round(cpu / dt, 5),
        round(cpu / max(1, wakes) * 1e6, 1),
        round((adverts() - a0) / dt, 2) if adverts is not None else None,
    )


def idle(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
