"""Assembles and runs the gateway: buffer, committer, pipeline, local broker, uplink."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from agent.gateway.buffer import Store
from agent.gateway.command_handler import CommandHandler
from agent.gateway.committer import Committer
from agent.gateway.config import AgentConfig
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.metrics import Metrics
from agent.gateway.pipeline import Pipeline, Stats
from agent.gateway.signer import Signer, load_or_create_key
from agent.gateway.sources.mqtt import LocalBroker
from agent.gateway.sources.serial import SerialSources
from agent.gateway.uplink import Uplink
from agent.gateway.wristbands.alerts import AlertEngine
from agent.gateway.wristbands.source import BleSources
from agent.gateway.wristbands.venue import load as load_venue
from agent.shared.errors import ConfigError
from agent.shared.registry import load_registry

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 60.0


async def run_gateway(cfg: AgentConfig) -> None:
    registry = load_registry(cfg.devices_file)
    if registry.get(cfg.gateway_id) is not None:
        raise ConfigError(
            f"{cfg.devices_file}: device id {cfg.gateway_id!r} is the gateway's own id; the gateway's events use it"
        )
    # persisted revocations and runtime settings from central's commands apply from the start
    commands = CommandHandler.open(cfg, registry)
    cfg = commands.cfg
    key = load_or_create_key(cfg.key_file, cfg.gateway_id)
    store = Store(cfg.buffer_path)
    rec = store.recover()
    if rec.quarantined is not None:
        log.error(
            "buffer_replaced quarantined=%s salvaged_replay_devices=%d new_epoch=%d",
            rec.quarantined,
            rec.salvaged_replay,
            rec.epoch,
        )
    sealer = Signer(key, cfg.gateway_id, rec.epoch, rec.seq, rec.prev)
    stats = Stats()
    if cfg.metrics is not None:
        Metrics(stats).serve(*cfg.metrics)
        log.info("metrics_listening host=%s port=%d", *cfg.metrics)
    stats.backlog = (rec.backlog[0], rec.backlog[1], rec.backlog[2])
    pipeline = Pipeline(cfg.gateway_id, registry, FrameVerifier(registry, cfg.max_frame), rec.replay, rec.ledger, stats)
    loop = asyncio.get_running_loop()
    committer = Committer(
        store,
        sealer,
        cfg.batch,
        cfg.commit_wait_ms,
        inflight=len(rec.batches),
        backlog=rec.backlog,
        backlog_bytes=rec.backlog_bytes,
        loop=loop,
        on_result=pipeline.on_commit,
        limits=cfg.buffer,
        evicted=rec.evicted,
        gw_seq=rec.gw_seq,
        unacked=rec.batches,
        oldest_received=rec.oldest_received,
    )
    pipeline.committer = committer
    commands.attach(pipeline, committer, stats)
    pipeline.epoch, pipeline.gw_seq = rec.epoch, rec.gw_seq
    stats.evicted = (rec.evicted[0], rec.evicted[1], rec.evicted[2])
    uplink = Uplink(cfg, pipeline, stats, rec.batches, commands)
    local = LocalBroker(cfg.local, pipeline, stats)
    serial = SerialSources(cfg.serial, pipeline, stats, cfg.max_frame)  # after local: routes its receipts
    # wristband counters are read before the committer thread owns the store
    sink = AlertEngine(load_venue(cfg.wristbands.alerts)) if cfg.wristbands.alerts is not None else None
    ble = BleSources(
        cfg.ble,
        cfg.wristbands,
        registry,
        pipeline,
        stats,
        store.load_band_replay(),
        sink=sink,
        raised=store.load_band_alerts(),
    )
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
    committer.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    jobs = (
        local.run(),
        serial.run(),
        ble.run(),
        uplink.run(),
        _report(stats),
        _heartbeat(pipeline, cfg.heartbeat_s),
        commands.run(),
    )
    tasks = [asyncio.create_task(t) for t in jobs]
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("agent_stopping reason=signal")
    finally:
        await uplink.announce_offline()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        committer.stop()
        store.close()
        log.info("agent_stopped %s", _fmt(stats.snapshot()))


async def _heartbeat(pipeline: Pipeline, interval_s: int) -> None:
    # the first one right away: central learns that the gateway (re)started
    while True:
        pipeline.heartbeat()
        await asyncio.sleep(interval_s)


async def _report(stats: Stats) -> None:
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        log.info("stats %s", _fmt(stats.snapshot()))


def _fmt(snapshot: dict[str, object]) -> str:
    return " ".join(f"{k}={v}".replace(" ", "") for k, v in snapshot.items()) + f" t={int(time.time())}"
