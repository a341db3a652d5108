"""Wristband adverts from BLE scanners: bleak -> resolver -> alerts -> the buffer.

    BleakScanner (passive)  --callback--> queue --> BandResolver.resolve()  (docs/protocol.md §10.4)
      one per [[ble]] entry                           | rejected: BleCounters.rejected[reason]
                                                      v
                                     sink.on_sighting(scanner, rssi, t_ms, sighting) -> alerts
                                                      v
                      Pipeline.band_events(alerts as events, resolver.take_rows()): ONE transaction

The advert counters an advert moved (the replay state, table band_replay) are committed in
the same transaction as the alerts it raised, so after a crash either both exist or neither
does, and nothing leaves the gateway before that commit (invariant 4). Adverts that raise no
alert have their counters committed the same way, with no events.

The backend of every scanner is chosen in one place, `scanner_backend()`, and bleak is
imported only there and only when a scanner is configured: "bluez" is bleak's BlueZ backend
in passive mode (an advertisement monitor with one or-pattern, the company id at the start
of the manufacturer data; BlueZ >= 5.55 with experimental features, docs/deploy-raspberry-pi.md),
"sim" is agent/gateway/wristbands/sim_scanner.py on the virtual air.

Scanner watchdog: a scanner that has heard no advert at all (ours or anyone's) for its
`watchdog_s` is restarted (stop, start) and a P1 SCANNER_BLIND gateway event goes upstream with
the time it has been blind; while it stays blind this repeats with a doubling interval (at
most every 64 watchdog periods). The sink hears `scanner_down()` at the first restart and
`scanner_up()` once the scanner hears again.

The sink is the alert engine (agent/gateway/wristbands/alerts.py); until one is configured,
`SosFallForwarder` raises one SOS or FALL alert per (band, event id) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.gateway.config import BleScannerConfig, WristbandConfig
from agent.gateway.stats import BleCounters
from agent.gateway.wristbands.advert import (
    BATTERY_UNKNOWN,
    CHARGING,
    FALL,
    LOW_BATTERY,
    SOS,
    STRAP_OPEN,
    WORN,
    AdvertError,
    band_root,
    from_manufacturer_data,
)
from agent.gateway.wristbands.resolver import BandKey, BandResolver, Sighting
from agent.shared.log import Throttle
from agent.shared.protocol import EventType
from agent.shared.registry import Registry

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

log = logging.getLogger(__name__)

QUEUE_MAX = 4096  # adverts waiting for the resolver; more are dropped and counted (overflow)
DRAIN_MAX = 256  # adverts resolved per transaction at most
RESTART_BACKOFF_MAX = 64  # watchdog periods between SCANNER_BLIND events of one episode, at most
START_RETRY_S = 2.0


class GatewayEvents(Protocol):
    """Where the BLE source's events go (agent/gateway/pipeline.py Pipeline)."""

    def band_events(
        self, events: list[tuple[str, int, dict[int, Any]]], band_rows: list[tuple[str, int, int]]
    ) -> None: ...
    def gateway_event(self, event_type: int, data: dict[int, Any]) -> None: ...


class BandAlert(Protocol):
    """What the alert engine returns (agent/gateway/wristbands/alerts.py Alert has these attributes)."""

    @property
    def type(self) -> int: ...
    @property
    def band(self) -> str: ...
    @property
    def resident(self) -> str: ...
    @property
    def zone(self) -> str | None: ...
    @property
    def t_ms(self) -> int: ...
    @property
    def context(self) -> Mapping[str, Any]: ...


class SightingSink(Protocol):
    """The alert engine as the BLE source drives it; every call returns the alerts it raised."""

    def on_sighting(self, scanner: str, rssi: int, t_ms: int, s: Sighting) -> Sequence[BandAlert]: ...
    def scanner_down(self, scanner: str, t_ms: int) -> Sequence[BandAlert]: ...
    def scanner_up(self, scanner: str, t_ms: int) -> Sequence[BandAlert]: ...
    def tick(self, now_ms: int) -> Sequence[BandAlert]: ...
    def remember(self, raised: Iterable[tuple[str, int, int]]) -> None:
        """(band, type, band event id) of SOS/FALL alerts raised before a restart: not again."""


@dataclass(frozen=True, slots=True)
class SimpleAlert:
    """A BandAlert for SosFallForwarder."""

    type: int
    band: str
    resident: str
    zone: str | None
    t_ms: int
    context: Mapping[str, Any] = field(default_factory=dict)


class SosFallForwarder:
    """The stand-in sink: one SOS or FALL alert per (band, event id), as soon as it is heard."""

    def __init__(self, remember: int = 4096) -> None:
        self._seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._remember = remember

    def remember(self, raised: Iterable[tuple[str, int, int]]) -> None:
        for key in raised:
            self._seen[key] = None

    def on_sighting(self, scanner: str, rssi: int, t_ms: int, s: Sighting) -> list[SimpleAlert]:
        st = s.status
        out: list[SimpleAlert] = []
        for flag, kind in ((SOS, EventType.SOS), (FALL, EventType.FALL)):
            if not st.flags & flag:
                continue
            key = (s.band, kind, st.event_id)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            ctx = {
                "scanner": scanner,
                "rssi": rssi,
                "event_id": st.event_id,
                "event_age_s": st.event_age,
                "battery": st.battery,
                "band_clock": s.counter,
                "text": f"{'SOS' if kind == EventType.SOS else 'FALL'} from band {s.band}, heard by {scanner}",
            }
            out.append(SimpleAlert(kind, s.band, s.band, None, t_ms, ctx))
        return out

    def scanner_down(self, scanner: str, t_ms: int) -> list[SimpleAlert]:
        return []

    def scanner_up(self, scanner: str, t_ms: int) -> list[SimpleAlert]:
        return []

    def tick(self, now_ms: int) -> list[SimpleAlert]:
        return []


def alert_event(a: BandAlert) -> tuple[str, int, dict[int, Any]]:
    """(band, type, data) of an alert: data {1: resident, 2: zone (when known), 3: context}."""
    data: dict[int, Any] = {1: a.resident, 3: dict(a.context)}
    if a.zone is not None:
        data[2] = a.zone
    return a.band, int(a.type), data


def band_keys(registry: Registry, cfg: WristbandConfig) -> list[BandKey]:
    """The registry's wristbands as resolver keys (root derived from the device key, epoch 0)."""
    return [BandKey(d.id, band_root(d.key), 0, cfg.k) for d in registry if d.kind == "wristband"]


def scanner_backend(cfg: BleScannerConfig, company: int) -> tuple[type[BaseBleakScanner] | None, dict[str, Any]]:
    """(bleak backend class or None for the platform's, BleakScanner keyword arguments)."""
    # the one place that imports a backend, and only for a configured scanner
    if cfg.backend == "sim":
        from agent.gateway.wristbands.sim_scanner import SimAirScanner  # noqa: PLC0415 - lazily, see above

        return SimAirScanner, {"air": cfg.air, "name": cfg.name, "position": cfg.position}
    from bleak.args.bluez import OrPattern  # noqa: PLC0415
    from bleak.assigned_numbers import AdvertisementDataType  # noqa: PLC0415

    # passive scanning needs an advertisement monitor pattern: our company id, little-endian,
    # at the start of the manufacturer data
    pattern = OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, company.to_bytes(2, "little"))
    bluez: dict[str, Any] = {"or_patterns": [pattern]}
    if cfg.adapter is not None:
        bluez["adapter"] = cfg.adapter
    return None, {"bluez": bluez}


@dataclass(frozen=True, slots=True)
class BandSeen:
    """A band's last accepted advert, as the status page shows it."""

    band: str
    t_ms: int  # gateway time it was heard
    scanner: str
    rssi: int  # dBm, at that scanner
    battery: int | None  # %, None when the band does not know
    worn: bool
    strap_open: bool
    low_battery: bool
    charging: bool


@dataclass(frozen=True, slots=True)
class ScannerState:
    """A [[ble]] scanner, as the status page shows it."""

    name: str
    backend: str
    running: bool
    silent_s: float  # since it last heard any advert (or started)
    blind: bool  # in a blind episode: restarted by the watchdog, SCANNER_BLIND sent
    restarts: int  # in the current blind episode


class _Scanner:
    __slots__ = ("blind_since", "cfg", "heard", "next_blind", "restart", "restarts", "running")

    def __init__(self, cfg: BleScannerConfig) -> None:
        self.cfg = cfg
        self.heard = time.monotonic()  # last advert of any kind (or the start)
        self.restart = asyncio.Event()
        self.running = False
        self.blind_since: float | None = None  # the last advert before a blind episode
        self.restarts = 0
        self.next_blind = 0.0


class BleSources:
    """Every [[ble]] scanner, the resolver, the sink and the watchdog; see the module docstring."""

    def __init__(
        self,
        scanners: Sequence[BleScannerConfig],
        wristbands: WristbandConfig,
        registry: Registry,
        *,
        pipeline: GatewayEvents,
        band_rows: Sequence[tuple[str, int, int]] = (),
        sink: SightingSink | None = None,
        raised: Sequence[tuple[str, int, int]] = (),
    ) -> None:
        """
        Args:
            pipeline: where alerts and SCANNER_BLIND events go.
            band_rows: the wristbands' advert counters as the buffer holds them.
            sink: the alert engine; None: SosFallForwarder.
            raised: SOS/FALL alerts already raised before a restart (not raised again).
        """
        self.cfg = wristbands
        self.registry = registry
        self.pipeline = pipeline
        self.counters = BleCounters()
        self.resolver = BandResolver(band_keys(registry, wristbands), wristbands.company, wristbands.skew_s)
        self.resolver.load(band_rows)
        self.sink: SightingSink = sink if sink is not None else SosFallForwarder()
        self.sink.remember(raised)
        self.scanners = {c.name: _Scanner(c) for c in scanners}
        self._queue: asyncio.Queue[tuple[str, int, int, int, bytes]] = asyncio.Queue(QUEUE_MAX)
        self._throttle = Throttle()
        # band -> (gateway ms, scanner, rssi, battery, flags) of its last accepted advert
        self._seen: dict[str, tuple[int, str, int, int, int]] = {}

    def bands_seen(self) -> dict[str, BandSeen]:
        """Each band's last accepted advert (for the status page; bands never heard are absent)."""
        out = {}
        for band, (t_ms, scanner, rssi, battery, flags) in list(self._seen.items()):
            out[band] = BandSeen(
                band,
                t_ms,
                scanner,
                rssi,
                None if battery == BATTERY_UNKNOWN else battery,
                bool(flags & WORN),
                bool(flags & STRAP_OPEN),
                bool(flags & LOW_BATTERY),
                bool(flags & CHARGING),
            )
        return out

    def scanner_states(self) -> list[ScannerState]:
        """Every configured scanner's state (for the status page)."""
        now = time.monotonic()
        return [
            ScannerState(n, s.cfg.backend, s.running, now - s.heard, s.blind_since is not None, s.restarts)
            for n, s in self.scanners.items()
        ]

    def blind_scanners(self) -> dict[str, float]:
        """Scanners in a blind episode: name -> seconds since they last heard an advert."""
        now = time.monotonic()
        return {n: now - s.heard for n, s in self.scanners.items() if s.blind_since is not None}

    async def run(self) -> None:
        if not self.scanners:
            await asyncio.Event().wait()  # nothing configured: stay out of the way
            return
        tasks = [asyncio.create_task(self._scan(s)) for s in self.scanners.values()]
        tasks.append(asyncio.create_task(self._consume()))
        tasks.append(asyncio.create_task(self._tick()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- scanners ------------------------------------------------------------------------

    async def _scan(self, sc: _Scanner) -> None:
        from bleak import BleakScanner  # noqa: PLC0415 - only with a configured scanner
        from bleak.exc import BleakError  # noqa: PLC0415

        cfg = sc.cfg
        backend, kwargs = scanner_backend(cfg, self.cfg.company)

        def heard(device: BLEDevice, adv: AdvertisementData) -> None:
            # bleak's callback: queue only; the resolver runs in _consume
            sc.heard = time.monotonic()
            t_ms = int(time.time() * 1000)
            for company, data in adv.manufacturer_data.items():
                try:
                    self._queue.put_nowait((cfg.name, adv.rssi, t_ms, company, data))
                except asyncio.QueueFull:
                    self.counters.rejected["overflow"] += 1

        while True:
            sc.restart.clear()
            scanner = BleakScanner(heard, scanning_mode="passive", backend=backend, **kwargs)
            try:
                await scanner.start()
            except (BleakError, OSError, ValueError) as exc:
                log.error("ble_scanner_failed name=%s backend=%s reason=%r", cfg.name, cfg.backend, str(exc))
                await asyncio.sleep(START_RETRY_S)
                continue
            sc.running = True
            log.info("ble_scanner_up name=%s backend=%s", cfg.name, cfg.backend)
            try:
                await sc.restart.wait()
            finally:
                sc.running = False
                with contextlib.suppress(BleakError, OSError):
                    await scanner.stop()
            log.info("ble_scanner_restart name=%s", cfg.name)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            t_ms = int(time.time() * 1000)
            alerts: list[BandAlert] = list(self.sink.tick(t_ms))
            for sc in self.scanners.values():
                alerts.extend(self._watchdog(sc, now, t_ms))
            if alerts:
                self.pipeline.band_events([alert_event(a) for a in alerts], [])

    def _watchdog(self, sc: _Scanner, now: float, t_ms: int) -> Sequence[BandAlert]:
        cfg = sc.cfg
        silent = now - sc.heard
        if sc.blind_since is not None and silent < cfg.watchdog_s:
            blind_s = sc.heard - sc.blind_since
            log.warning("ble_scanner_back name=%s blind_s=%.0f restarts=%d", cfg.name, blind_s, sc.restarts)
            sc.blind_since = None
            sc.restarts = 0
            return self.sink.scanner_up(cfg.name, t_ms)
        if silent < cfg.watchdog_s or now < sc.next_blind:
            return ()
        out: Sequence[BandAlert] = ()
        if sc.blind_since is None:
            sc.blind_since = sc.heard
            out = self.sink.scanner_down(cfg.name, t_ms)
        sc.restarts += 1
        sc.next_blind = now + cfg.watchdog_s * min(1 << (sc.restarts - 1), RESTART_BACKOFF_MAX)
        blind_ms = int(silent * 1000)
        self.counters.scanner_restarts += 1
        log.warning("ble_scanner_blind name=%s blind_s=%.0f restarts=%d", cfg.name, silent, sc.restarts)
        # device = the gateway: data {1: scanner, 2: blind for (ms), 3: restarts in this episode}
        self.pipeline.gateway_event(EventType.SCANNER_BLIND, {1: cfg.name, 2: blind_ms, 3: sc.restarts})
        sc.restart.set()
        return out

    # --- adverts -------------------------------------------------------------------------

    async def _consume(self) -> None:
        q = self._queue
        while True:
            item = await q.get()
            events: list[tuple[str, int, dict[int, Any]]] = []
            self._advert(item, events)
            for _ in range(DRAIN_MAX - 1):
                try:
                    item = q.get_nowait()
                except asyncio.QueueEmpty:
                    break
                self._advert(item, events)
            rows = self.resolver.take_rows()
            if events or rows:
                self.pipeline.band_events(events, rows)

    def _advert(self, item: tuple[str, int, int, int, bytes], events: list[tuple[str, int, dict[int, Any]]]) -> None:
        scanner, rssi, t_ms, company, data = item
        if company != self.cfg.company:
            self.counters.rejected["other_company"] += 1  # foreign devices: counted, not logged
            return
        try:
            s = self.resolver.resolve(from_manufacturer_data(company, data), t_ms)
        except AdvertError as exc:
            self._reject(exc.reason, scanner, exc.detail)
            return
        if self.registry.get(s.band) is None:
            self._reject("revoked", scanner, f"band {s.band} was revoked")
            return
        if s.new:
            self.counters.accepted += 1
        else:
            self.counters.repeats += 1
        self._seen[s.band] = (t_ms, scanner, rssi, s.status.battery, s.status.flags)
        for a in self.sink.on_sighting(scanner, rssi, t_ms, s):
            events.append(alert_event(a))

    def _reject(self, reason: str, scanner: str, detail: str) -> None:
        self.counters.rejected[reason] += 1
        suppressed = self._throttle.allow((reason, scanner))
        if suppressed is not None:
            log.warning(
                "advert_rejected scanner=%s reason=%s detail=%r suppressed_since_last=%d",
                scanner,
                reason,
                detail[:200],
                suppressed,
            )
