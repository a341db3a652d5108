"""Group commit: the one thread that writes the buffer.

Accepted events queue up here while the previous commit is being fsynced; each round then
writes all of them, the replay state that admitted them, receipt-ledger rows, acknowledged
batches and newly sealed batches in ONE transaction with ONE fsync, and hands the result to
the event loop (receipt 1, PUBACKs to the local broker, batches to publish).

Sealing (docs/protocol.md §4) happens here too, so a batch is durable before it is
published and a restart resends the same bytes:
- only while the uplink is connected, so a backlog is sealed in lane order when it returns;
- in lane order, P0 first; a P0 never waits for linger and may use one batch slot beyond
  the in-flight window (the batch it gets then carries P0 events only);
- P1/P2 are sealed when a batch is full (count or bytes) or the oldest has waited linger_ms,
  or when one round brings a quarter batch or more (under load the rounds are the batches);
- a new alarm while telemetry is queued gets a batch of its own in its round at once;
- a backlog is drained from the events table BACKLOG_BATCHES_PER_ROUND batches per round, with
  a short pause between such rounds that any new event ends, so live traffic is not starved.
When the backlog is empty, events go straight from the inbox into a batch without passing
through the events table.

The backlog is bounded by bytes (config [buffer]): when P1/P2 pass max_bytes -
p0_reserve_bytes, or everything passes max_bytes, the oldest P2 and then the oldest P1 events
are evicted in the same transaction; P0 is never evicted (past the bound it is still stored
and the overrun logged). Evictions are counted per lane (persisted), and the receipt-wanting
events among them get receipt 4 ("dropped") so their devices stop waiting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.gateway.buffer import Store
from agent.gateway.config import BatchConfig, BufferConfig
from agent.gateway.signer import SealedBatch, Signer, batch_oldest_received
from agent.shared.errors import StoreError
from agent.shared.frames import Event, band_event_key
from agent.shared.log import Throttle
from agent.shared.protocol import RECEIPT_DELIVERED, RECEIPT_DROPPED, RECEIPT_STORED

log = logging.getLogger(__name__)

# Batch overhead besides the events (header, signature, chain fields), for the byte limit.
_BATCH_OVERHEAD = 200
P0_RESERVE = 1
# Batches taken from the events table per drain round (a round without new events), and the
# pause after such a round (ended by any new event). A round that drains a big backlog stays short (~5 ms), so an
# alarm arriving meanwhile waits for one short round, not for the whole window of batches.
# Measured on two cores (docs/benchmarks.md): a 1,000,000-event backlog drains in ~9.5 s
# (2 per round: ~6.5 s) with alarms at p99 ~19 ms (2 per round: ~35 ms) meanwhile.
BACKLOG_BATCHES_PER_ROUND = 1
DRAIN_PAUSE_S = 0.004


@dataclass(slots=True)
class Submitted:
    """An accepted event with the replay row that admitted it and the source's ack token.

    The gateway's own events (heartbeats) have no replay row.
    """

    event: Event
    replay_row: tuple[int, int, int] | None
    token: Any


@dataclass(slots=True)
class CommitResult:
    committed: list[Submitted] = field(default_factory=list)
    sealed: list[SealedBatch] = field(default_factory=list)
    backlog: tuple[int, int, int] = (0, 0, 0)
    backlog_bytes: tuple[int, int, int] = (0, 0, 0)
    oldest_ms: int | None = None  # receive time of the oldest event not yet acknowledged by central
    evicted: tuple[int, int, int] = (0, 0, 0)  # totals per lane, persisted
    dropped: list[tuple[str, int, int]] = field(default_factory=list)  # evicted events that want receipts
    commit_ms: float = 0.0
    error: str | None = None


class Committer:
    """Owns the Store from its own thread; the event loop talks to it through submit/ack."""

    def __init__(
        self,
        store: Store,
        sealer: Signer,
        batch: BatchConfig,
        commit_wait_ms: float,
        inflight: int,
        backlog: list[int],
        backlog_bytes: list[int],
        loop: asyncio.AbstractEventLoop,
        on_result: Callable[[CommitResult], None],
        limits: BufferConfig | None = None,
        evicted: list[int] | None = None,
        gw_seq: int = 0,
        unacked: list[SealedBatch] | None = None,
        oldest_received: int | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.evicted = list(evicted or (0, 0, 0))
        self.gw_seq = gw_seq
        # per unacknowledged batch: the receive time of its oldest event
        self.batch_oldest: dict[int, int] = {b.seq: batch_oldest_received(b.blob) for b in unacked or ()}
        self._over_bound = Throttle()
        self.sealer = sealer
        self.batch = batch
        self.commit_wait = commit_wait_ms / 1000.0
        self.loop = loop
        self.on_result = on_result
        self.inflight = inflight
        self.backlog = list(backlog)
        self.backlog_bytes = list(backlog_bytes)
        # wall-clock ms of the oldest unsealed event, None when the backlog is empty
        self.oldest_ms: int | None = (oldest_received or 0) if sum(backlog) else None
        self._cv = threading.Condition()
        self._inbox: deque[Submitted] = deque()
        self._acks: deque[SealedBatch] = deque()
        self._band_rows: deque[tuple[str, int, int]] = deque()  # wristband advert counters (band_replay)
        self._uplink = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    # --- event-loop side -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: Submitted) -> None:
        with self._cv:
            self._inbox.append(item)
            if len(self._inbox) == 1:
                self._cv.notify()

    def submit_group(self, items: list[Submitted], band_rows: list[tuple[str, int, int]]) -> None:
        """Queue events with the wristband counter rows that caused them: one transaction.

        band_rows: (band, counter, seen_ms) from BandResolver.take_rows() (agent/gateway/wristbands/source.py).
        """
        with self._cv:
            self._inbox.extend(items)
            self._band_rows.extend(band_rows)
            self._cv.notify()

    def ack(self, batch: SealedBatch) -> None:
        """Central acknowledged `batch`: delete it and mark its events delivered."""
        with self._cv:
            self._acks.append(batch)
            self._cv.notify()

    def set_uplink(self, connected: bool) -> None:
        with self._cv:
            self._uplink = connected
            self._cv.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)

    # --- committer thread ----------------------------------------------------------

    def _pending_total(self) -> int:
        return sum(self.backlog) + len(self._inbox)

    def _has_p0(self) -> bool:
        return self.backlog[0] > 0 or any(s.event.prio == 0 for s in self._inbox)

    def _seal_wait(self, now_ms: int) -> float | None:
        """0 when a batch should be sealed now, seconds until linger ends, or None (nothing to seal)."""
        if not self._uplink or self._pending_total() == 0:
            return None
        p0 = self._has_p0()
        if self.inflight >= self.batch.window + (P0_RESERVE if p0 else 0):
            return None
        if p0 or self._pending_total() >= self.batch.max_events:
            return 0.0
        pending_bytes = sum(self.backlog_bytes) + sum(len(s.event.encoded) for s in self._inbox)
        if pending_bytes + _BATCH_OVERHEAD >= self.batch.max_bytes:
            return 0.0
        oldest = self.oldest_ms if self.oldest_ms is not None else now_ms
        if self._inbox:
            oldest = min(oldest, self._inbox[0].event.received)
        return max(0.0, (oldest + self.batch.linger_ms - now_ms) / 1000.0)

    def _run(self) -> None:
        backoff = 0.1
        draining = False  # the last round only sealed batches from the events table
        while True:
            with self._cv:
                if draining:
                    # a breath between backlog rounds for the event loop and the brokers; a new
                    # event (an alarm) ends it at once
                    deadline = time.monotonic() + DRAIN_PAUSE_S
                    while not self._inbox and not self._stopping and (left := deadline - time.monotonic()) > 0:
                        self._cv.wait(left)
                while True:
                    now_ms = int(time.time() * 1000)
                    seal_wait = self._seal_wait(now_ms)
                    if self._inbox or self._acks or self._band_rows or seal_wait == 0.0 or self._stopping:
                        break
                    self._cv.wait(seal_wait)
                if self._stopping and not self._inbox and not self._acks and not self._band_rows:
                    return
                if (
                    self.commit_wait
                    and self._inbox
                    and not self._acks
                    and not self._stopping
                    and len(self._inbox) < 64
                    and not any(s.event.prio == 0 for s in self._inbox)
                ):
                    # bounded wait so that a trickle of telemetry shares one fsync
                    self._cv.wait(self.commit_wait)
                items = list(self._inbox)
                self._inbox.clear()
                acks = list(self._acks)
                self._acks.clear()
                band_rows = list(self._band_rows)
                self._band_rows.clear()
                uplink = self._uplink
            try:
                result = self._commit(items, acks, uplink, band_rows)
            except StoreError as exc:
                log.error("commit_failed reason=%r retry_in_s=%.1f", str(exc), backoff)
                with self._cv:
                    self._inbox.extendleft(reversed(items))
                    self._acks.extendleft(reversed(acks))
                    self._band_rows.extendleft(reversed(band_rows))
                self.loop.call_soon_threadsafe(self.on_result, CommitResult(error=str(exc)))
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            draining = not items and len(result.sealed) >= BACKLOG_BATCHES_PER_ROUND
            self.loop.call_soon_threadsafe(self.on_result, result)

    def _commit(
        self,
        items: list[Submitted],
        acks: list[SealedBatch],
        uplink: bool,
        band_rows: list[tuple[str, int, int]] | None = None,
    ) -> CommitResult:
        t0 = time.perf_counter()
        now_ms = int(time.time() * 1000)
        chain = (self.sealer.seq, self.sealer.prev)
        backlog = list(self.backlog)
        backlog_bytes = list(self.backlog_bytes)
        inflight = self.inflight - len(acks)
        oldest_ms = self.oldest_ms
        sealed: list[SealedBatch] = []
        sealed_oldest: dict[int, int] = {}
        evicted = list(self.evicted)
        dropped: list[tuple[str, int, int]] = []
        gw_seq = max((s.event.seq for s in items if s.replay_row is None), default=self.gw_seq)
        store = self.store
        try:
            with store.transaction():
                if acks:
                    store.delete_batches(b.seq for b in acks)
                    store.ledger_set((*k, RECEIPT_DELIVERED) for b in acks for k in b.flagged)

                inbox = sorted(items, key=lambda s: s.event.prio)  # stable: arrival order per lane
                alarms_only = False
                if uplink and inbox and inbox[0].event.prio == 0 and backlog[0] == 0 and sum(backlog) > 0:
                    # a new alarm does not wait behind a backlog of telemetry: a batch of its own at
                    # once, and this round takes nothing else from the events table
                    n0 = sum(1 for s in inbox if s.event.prio == 0)
                    left, inflight = self._seal_direct(inbox[:n0], inflight, sealed, sealed_oldest, now_ms)
                    inbox = left + inbox[n0:]
                    alarms_only = not left
                if not alarms_only and uplink and len(inbox) >= max(1, self.batch.max_events // 4) and sum(backlog) > 0:
                    # a busy round: what lingers in the events table is sealed first (it is older),
                    # so that this round can be sealed directly (see _seal_direct)
                    inflight = self._seal_backlog(
                        backlog, backlog_bytes, inflight, sealed, sealed_oldest, now_ms, None, cap=self.batch.window + 1
                    )
                if uplink and sum(backlog) == 0:
                    inbox, inflight = self._seal_direct(inbox, inflight, sealed, sealed_oldest, now_ms)
                if inbox:
                    store.insert_events(
                        (
                            s.event.prio,
                            len(s.event.encoded),
                            s.event.encoded,
                            *(
                                (s.event.device, s.event.boot, s.event.seq)
                                if s.event.wants_receipts
                                else (None, None, None)
                            ),
                            s.event.received,
                        )
                        for s in inbox
                    )
                    for s in inbox:
                        backlog[s.event.prio] += 1
                        backlog_bytes[s.event.prio] += len(s.event.encoded)
                    if oldest_ms is None:
                        oldest_ms = min(s.event.received for s in inbox)
                    if self.limits is not None:
                        self._bound(backlog, backlog_bytes, evicted, dropped)
                if uplink and any(backlog) and not alarms_only:
                    # a round without new events is a drain round: short, see BACKLOG_BATCHES_PER_ROUND;
                    # with new events coming in, the window is the limit
                    cap = self.batch.window + 1 if items else BACKLOG_BATCHES_PER_ROUND
                    inflight = self._seal_backlog(
                        backlog, backlog_bytes, inflight, sealed, sealed_oldest, now_ms, oldest_ms, cap
                    )
                if sealed or (evicted != self.evicted and sum(backlog)):
                    oldest_ms = store.oldest_received() if sum(backlog) else None

                if items:
                    last: dict[str, tuple[int, int, int]] = {}
                    for s in items:
                        if s.replay_row is not None:
                            last[s.event.device] = s.replay_row
                    store.save_replay((d, *row) for d, row in last.items())
                    flagged = [(*s.event.key, RECEIPT_STORED) for s in items if s.event.wants_receipts]
                    if flagged:
                        store.ledger_set(flagged)
                if band_rows:
                    store.save_band_replay(band_rows)
                raised = [k for s in items if s.replay_row is None and (k := band_event_key(s.event)) is not None]
                if raised:
                    store.save_band_alerts(raised)
                if dropped:
                    store.ledger_set((*k, RECEIPT_DROPPED) for k in dropped)
                for b in sealed:
                    store.insert_batch(b)
                if sealed:
                    store.set_chain(self.sealer.epoch, self.sealer.seq, self.sealer.prev)
                if gw_seq != self.gw_seq or evicted != self.evicted:
                    store.set_counters(gw_seq, evicted)
        except BaseException:
            self.sealer.seq, self.sealer.prev = chain
            raise
        self.backlog, self.backlog_bytes, self.inflight = backlog, backlog_bytes, inflight
        self.oldest_ms = oldest_ms if sum(backlog) else None
        self.evicted, self.gw_seq = evicted, gw_seq
        for b in acks:
            self.batch_oldest.pop(b.seq, None)
        self.batch_oldest.update(sealed_oldest)
        undelivered = [t for t in (self.oldest_ms, *self.batch_oldest.values()) if t is not None]
        return CommitResult(
            committed=items,
            sealed=sealed,
            backlog=(backlog[0], backlog[1], backlog[2]),
            backlog_bytes=(backlog_bytes[0], backlog_bytes[1], backlog_bytes[2]),
            oldest_ms=min(undelivered) if undelivered else None,
            evicted=(evicted[0], evicted[1], evicted[2]),
            dropped=dropped,
            commit_ms=(time.perf_counter() - t0) * 1000,
        )

    def _bound(
        self, backlog: list[int], backlog_bytes: list[int], evicted: list[int], dropped: list[tuple[str, int, int]]
    ) -> None:
        """Evict the oldest P2, then the oldest P1, until the backlog is within its bounds."""
        assert self.limits is not None
        limit_all = self.limits.max_bytes
        limit_low = limit_all - self.limits.p0_reserve_bytes
        for prio in (2, 1):
            need = max(backlog_bytes[1] + backlog_bytes[2] - limit_low, sum(backlog_bytes) - limit_all)
            if need <= 0:
                return
            n, freed, keys = self.store.evict(prio, need)
            backlog[prio] -= n
            backlog_bytes[prio] -= freed
            evicted[prio] += n
            dropped.extend(keys)
        over = sum(backlog_bytes) - limit_all
        if over > 0:
            suppressed = self._over_bound.allow("p0")
            if suppressed is not None:
                log.warning(
                    "buffer_over_bound alarms_bytes=%d max_bytes=%d over=%d suppressed_since_last=%d",
                    backlog_bytes[0],
                    limit_all,
                    over,
                    suppressed,
                )

    def _room(self, p0: bool, inflight: int) -> bool:
        return inflight < self.batch.window + (P0_RESERVE if p0 else 0)

    def _seal_direct(
        self,
        inbox: list[Submitted],
        inflight: int,
        sealed: list[SealedBatch],
        sealed_oldest: dict[int, int],
        now_ms: int,
    ) -> tuple[list[Submitted], int]:
        """Seal events straight from the inbox (lane-sorted); returns what is left over."""
        i = 0
        while i < len(inbox):
            p0 = inbox[i].event.prio == 0
            if not self._room(p0, inflight):
                break
            reserve_only = p0 and inflight >= self.batch.window
            rest = inbox[i:]
            full = len(rest) >= self.batch.max_events or (
                sum(len(s.event.encoded) for s in rest[: self.batch.max_events]) + _BATCH_OVERHEAD
                >= self.batch.max_bytes
            )
            # under load the commit rounds themselves are the batches: a round that brings a
            # quarter batch or more is sealed at once rather than written to the events table
            # and read back after linger_ms (per-row SQL that would compete with ingest)
            if (
                not p0
                and not full
                and len(rest) < max(1, self.batch.max_events // 4)
                and rest[0].event.received + self.batch.linger_ms > now_ms
            ):
                break
            blobs: list[bytes] = []
            flagged: list[tuple[str, int, int]] = []
            size = _BATCH_OVERHEAD
            j = i
            while j < len(inbox) and len(blobs) < self.batch.max_events:
                ev = inbox[j].event
                if reserve_only and ev.prio != 0:
                    break
                if blobs and size + len(ev.encoded) > self.batch.max_bytes:
                    break
                blobs.append(ev.encoded)
                size += len(ev.encoded)
                if ev.wants_receipts:
                    flagged.append(ev.key)
                j += 1
            sealed.append(self.sealer.seal(blobs, now_ms, inbox[i].event.prio, tuple(flagged)))
            sealed_oldest[sealed[-1].seq] = min(s.event.received for s in inbox[i:j])
            inflight += 1
            i = j
        return inbox[i:], inflight

    def _seal_backlog(
        self,
        backlog: list[int],
        backlog_bytes: list[int],
        inflight: int,
        sealed: list[SealedBatch],
        sealed_oldest: dict[int, int],
        now_ms: int,
        oldest_ms: int | None,
        cap: int = BACKLOG_BATCHES_PER_ROUND,
    ) -> int:
        """Seal batches from the events table, at most `cap` batches sealed in this round."""
        while sum(backlog) and len(sealed) < cap:
            p0 = backlog[0] > 0
            if not self._room(p0, inflight):
                break
            full = sum(backlog) >= self.batch.max_events or sum(backlog_bytes) + _BATCH_OVERHEAD >= self.batch.max_bytes
            if not p0 and not full and oldest_ms is not None and oldest_ms + self.batch.linger_ms > now_ms:
                break
            reserve_only = p0 and inflight >= self.batch.window
            limit = backlog[0] if reserve_only else self.batch.max_events
            rows = self.store.take_backlog(min(limit, self.batch.max_events), self.batch.max_bytes - _BATCH_OVERHEAD)
            if not rows:
                break
            for prio, blob, _, _ in rows:
                backlog[prio] -= 1
                backlog_bytes[prio] -= len(blob)
            flagged = tuple(k for _, _, k, _ in rows if k is not None)
            sealed.append(self.sealer.seal([b for _, b, _, _ in rows], now_ms, rows[0][0], flagged))
            sealed_oldest[sealed[-1].seq] = min(r for _, _, _, r in rows)
            inflight += 1
            # what remains is older than linger by now, or is P0: it is sealed as it fills
            oldest_ms = oldest_ms if sum(backlog) else None
        return inflight
