"""The gateway pipeline on the event loop: frames in, receipts out, batches to the uplink.

    source --ingest()--> FrameVerifier --> replay check --> CommitInbox --> Committer (thread, fsync)
       ^                                                                        |
       |  the source's ack (PUBACK to the local broker), receipt 1  <--on_commit()--+--> publish (Uplink)

The pipeline is built with what it hands things to (keyword arguments): the committer's inbox
(`commits`), the uplink's `publish` for sealed batches, the receipt router and ledger
(agent/gateway/receipts.py), and, when they are on, the device liveness tracker (each accepted
frame, agent/gateway/liveness.py) and the fallback notifier's watch (the alerts of each commit
round, agent/gateway/fallback.py). The committer is built after it, with `on_commit` as its
result callback; receipt 2 follows central's PUBACK in the uplink (ReceiptLedger.delivered).

Every rejected frame is counted by reason; the log gets at most one line per reason every 10 s
across all device ids (junk under invented ids must not write a line each), naming the last
device and how many were left out, never the key. The source's acknowledgement of a rejected
frame is released at once so nothing else waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.gateway.committer import CommitResult
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.planner import LivenessRow, State, Submitted
from agent.gateway.receipts import ReceiptLedger, ReceiptRouter
from agent.gateway.recent import RecentEvents
from agent.gateway.replay import ReplayState
from agent.gateway.signer import SealedBatch
from agent.gateway.stats import PipelineCounters
from agent.shared.errors import WireError
from agent.shared.frames import Event
from agent.shared.log import Throttle

log = logging.getLogger(__name__)

Ack = Callable[[], None]
# Pipeline.ingest as the sources call it: (frame, device id named by the topic or port or None,
# the source's ack, the source's name).
Ingest = Callable[[bytes, str | None, Ack, str], bool]
# Where sealed batches go (Uplink.publish): the batch and the receive time of its oldest event.
Publish = Callable[[SealedBatch, int], None]
Observe = Callable[[float], None]


class Commits(Protocol):
    """Where accepted events go: the committer's inbox (agent/gateway/committer.py CommitInbox)."""

    def submit(self, item: Submitted) -> None: ...
    def submit_group(
        self, items: list[Submitted], band_rows: list[tuple[str, int, int]], liveness: list[LivenessRow] | None = None
    ) -> None: ...


class CommitWatch(Protocol):
    """Who wants the committed events of some types (agent/gateway/fallback.py AlarmWatch)."""

    types: frozenset[int]

    def committed(self, events: list[Event]) -> None: ...


class Pipeline:
    """Verification, replay protection and receipts, between the sources and the committer."""

    __slots__ = (
        "_heard",
        "_started",
        "_throttle",
        "_watch",
        "_watched",
        "commits",
        "counters",
        "epoch",
        "gateway_id",
        "gw_seq",
        "ledger",
        "observe_commit",
        "on_frame",
        "publish",
        "recent",
        "replay",
        "verifier",
    )

    def __init__(
        self,
        gateway_id: str,
        verifier: FrameVerifier,
        *,
        replay: dict[str, ReplayState],
        ledger: ReceiptLedger,
        receipts: ReceiptRouter,
        commits: Commits,
        publish: Publish,
        epoch: int = 0,
        buffer: State | None = None,
        observe_commit: Observe | None = None,
        recent: RecentEvents | None = None,
        on_frame: Callable[[Event], None] | None = None,
        watch: CommitWatch | None = None,
    ) -> None:
        """
        Args:
            replay: per-device replay state, as recovered from the buffer.
            ledger: receipts earned by recent events (receipt 1 and 4 are sent from here).
            receipts: told where each verified frame came from, so receipts go back that way.
            commits: the committer's inbox.
            publish: where sealed batches go (the uplink).
            epoch: the chain epoch: the gateway's own events (heartbeats, wristband alerts)
                are (gateway or band id, epoch, seq).
            buffer: the buffer as a restart found it (agent/gateway/committer.py recovered_state): the
                counters report its backlog until the first commit round, and the gateway's
                own event numbers continue from its gw_seq.
            observe_commit: a histogram of commit round durations, seconds (agent/gateway/metrics.py).
            recent: told of every alarm and alert (P0, P1) and of each commit round, for the
                status page and the per-alarm log line (agent/gateway/recent.py).
            on_frame: each accepted device frame's event (agent/gateway/liveness.py Liveness.heard).
            watch: told the committed events of its types after each round, before the round's
                batches are published (agent/gateway/fallback.py AlarmWatch).
        """
        self.gateway_id = gateway_id
        self.verifier = verifier
        self.replay = replay
        self.ledger = ledger
        self._heard = receipts.heard
        self.commits = commits
        self.publish = publish
        buffer = buffer if buffer is not None else State()
        self.epoch = epoch
        self.gw_seq = buffer.gw_seq
        self.observe_commit = observe_commit
        self.recent = recent
        self.on_frame = on_frame
        self._watch = watch
        self._watched = watch.types if watch is not None else frozenset()
        self.counters = PipelineCounters(
            backlog=buffer.backlog,
            backlog_bytes=buffer.backlog_bytes,
            backlog_oldest_ms=buffer.oldest_ms,
            evicted=buffer.evicted,
        )
        self._throttle = Throttle()
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
        self._heard(event.device, source)
        state = self.replay.get(event.device)
        if state is None:
            state = self.replay[event.device] = ReplayState()
        if not state.is_new(event.boot, event.seq):
            self._reject("replay", event.device, f"boot {event.boot} seq {event.seq} already seen", source)
            if event.wants_receipts:
                self.ledger.resend(event.key)
            ack()
            return False
        state.accept(event.boot, event.seq)
        if event.wants_receipts:
            self.ledger.accepted(event.key)
        self.counters.accepted += 1
        if event.prio < 2 and self.recent is not None:
            self.recent.accepted(event)
        self.commits.submit(Submitted(event, state.as_row(), ack))
        if self.on_frame is not None:
            self.on_frame(event)
        return True

    def uptime_s(self) -> int:
        return int(time.monotonic() - self._started)

    def gateway_event(self, event_type: int, data: dict[int, Any], liveness: list[LivenessRow] | None = None) -> None:
        """Queue one of the gateway's own events (e.g. its heartbeat) like a device event, with
        the liveness rows that go with it (DEVICE_OFFLINE/ONLINE) in the same transaction."""
        self.gw_seq += 1
        now_ms = int(time.time() * 1000)
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        event = Event(self.gateway_id, self.epoch, self.gw_seq, event_type, uptime_ms, now_ms, data, b"")
        if self.recent is not None:
            self.recent.accepted(event)
        if liveness:
            self.commits.submit_group([Submitted(event, None, _noop)], [], liveness)
        else:
            self.commits.submit(Submitted(event, None, _noop))

    def keep_liveness(self, rows: list[LivenessRow]) -> None:
        """Persist liveness rows that come with no event (an interval learned)."""
        self.commits.submit_group([], [], rows)

    def band_events(self, events: list[tuple[str, int, dict[int, Any]]], band_rows: list[tuple[str, int, int]]) -> None:
        """Queue wristband alerts, (band, type, data) each, with the advert counters that caused
        them (BandResolver.take_rows()), all in one transaction (docs/protocol.md §4.4).

        The gateway raises these for the band: device = band id, boot = chain epoch, seq from the
        gateway's own event counter, no device MAC (the gateway checked the advert's CCM MIC).
        """
        now_ms = int(time.time() * 1000)
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        items = []
        for band, event_type, data in events:
            self.gw_seq += 1
            event = Event(band, self.epoch, self.gw_seq, event_type, uptime_ms, now_ms, data, b"")
            if self.recent is not None:
                self.recent.accepted(event)
            items.append(Submitted(event, None, _noop))
        self.counters.band_events += len(items)
        self.commits.submit_group(items, band_rows)

    def _reject(self, reason: str, device: str | None, detail: str, source: str) -> None:
        self.counters.rejected[reason] += 1
        suppressed = self._throttle.allow(reason)
        if suppressed is not None:
            log.warning(
                "frame_rejected source=%s device=%s reason=%s detail=%s suppressed_since_last=%d",
                source,
                device,
                reason,
                detail[:200],
                suppressed,
            )

    # --- results from the committer --------------------------------------------------

    def on_commit(self, result: CommitResult) -> None:
        """A commit round is durable (or failed): acks, receipts 1 and 4, batches to publish."""
        c = self.counters
        if result.error is not None:
            c.store_error = result.error
            return
        c.store_error = None
        if self.observe_commit is not None and (result.committed or result.sealed):
            self.observe_commit(result.commit_ms / 1000.0)
        ledger = self.ledger
        for s in result.committed:
            s.token()
            if s.event.wants_receipts:
                ledger.stored(s.event.key)
        if self._watch is not None:
            watched = self._watched
            picked = [s.event for s in result.committed if s.event.type in watched]
            if picked:
                self._watch.committed(picked)
        c.committed += len(result.committed)
        c.backlog = result.backlog
        c.backlog_bytes = result.backlog_bytes
        c.backlog_oldest_ms = result.oldest_ms
        c.evicted = result.evicted
        for key in result.dropped:
            ledger.dropped(key)
        recent = self.recent
        if recent is not None:
            recent.committed(result.committed)
            recent.dropped(result.dropped)
            recent.sealed(result.sealed)
        for batch, oldest in zip(result.sealed, result.sealed_oldest, strict=True):
            c.batches_sealed += 1
            self.publish(batch, oldest)


def _noop() -> None:
    return None
