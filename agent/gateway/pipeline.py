"""The gateway pipeline on the event loop: frames in, receipts out, batches to the uplink.

    source --ingest()--> FrameVerifier --> replay check --> Committer (thread, fsync)
       ^                                                          |
       |  PUBACK to the local broker, receipt 1  <--on_commit()---+--> Uplink (sealed batches)
       |  receipt 2                              <--on_delivered()------/

Every rejected frame is counted by reason and logged (throttled) with the device id and the
reason, never the key; the source's acknowledgement of a rejected frame is released at once
so nothing else waits for it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.gateway.buffer import LEDGER_PER_DEVICE
from agent.gateway.committer import CommitResult, Committer, Submitted
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.replay import ReplayState
from agent.gateway.signer import SealedBatch
from agent.shared.errors import WireError
from agent.shared.frames import Event, receipt
from agent.shared.log import Throttle
from agent.shared.protocol import RECEIPT_DELIVERED, RECEIPT_DROPPED, RECEIPT_STORED, EventType
from agent.shared.registry import Registry

log = logging.getLogger(__name__)

Ack = Callable[[], None]
SendReceipt = Callable[[str, bytes], None]


class Stats:
    """Counters and gauges the agent reports (logs now; metrics and heartbeats read them)."""

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.serial_rejected: Counter[str] = Counter()  # serial link framing, by reason (§9)
        # wristband adverts, by reason (§10.4; agent/gateway/wristbands/source.py)
        self.ble_rejected: Counter[str] = Counter()
        self.commands_accepted: Counter[str] = Counter()  # by op (agent/gateway/command_handler.py)
        self.commands_rejected: Counter[str] = Counter()  # by reason
        self.backlog: tuple[int, int, int] = (0, 0, 0)
        self.backlog_bytes: tuple[int, int, int] = (0, 0, 0)
        self.oldest_ms: int | None = None  # receive time of the oldest event central has not acknowledged
        self.evicted: tuple[int, int, int] = (0, 0, 0)
        self.inflight_batches = 0
        self.uplink_connected = False
        self.local_connected = False
        self.store_error: str | None = None
        # histogram hooks (agent/gateway/metrics.py), seconds; None when metrics are off
        self.observe_commit: Callable[[float], None] | None = None
        self.observe_delivery: Callable[[float], None] | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "accepted": self.counts["accepted"],
            "committed": self.counts["committed"],
            "delivered": self.counts["delivered"],
            "batches_sealed": self.counts["batches_sealed"],
            "batches_acked": self.counts["batches_acked"],
            "receipts_sent": self.counts["receipts_sent"],
            "rejected": dict(self.rejected),
            "serial_rejected": dict(self.serial_rejected),
            "ble_rejected": dict(self.ble_rejected),
            "commands_accepted": dict(self.commands_accepted),
            "commands_rejected": dict(self.commands_rejected),
            "backlog": list(self.backlog),
            "backlog_bytes": list(self.backlog_bytes),
            "oldest_age_ms": self.oldest_age_ms(),
            "evicted": list(self.evicted),
            "inflight_batches": self.inflight_batches,
            "uplink": "up" if self.uplink_connected else "down",
            "local": "up" if self.local_connected else "down",
        }

    def oldest_age_ms(self) -> int:
        """Age of the oldest event not yet acknowledged by central; 0 when there is none."""
        return max(0, int(time.time() * 1000) - self.oldest_ms) if self.oldest_ms is not None else 0


class Pipeline:
    """Verification, replay protection and receipts, between the sources and the committer."""

    def __init__(
        self,
        gateway_id: str,
        registry: Registry,
        verifier: FrameVerifier,
        replay: dict[str, ReplayState],
        ledger: dict[tuple[str, int, int], int],
        stats: Stats,
    ) -> None:
        self.gateway_id = gateway_id
        self.registry = registry
        self.verifier = verifier
        self.replay = replay
        self.ledger = ledger
        self.stats = stats
        self.committer: Committer | None = None
        self.send_receipt: SendReceipt | None = None
        self.publish_batch: Callable[[SealedBatch], None] | None = None
        self._throttle = Throttle()
        # device id -> source of its last frame that verified: receipts go back that way
        self.last_source: dict[str, str] = {}
        # the gateway's own events: device = gateway id, boot = chain epoch (set at start)
        self.epoch = 0
        self.gw_seq = 0
        self._started = time.monotonic()

    # --- frames in -----------------------------------------------------------------

    def ingest(self, data: bytes, topic_device: str | None, ack: Ack, source: str = "mqtt") -> bool:
        """Check one frame; True when it was accepted (ack runs once it is durable)."""
        now_ms = int(time.time() * 1000)
        try:
            event = self.verifier.verify(data, topic_device, now_ms)
        except WireError as exc:
            self._reject(exc.reason, topic_device, exc.detail, source)
            ack()
            return False
        self.last_source[event.device] = source
        state = self.replay.get(event.device)
        if state is None:
            state = self.replay[event.device] = ReplayState()
        if not state.is_new(event.boot, event.seq):
            self._reject("replay", event.device, f"boot {event.boot} seq {event.seq} already seen", source)
            if event.wants_receipts:
                known = self.ledger.get(event.key)
                if known in (RECEIPT_STORED, RECEIPT_DELIVERED, RECEIPT_DROPPED):
                    self._receipt(event.device, event.boot, event.seq, known)
            ack()
            return False
        state.accept(event.boot, event.seq)
        if event.wants_receipts:
            self.ledger[event.key] = 0  # accepted, not yet durable
        self.stats.counts["accepted"] += 1
        assert self.committer is not None, "pipeline used before the committer was attached"
        self.committer.submit(Submitted(event, state.as_row(), ack))
        return True

    def gateway_event(self, event_type: int, data: dict[int, Any]) -> None:
        """Queue one of the gateway's own events (e.g. its heartbeat) like a device event."""
        assert self.committer is not None, "pipeline used before the committer was attached"
        self.gw_seq += 1
        now_ms = int(time.time() * 1000)
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        event = Event(self.gateway_id, self.epoch, self.gw_seq, event_type, uptime_ms, now_ms, data, b"")
        self.committer.submit(Submitted(event, None, _noop))

    def band_events(self, events: list[tuple[str, int, dict[int, Any]]], band_rows: list[tuple[str, int, int]]) -> None:
        """Queue wristband alerts, (band, type, data) each, with the advert counters that caused
        them (BandResolver.take_rows()), all in one transaction (docs/protocol.md §4.4).

        The gateway raises these for the band: device = band id, boot = chain epoch, seq from the
        gateway's own event counter, no device MAC (the gateway checked the advert's CCM MIC).
        """
        assert self.committer is not None, "pipeline used before the committer was attached"
        now_ms = int(time.time() * 1000)
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        items = []
        for band, event_type, data in events:
            self.gw_seq += 1
            event = Event(band, self.epoch, self.gw_seq, event_type, uptime_ms, now_ms, data, b"")
            items.append(Submitted(event, None, _noop))
        self.stats.counts["band_events"] += len(items)
        self.committer.submit_group(items, band_rows)

    def heartbeat(self) -> None:
        """The gateway heartbeat to central (docs/protocol.md §4.4)."""
        st = self.stats
        self.gateway_event(
            EventType.GATEWAY_HEARTBEAT,
            {
                1: int(time.monotonic() - self._started),
                2: list(st.backlog),
                3: list(st.backlog_bytes),
                4: list(st.evicted),
                5: st.oldest_age_ms(),
                6: dict(st.rejected),
                7: 1 if st.local_connected else 0,
                8: st.counts["accepted"],
                9: dict(st.commands_rejected),
            },
        )

    def _reject(self, reason: str, device: str | None, detail: str, source: str) -> None:
        self.stats.rejected[reason] += 1
        suppressed = self._throttle.allow((reason, device))
        if suppressed is not None:
            log.warning(
                "frame_rejected source=%s device=%s reason=%s detail=%r suppressed_since_last=%d",
                source,
                device,
                reason,
                detail[:200],
                suppressed,
            )

    # --- results from the committer --------------------------------------------------

    def on_commit(self, result: CommitResult) -> None:
        if result.error is not None:
            self.stats.store_error = result.error
            return
        self.stats.store_error = None
        if self.stats.observe_commit is not None and (result.committed or result.sealed):
            self.stats.observe_commit(result.commit_ms / 1000.0)
        for s in result.committed:
            s.token()
            if s.event.wants_receipts:
                if self.ledger.get(s.event.key, 0) < RECEIPT_STORED:
                    self.ledger[s.event.key] = RECEIPT_STORED
                self._receipt(s.event.device, s.event.boot, s.event.seq, RECEIPT_STORED)
        self.stats.counts["committed"] += len(result.committed)
        self.stats.backlog = result.backlog
        self.stats.backlog_bytes = result.backlog_bytes
        self.stats.oldest_ms = result.oldest_ms
        self.stats.evicted = result.evicted
        for key in result.dropped:
            self.ledger[key] = RECEIPT_DROPPED
            self._receipt(key[0], key[1], key[2], RECEIPT_DROPPED)
        for batch in result.sealed:
            self.stats.counts["batches_sealed"] += 1
            if self.publish_batch is not None:
                self.publish_batch(batch)

    def on_delivered(self, batch: SealedBatch) -> None:
        """Central's broker acknowledged `batch` (PUBACK)."""
        assert self.committer is not None, "pipeline used before the committer was attached"
        oldest = self.committer.batch_oldest.get(batch.seq)
        if oldest is not None and self.stats.observe_delivery is not None:
            self.stats.observe_delivery(max(0.0, time.time() - oldest / 1000.0))
        self.committer.ack(batch)
        self.stats.counts["batches_acked"] += 1
        self.stats.counts["delivered"] += batch.events
        for key in batch.flagged:
            self.ledger[key] = RECEIPT_DELIVERED
            self._receipt(key[0], key[1], key[2], RECEIPT_DELIVERED)
        self._prune_ledger()

    def _receipt(self, device_id: str, boot: int, seq: int, kind: int) -> None:
        device = self.registry.get(device_id)
        if device is None or self.send_receipt is None:
            return
        self.send_receipt(device_id, receipt(device.key, self.gateway_id, boot, seq, kind))
        self.stats.counts["receipts_sent"] += 1

    def _prune_ledger(self) -> None:
        # the durable ledger keeps the newest entries per device; the mirror stays bounded too
        if len(self.ledger) > LEDGER_PER_DEVICE * max(len(self.registry), 1) * 2:
            by_device: dict[str, list[tuple[str, int, int]]] = {}
            for key in self.ledger:
                by_device.setdefault(key[0], []).append(key)
            for keys in by_device.values():
                keys.sort()
                for key in keys[:-LEDGER_PER_DEVICE]:
                    if self.ledger[key] in (RECEIPT_DELIVERED, RECEIPT_DROPPED):
                        del self.ledger[key]


def _noop() -> None:
    return None
