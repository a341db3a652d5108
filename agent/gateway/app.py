"""Builds and runs the gateway: each part gets what it hands things to when it is built.

    sources (local broker, serial ports, BLE scanners)
      -> Pipeline: verify, replay check                                agent/gateway/pipeline.py
      -> CommitInbox -> Committer thread: plan, seal, one fsync         agent/gateway/committer.py
      -> Pipeline.on_commit: source acks, receipts 1/4, batches out, watches
         (DoorFeed: venue sensors' door contacts -> the BLE source's alert engine)
      -> Uplink: publish, PUBACK -> committer deletes, receipts 2       agent/gateway/uplink.py
    receipts go back through the ReceiptRouter, the way each device last spoke (agent/gateway/receipts.py);
    central's commands come in on the uplink (agent/gateway/command_handler.py).
    Liveness: each accepted frame and the devices' status topics; its events through the pipeline
    (agent/gateway/liveness.py). Fallback: the AlarmWatch hears the committed alerts and the
    PUBACKs; the Fallback tells people itself while central is unreachable (agent/gateway/fallback.py).

The parts are built in the order their collaborators exist: what a part hands things to is
built before it. The one loop in the data path (the committer's results go back to the
pipeline that feeds it) is cut by the CommitInbox: the pipeline, the uplink and the command
handler talk to the committer thread through it, and the committer, built last, gets the
pipeline's `on_commit` as its result callback. The liveness tracker and the alarm watch are
state the pipeline writes into, so they are built before it; what acts on them (the liveness
job, the Fallback) is built after it, with the pipeline's gateway-event path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.gateway.buffer import Store
from agent.gateway.command_handler import CommandHandler, restore
from agent.gateway.committer import CommitInbox, Committer, recovered_state
from agent.gateway.config import AgentConfig, StatusPageConfig, listen_error
from agent.gateway.datadir import DataDirLock
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.liveness import CHECK_S, Liveness
from agent.gateway.metrics import Metrics
from agent.gateway.pipeline import Pipeline
from agent.gateway.planner import Disk
from agent.gateway.receipts import ReceiptLedger, ReceiptRouter
from agent.gateway.recent import RecentEvents
from agent.gateway.reserve import SpaceReserve, default_reserve, filesystem
from agent.gateway.signer import SealedBatch, Signer, load_or_create_key
from agent.gateway.sources.mqtt import LocalBroker
from agent.gateway.sources.serial import SerialSources
from agent.gateway.stats import DiskReport, FallbackCounters, LivenessCounters, Snapshot, Stats
from agent.gateway.status import view
from agent.gateway.uplink import Uplink
from agent.gateway.wristbands.alerts import AlertEngine
from agent.gateway.wristbands.doors import DoorFeed
from agent.gateway.wristbands.source import BleSources
from agent.gateway.wristbands.venue import load as load_venue
from agent.shared.errors import ConfigError
from agent.shared.log import Fields
from agent.shared.protocol import EventType
from agent.shared.registry import Registry, load_registry

if TYPE_CHECKING:
    from agent.gateway.fallback import AlarmWatch, Fallback
    from agent.gateway.status.page import StatusPage

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class _BandState:
    """What the BLE source starts from: the alert engine (with a venue file) and the feed of the
    venue sensors' door contacts for it (committed sensor events go to the feed, the BLE source
    takes them from there), and what the buffer kept of the bands (advert counters, SOS/FALL
    raised, EXIT/MISSING open)."""

    engine: AlertEngine | None
    doors: DoorFeed | None
    rows: list[tuple[str, int, int]]
    alerts: list[tuple[str, int, int]]
    open: list[tuple[str, int, int, str | None]]


def _band_state(cfg: AgentConfig, store: Store) -> _BandState:
    engine = AlertEngine(load_venue(cfg.wristbands.alerts)) if cfg.wristbands.alerts is not None else None
    doors = DoorFeed() if engine is not None else None
    return _BandState(engine, doors, store.load_band_replay(), store.load_band_alerts(), store.load_band_open())


async def run_gateway(cfg: AgentConfig) -> None:
    """Run the gateway until SIGTERM/SIGINT; the data directory is this process's meanwhile."""
    with DataDirLock(cfg.data_dir):
        await _run_gateway(cfg)


def open_store(cfg: AgentConfig) -> tuple[Store, Disk]:
    """The buffer, with the alarms' disk reserve allocated (as far as the disk allows), and
    the disk as the committer starts with it: full when the reserve could not be made whole."""
    target = cfg.buffer.disk_reserve_bytes
    reserve = SpaceReserve(cfg.data_dir / "buffer.reserve", default_reserve(cfg.data_dir) if target is None else target)
    store = Store(cfg.buffer_path, reserve=reserve)
    reserve.fill()
    if not reserve.deficit:
        return store, Disk()
    log.error(
        "disk_full when=start path=%s reserve_bytes=%d target=%d free_bytes=%d",
        reserve.path,
        reserve.size,
        reserve.target,
        filesystem(cfg.data_dir).free,
    )
    return store, Disk(full=True)


async def _run_gateway(cfg: AgentConfig) -> None:
    registry = load_registry(cfg.devices_file)
    if registry.get(cfg.gateway_id) is not None:
        raise ConfigError(
            f"{cfg.devices_file}: device id {cfg.gateway_id!r} is the gateway's own id; the gateway's events use it"
        )
    # persisted revocations and runtime settings from central's commands apply from the start
    restored = restore(cfg, registry)
    cfg = restored.cfg
    key = load_or_create_key(cfg.key_file, cfg.gateway_id)

    # what a restart finds in the buffer
    store, disk = open_store(cfg)
    rec = store.recover()
    if rec.quarantined is not None:
        log.error(
            "buffer_replaced quarantined=%s salvaged_replay_devices=%d new_epoch=%d",
            rec.quarantined,
            rec.salvaged_replay,
            rec.epoch,
        )
    # wristband counters and alerts are read before the committer thread owns the store
    bands = _band_state(cfg, store)
    # the posts and sensors followed; the alerts the fallback follows again (same reason)
    liveness = Liveness(cfg.liveness, registry, rows=store.load_liveness()) if cfg.liveness.enabled else None
    watch = _alarm_watch(cfg, store)
    metrics = Metrics() if cfg.metrics is not None else None

    recovered = recovered_state(rec, disk)
    # the way to the committer thread: events, PUBACKs, link state, batch settings
    inbox = CommitInbox(cfg.batch)
    # the way back to devices: receipts go where each device was last heard
    receipts = ReceiptRouter(cfg.gateway_id, registry)
    ledger = ReceiptLedger(rec.ledger, receipts, registry)
    # the last alarms and alerts and how far each got: the status page, one log line per alarm
    recent = RecentEvents(cfg.gateway_id, registry)
    commands = CommandHandler(
        restored, registry, send_receipt=receipts.send, apply_batch=inbox.set_batch, on_ack=recent.acknowledged
    )

    # sealed batches out to central; a PUBACK deletes the batch and sends receipts 2
    uplink = Uplink(
        cfg,
        unacked=rec.batches,
        committer=inbox,
        # receipts 2 first, then the fallback's watch and the recent events
        on_delivered=_each(ledger.delivered, watch.delivered if watch is not None else None, recent.delivered),
        commands=commands,
        observe_delivery=metrics.delivery.observe if metrics is not None else None,
    )
    # frames in: verify, replay check, into the inbox; commit results out: acks, receipts, batches
    pipeline = Pipeline(
        cfg.gateway_id,
        FrameVerifier(registry, cfg.max_frame),
        replay=rec.replay,
        ledger=ledger,
        receipts=receipts,
        commits=inbox,
        publish=uplink.publish,
        epoch=rec.epoch,
        buffer=recovered,
        observe_commit=metrics.commit.observe if metrics is not None else None,
        recent=recent,
        on_frame=liveness.heard if liveness is not None else None,
        watches=[w for w in (watch, bands.doors) if w is not None],
    )
    # the one writer of the buffer: group commit, sealing (signing), one fsync per round
    committer = Committer(
        store,
        Signer(key, cfg.gateway_id, rec.epoch, rec.seq, rec.prev),
        inbox,
        state=recovered,
        loop=asyncio.get_running_loop(),
        on_result=pipeline.on_commit,
        limits=cfg.buffer,
        commit_wait_ms=cfg.commit_wait_ms,
    )
    # the sources: frames to the pipeline, each a route for its devices' receipts
    local = LocalBroker(
        cfg.local,
        ingest=pipeline.ingest,
        receipts=receipts,
        on_status=liveness.status if liveness is not None else None,
    )
    serial = SerialSources(cfg.serial, ingest=pipeline.ingest, receipts=receipts, max_frame=cfg.max_frame)
    ble = BleSources(
        cfg.ble,
        cfg.wristbands,
        registry,
        pipeline=pipeline,
        band_rows=bands.rows,
        sink=bands.engine,
        raised=bands.alerts,
        open_alerts=bands.open,
        doors=bands.doors,
    )
    # people told by the gateway itself while central is unreachable
    fallback_part = _fallback(cfg, watch, registry=registry, uplink=uplink, pipeline=pipeline, receipts=receipts)

    # what the log, the heartbeat and the metrics read
    stats = Stats(
        pipeline=pipeline.counters,
        uplink=uplink.counters,
        receipts=receipts.counters,
        local=local.counters,
        serial=serial.counters,
        ble=ble.counters,
        commands=commands.counters,
        liveness=liveness.counters if liveness is not None else LivenessCounters(),
        fallback=fallback_part.counters if fallback_part is not None else FallbackCounters(),
    )
    _serve_metrics(metrics, cfg, stats, store)
    log.info(
        "agent_started gateway=%s venue=%s devices=%d epoch=%d batch_seq=%d unacked_batches=%d backlog=%s",
        cfg.gateway_id,
        cfg.venue,
        len(registry),
        rec.epoch,
        rec.seq,
        len(rec.batches),
        rec.backlog,
    )
    jobs = [
        local.run(),
        serial.run(),
        ble.run(),
        uplink.run(),
        commands.run(),
        _report(stats),
        _heartbeat(pipeline, stats, cfg.heartbeat_s),
    ]
    if liveness is not None:
        jobs.append(_liveness(liveness, pipeline))
    if fallback_part is not None:
        jobs.append(fallback_part.run())
    if cfg.status_page is not None:
        jobs.append(_status_page(cfg, cfg.status_page, stats, recent, registry, ble, liveness).run())
    committer.start()
    try:
        await _run(*jobs, stopping=uplink.announce_offline)
    finally:
        committer.stop()
        store.close()
        log.info("agent_stopped %s", stats_line(stats.snapshot()))


def _alarm_watch(cfg: AgentConfig, store: Store) -> AlarmWatch | None:
    """With [notify]: the watch over committed alerts, with those a restart finds undelivered."""
    if cfg.notify is None:
        return None
    # the notifier (Apprise, its channels) loads only for a gateway with [notify]
    from agent.gateway import fallback  # noqa: PLC0415

    watch = fallback.AlarmWatch(cfg.gateway_id, cfg.notify.fallback_after_s)
    watch.committed(store.pending_alerts(watch.types))
    return watch


def _fallback(
    cfg: AgentConfig,
    watch: AlarmWatch | None,
    *,
    registry: Registry,
    uplink: Uplink,
    pipeline: Pipeline,
    receipts: ReceiptRouter,
) -> Fallback | None:
    """With [notify]: the fallback notifier, its events through the pipeline's gateway-event path."""
    if cfg.notify is None or watch is None:
        return None
    from agent.gateway import fallback  # noqa: PLC0415

    return fallback.build(
        cfg.notify,
        venue=cfg.venue,
        gateway_id=cfg.gateway_id,
        data_dir=cfg.data_dir,
        registry=registry,
        watch=watch,
        uplink=uplink,
        raise_event=pipeline.gateway_event,
        send_receipt=receipts.send,
    )


async def _run(*jobs: Coroutine[Any, Any, None], stopping: Callable[[], Awaitable[None]]) -> None:
    """Run the jobs until SIGTERM/SIGINT or until one fails; `stopping()` before they are cancelled."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(t) for t in jobs]
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("agent_stopping reason=signal")
    finally:
        await stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def heartbeat_data(st: Snapshot, uptime_s: int) -> dict[int, Any]:
    """GATEWAY_HEARTBEAT data (docs/protocol.md §4.4)."""
    return {
        1: uptime_s,
        2: list(st.backlog),
        3: list(st.backlog_bytes),
        4: list(st.evicted),
        5: st.oldest_age_ms,
        6: dict(st.rejected),
        7: 1 if st.local_connected else 0,
        8: st.accepted,
        9: dict(st.commands_rejected),
        10: disk_data(st.disk),
    }


def disk_data(disk: DiskReport) -> dict[int, int]:
    """GATEWAY_HEARTBEAT key 10, the data disk (docs/protocol.md §4.4, §4.6)."""
    data = {1: 1 if disk.full else 0, 2: disk.free, 3: disk.reserve, 4: disk.reserve_target}
    if disk.bound is not None:
        data[5] = disk.bound
    data[6] = disk.episodes
    data[7] = disk.full_s
    return data


async def _heartbeat(pipeline: Pipeline, stats: Stats, interval_s: int) -> None:
    """Every interval_s, the first right away (central learns that the gateway (re)started),
    and at once when the data disk becomes full or stops being full (docs/protocol.md §4.6)."""
    while True:
        pipeline.disk_changed.clear()
        pipeline.gateway_event(EventType.GATEWAY_HEARTBEAT, heartbeat_data(stats.snapshot(), pipeline.uptime_s()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pipeline.disk_changed.wait(), interval_s)


async def _liveness(liveness: Liveness, pipeline: Pipeline) -> None:
    """DEVICE_OFFLINE / DEVICE_ONLINE as the tracker finds them, each with its liveness row."""
    while True:
        await asyncio.sleep(CHECK_S)
        for event_type, data, rows in liveness.check():
            pipeline.gateway_event(event_type, data, rows)
        kept = liveness.take_kept()
        if kept:
            pipeline.keep_liveness(kept)


def _each(*calls: Callable[[SealedBatch], None] | None) -> Callable[[SealedBatch], None]:
    """One callback that calls each of `calls` (None: left out) in order."""
    chosen = [c for c in calls if c is not None]

    def each(batch: SealedBatch) -> None:
        for call in chosen:
            call(batch)

    return each


def _serve_metrics(metrics: Metrics | None, cfg: AgentConfig, stats: Stats, store: Store) -> None:
    """The Prometheus endpoint; an address it cannot listen on is one line (ConfigError)."""
    if metrics is not None and cfg.metrics is not None:
        try:
            metrics.serve(*cfg.metrics, stats.snapshot)
        except OSError as exc:
            store.close()
            raise ConfigError(f"{cfg.path}: metrics.listen: {listen_error(*cfg.metrics, exc)}") from None
        log.info("metrics_listening host=%s port=%d", *cfg.metrics)


def _status_page(
    cfg: AgentConfig,
    page: StatusPageConfig,
    stats: Stats,
    recent: RecentEvents,
    registry: Registry,
    ble: BleSources,
    liveness: Liveness | None,
) -> StatusPage:
    """The installer's page: it reads the parts' snapshots, never their state. Its web stack
    (aiohttp, about 10 MB of the agent's memory) is imported only when [status_page] is set."""
    from agent.gateway.status.page import StatusPage  # noqa: PLC0415

    return StatusPage(
        page,
        gateway=cfg.gateway_id,
        venue=cfg.venue,
        readers=view.Readers(
            stats=stats.snapshot,
            recent=recent.snapshot,
            devices=lambda: list(registry),
            bands=ble.bands_seen,
            scanners=ble.scanner_states,
            liveness=liveness.snapshot if liveness is not None else None,
        ),
        data_dir=cfg.data_dir,
        buffer_path=cfg.buffer_path,
    )


async def _report(stats: Stats) -> None:
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        log.info("stats %s", stats_line(stats.snapshot()))


def stats_line(snapshot: Snapshot) -> Fields:
    """The key=value fields of the `stats` and `agent_stopped` log lines."""
    return Fields(
        " ".join(f"{k}={v}".replace(" ", "") for k, v in snapshot.log_fields().items()) + f" t={int(time.time())}"
    )
