"""The commit round's decisions as a pure function: what one transaction writes, seals and evicts.

    plan_round(items, acks, band rows, State, Backlog view, uplink, batch, limits, now) -> Plan
    Committer (agent/gateway/committer.py): seals the Plan's batches in order (agent/gateway/signer.py)
    Store.apply(plan, sealed) (agent/gateway/buffer.py): writes it all, one transaction, one fsync

The planner does no I/O. It reads the events table through the `Backlog` view (in
production SQLite's, `Store.rows`, read inside the round's transaction; in the tests a list)
and says what the round does; the applier only executes it. The rules (docs/protocol.md §4,
§4.5):

- Sealing happens only while the uplink is connected, so a backlog is sealed in lane order
  when it returns; at most `window` batches wait for central's PUBACK, plus one P0 reserve
  slot (a batch sealed in that slot carries P0 events only).
- In lane order, P0 first; a P0 never waits for linger. P1/P2 are sealed when a batch is full
  (count or bytes), when the oldest has waited linger_ms, or when one round brings a quarter
  batch or more (under load the rounds are the batches).
- A new alarm while telemetry is queued gets a batch of its own in its round at once.
- A busy round seals what lingers in the events table first (it is older), then its own
  events straight from the inbox; with the events table empty, events go straight from the
  inbox into a batch without being written there.
- A round without new events is a drain round: BACKLOG_BATCHES_PER_ROUND batches at most (the
  committer pauses briefly between such rounds), so an alarm arriving meanwhile waits for one
  short round, not for a whole window of batches.
- The backlog is bounded by bytes ([buffer]): when P1/P2 pass max_bytes - p0_reserve_bytes,
  or everything passes max_bytes, the oldest P2 and then the oldest P1 events are evicted;
  P0 is never evicted (past the bound it is still stored and the overrun reported). Every
  evicted event that wants receipts is named for receipt 4 ("dropped").

Events taken from the events table, whether sealed or evicted, are always a prefix of their
lane (oldest first), so the applier deletes one id range per lane. Inbox events that are
sealed or evicted in their own round are never written to the events table: the durable
state is the same as writing and deleting them in one transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.gateway.config import BatchConfig, BufferConfig
from agent.gateway.signer import SealedBatch
from agent.shared.frames import Event, band_event_key

# Batch overhead besides the events (header, signature, chain fields), for the byte limit.
BATCH_OVERHEAD = 200
P0_RESERVE = 1
# Batches taken from the events table per drain round (a round without new events). A round
# that drains a big backlog stays short (~5 ms), so an alarm arriving meanwhile waits for one
# short round, not for the whole window of batches. Measured on two cores
# (docs/benchmarks.md): a 1,000,000-event backlog drains in ~9.5 s (2 per round: ~6.5 s) with
# alarms at p99 ~19 ms (2 per round: ~35 ms) meanwhile.
BACKLOG_BATCHES_PER_ROUND = 1
# Rows read per query while looking for events to evict (Store.rows without blobs).
EVICT_CHUNK = 256

Key = tuple[str, int, int]  # (device, boot, seq) of an event that wants receipts
# A device's replay record as ReplayState.as_row() gives it (agent/gateway/replay.py): boot,
# seq, bitmap and the packed gaps
ReplayRow = tuple[int, int, int, bytes]
# what the gateway knows of a post's or sensor's liveness (agent/gateway/liveness.py): (device,
# learned heartbeat interval ms, unix ms since it is reported offline or None, why: "heartbeat"
# or "will" or None); committed with the DEVICE_OFFLINE/ONLINE event that changed it
LivenessRow = tuple[str, int, int | None, str | None]
Lanes = tuple[int, int, int]


@dataclass(slots=True)
class Submitted:
    """An accepted event with the replay row that admitted it and the source's ack token.

    The gateway's own events (heartbeats, wristband alerts) have no replay row.
    """

    event: Event
    replay_row: ReplayRow | None
    token: Any


# An event in the events table as the Backlog view returns it: (id, size, blob, receipt key,
# received). id increases in arrival order within a lane (>= 1); blob is b"" when read without
# blobs; the key is set for events that want receipts; received is the gateway's receive time
# (unix ms). A plain tuple: a batch reads a thousand of them, and a NamedTuple's constructor
# is a Python-level call per row.
Row = tuple[int, int, bytes, Key | None, int]


class Backlog(Protocol):
    """Read access to the events table (agent/gateway/buffer.py Store implements it)."""

    def rows(self, prio: int, after: int, limit: int, blobs: bool) -> Sequence[Row]:
        """Up to `limit` events of lane `prio` with an id above `after`, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class State:
    """What the committer knows between rounds (recovered at start, then from each Plan)."""

    backlog: Lanes = (0, 0, 0)  # events in the events table, per lane
    backlog_bytes: Lanes = (0, 0, 0)
    oldest_ms: int | None = None  # receive time of the oldest of them; None when there are none
    inflight: int = 0  # sealed batches central has not acknowledged
    evicted: Lanes = (0, 0, 0)  # totals, persisted
    gw_seq: int = 0  # the gateway's own event counter, persisted


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """One batch to seal: its events' encodings in order, its lane, whom to tell."""

    blobs: list[bytes]
    prio: int  # lane of its first event
    flagged: tuple[Key, ...]  # events that want receipts
    oldest: int  # receive time of its oldest event


@dataclass(slots=True)
class Plan:
    """Everything one commit round writes, in the order the applier writes it."""

    state: State  # after the round
    delete_batches: list[int] = field(default_factory=list)  # acknowledged by central
    delivered: list[Key] = field(default_factory=list)  # their receipt-wanting events: ledger 2
    consumed: list[tuple[int, int]] = field(default_factory=list)  # (lane, last id) removed from the events table
    insert: list[Event] = field(default_factory=list)  # inbox events written to the events table
    replay: list[tuple[str, int, int, int, bytes]] = field(default_factory=list)  # (device, *ReplayRow)
    stored: list[Key] = field(default_factory=list)  # inbox events that want receipts: ledger 1
    band_rows: list[tuple[str, int, int]] = field(default_factory=list)  # wristband advert counters
    band_alerts: list[tuple[str, int, int]] = field(default_factory=list)  # SOS/FALL raised
    liveness: list[LivenessRow] = field(default_factory=list)  # devices' liveness (agent/gateway/liveness.py)
    dropped: list[Key] = field(default_factory=list)  # evicted events that want receipts: ledger 4
    seal: list[BatchPlan] = field(default_factory=list)  # in chain order
    write_counters: bool = False  # gw_seq or the eviction totals changed
    over_bound: int = 0  # bytes the alarms alone are over [buffer] max_bytes (P0 is kept)


def seal_wait(state: State, inbox: Sequence[Submitted], uplink: bool, batch: BatchConfig, now_ms: int) -> float | None:
    """0 when a batch should be sealed now, seconds until linger ends, or None (nothing to seal)."""
    pending = sum(state.backlog) + len(inbox)
    if not uplink or pending == 0:
        return None
    p0 = state.backlog[0] > 0 or any(s.event.prio == 0 for s in inbox)
    if state.inflight >= batch.window + (P0_RESERVE if p0 else 0):
        return None
    if p0 or pending >= batch.max_events:
        return 0.0
    pending_bytes = sum(state.backlog_bytes) + sum(len(s.event.encoded) for s in inbox)
    if pending_bytes + BATCH_OVERHEAD >= batch.max_bytes:
        return 0.0
    oldest = state.oldest_ms if state.oldest_ms is not None else now_ms
    if inbox:
        oldest = min(oldest, inbox[0].event.received)
    return max(0.0, (oldest + batch.linger_ms - now_ms) / 1000.0)


def plan_round(
    items: Sequence[Submitted],
    acks: Sequence[SealedBatch],
    band_rows: Sequence[tuple[str, int, int]],
    state: State,
    backlog: Backlog,
    *,
    uplink: bool,
    batch: BatchConfig,
    limits: BufferConfig | None,
    now_ms: int,
    liveness: Sequence[LivenessRow] = (),
) -> Plan:
    """The plan of one commit round; see the module docstring for the rules it follows.

    items: accepted events in arrival order; acks: batches central acknowledged;
    band_rows: wristband advert counters to persist with them; liveness: device liveness rows
    to persist with them (the DEVICE_OFFLINE/ONLINE events among the items).
    """
    plan = _Round(state, backlog, uplink, batch, limits, now_ms).plan(items, acks, band_rows)
    plan.liveness = list(liveness)
    return plan


class _BatchBuilder:
    """A batch being filled from the events table's lanes (and the inbox rows written there)."""

    __slots__ = ("blobs", "closed", "flagged", "limit", "max_bytes", "oldest", "prio", "size")

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit = limit
        self.max_bytes = max_bytes  # for the events, the overhead taken off already
        self.blobs: list[bytes] = []
        self.flagged: list[Key] = []
        self.size = 0
        self.oldest = 0
        self.prio = 0
        self.closed = False  # full: no more events, from any lane

    def fits(self, size: int) -> bool:
        # the first event always goes in, however big
        if self.blobs and self.size + size > self.max_bytes:
            self.closed = True
            return False
        return True

    def add(self, prio: int, blob: bytes, key: Key | None, received: int) -> None:
        if not self.blobs:
            self.prio, self.oldest = prio, received
        elif received < self.oldest:
            self.oldest = received
        self.blobs.append(blob)
        self.size += len(blob)
        if key is not None:
            self.flagged.append(key)
        if len(self.blobs) >= self.limit:
            self.closed = True


class _Lane:
    """One lane of the backlog as the round sees it: the events table's rows not yet taken (read
    through the view, a chunk at a time), then the inbox events this round writes there."""

    __slots__ = ("after", "buf", "buf_blobs", "consumed", "inbox", "inbox_at", "prio", "unread", "view")

    def __init__(self, prio: int, stored: int, view: Backlog) -> None:
        self.prio = prio
        self.view = view
        self.unread = stored  # table rows not read into buf yet
        self.after = 0  # id of the last row read (ids start at 1)
        self.consumed: int | None = None  # id of the last table row taken (sealed or evicted)
        self.buf: deque[Row] = deque()  # read, not taken
        self.buf_blobs = False
        self.inbox: list[Submitted] = []  # written to the table in this round (after the rows above)
        self.inbox_at = 0

    def _read(self, limit: int, blobs: bool) -> None:
        """Fill the (empty) buffer with up to `limit` rows; with blobs, or metadata only."""
        if self.buf and blobs and not self.buf_blobs:
            # rows read for eviction carry no blobs: read them again, with blobs
            self.unread += len(self.buf)
            self.buf.clear()
            self.after = self.consumed if self.consumed is not None else 0
        if self.buf or self.unread <= 0:
            return
        rows = self.view.rows(self.prio, self.after, min(limit, self.unread), blobs)
        if not rows:
            self.unread = 0  # the table holds fewer rows than counted: nothing more to read
            return
        self.unread -= len(rows)
        self.after = rows[-1][0]
        self.buf.extend(rows)
        self.buf_blobs = blobs

    def _take_row(self) -> Row:
        row = self.buf.popleft()
        self.consumed = row[0]
        return row

    def oldest(self) -> int | None:
        """Receive time of the first event left in the lane."""
        self._read(1, False)
        if self.buf:
            return self.buf[0][4]
        if self.inbox_at < len(self.inbox):
            return self.inbox[self.inbox_at].event.received
        return None

    def evict(self, need: int) -> tuple[int, int, list[Key]]:
        """Take the oldest events until `need` bytes are freed: (events, bytes, receipt keys)."""
        count = freed = 0
        keys: list[Key] = []
        while freed < need:
            self._read(EVICT_CHUNK, False)
            if self.buf:
                _, size, _, key, _ = self._take_row()
            elif self.inbox_at < len(self.inbox):
                ev = self.inbox[self.inbox_at].event
                self.inbox_at += 1
                size, key = len(ev.encoded), (ev.key if ev.wants_receipts else None)
            else:
                break
            count += 1
            freed += size
            if key is not None:
                keys.append(key)
        return count, freed, keys

    def fill(self, b: _BatchBuilder, backlog: list[int], backlog_bytes: list[int]) -> None:
        """Move the lane's oldest events into `b` until it closes or the lane is empty."""
        p = self.prio
        while not b.closed:
            self._read(b.limit - len(b.blobs), True)
            if self.buf:
                n, size = self._fill_rows(b)
            elif self.inbox_at < len(self.inbox):
                ev = self.inbox[self.inbox_at].event
                n, size = 1, len(ev.encoded)
                if not b.fits(size):
                    return
                self.inbox_at += 1
                b.add(p, ev.encoded, ev.key if ev.wants_receipts else None, ev.received)
            else:
                return
            backlog[p] -= n
            backlog_bytes[p] -= size

    def _fill_rows(self, b: _BatchBuilder) -> tuple[int, int]:
        """Move read rows into `b`: (events, bytes). One tight loop: a drain round moves a
        thousand rows, and a method call per row would cost it about 10 % more."""
        buf, blobs, flagged = self.buf, b.blobs, b.flagged
        limit, max_bytes = b.limit, b.max_bytes
        if not blobs:
            b.prio, b.oldest = self.prio, buf[0][4]
        total, oldest = b.size, b.oldest
        n = moved = 0
        while buf and len(blobs) < limit:
            row_id, size, blob, key, received = buf[0]
            if blobs and total + size > max_bytes:
                b.closed = True
                break
            buf.popleft()
            blobs.append(blob)
            total += size
            moved += size
            n += 1
            if key is not None:
                flagged.append(key)
            if received < oldest:  # noqa: PLR1730 - a compare per row, not a call
                oldest = received
            self.consumed = row_id
        b.size, b.oldest = total, oldest
        if len(blobs) >= limit:
            b.closed = True
        return n, moved


class _Round:
    """The working state of plan_round."""

    def __init__(
        self,
        state: State,
        view: Backlog,
        uplink: bool,
        batch: BatchConfig,
        limits: BufferConfig | None,
        now_ms: int,
    ) -> None:
        self.before = state
        self.uplink = uplink
        self.batch = batch
        self.limits = limits
        self.now_ms = now_ms
        self.backlog = list(state.backlog)
        self.backlog_bytes = list(state.backlog_bytes)
        self.evicted = list(state.evicted)
        self.inflight = state.inflight
        self.lanes = [_Lane(p, state.backlog[p], view) for p in range(3)]
        self.sealed: list[BatchPlan] = []
        self.dropped: list[Key] = []
        self.over_bound = 0

    def plan(
        self, items: Sequence[Submitted], acks: Sequence[SealedBatch], band_rows: Sequence[tuple[str, int, int]]
    ) -> Plan:
        backlog, batch, uplink = self.backlog, self.batch, self.uplink
        self.inflight -= len(acks)
        oldest_ms = self.before.oldest_ms
        inbox = sorted(items, key=lambda s: s.event.prio)  # stable: arrival order per lane
        alarms_only = False
        if uplink and inbox and inbox[0].event.prio == 0 and backlog[0] == 0 and sum(backlog) > 0:
            # a new alarm does not wait behind a backlog of telemetry: a batch of its own at
            # once, and this round takes nothing else from the events table
            n0 = sum(1 for s in inbox if s.event.prio == 0)
            left = self._seal_direct(inbox[:n0])
            inbox = left + inbox[n0:]
            alarms_only = not left
        if not alarms_only and uplink and len(inbox) >= max(1, batch.max_events // 4) and sum(backlog) > 0:
            # a busy round: what lingers in the events table is sealed first (it is older),
            # so that this round can be sealed directly
            self._seal_backlog(batch.window + 1, None)
        if uplink and sum(backlog) == 0:
            inbox = self._seal_direct(inbox)
        if inbox:
            self._write(inbox)
            if oldest_ms is None:
                oldest_ms = min(s.event.received for s in inbox)
            if self.limits is not None:
                self._bound(self.limits)
        if uplink and any(backlog) and not alarms_only:
            # a round without new events is a drain round, short (BACKLOG_BATCHES_PER_ROUND);
            # with new events coming in, the window is the limit
            self._seal_backlog(batch.window + 1 if items else BACKLOG_BATCHES_PER_ROUND, oldest_ms)
        if self.sealed or (self.evicted != list(self.before.evicted) and sum(backlog)):
            oldest_ms = self._oldest()
        return self._result(items, acks, band_rows, oldest_ms)

    def _room(self, p0: bool) -> bool:
        return self.inflight < self.batch.window + (P0_RESERVE if p0 else 0)

    def _seal_direct(self, inbox: list[Submitted]) -> list[Submitted]:
        """Seal events straight from the inbox (lane-sorted); returns what is left over."""
        batch = self.batch
        max_events, max_bytes = batch.max_events, batch.max_bytes
        quarter = max(1, max_events // 4)
        n = len(inbox)
        i = 0
        while i < n:
            first = inbox[i].event
            p0 = first.prio == 0
            if not self._room(p0):
                break
            reserve_only = p0 and self.inflight >= batch.window
            left = n - i
            full = left >= max_events or (
                sum(len(inbox[k].event.encoded) for k in range(i, min(n, i + max_events))) + BATCH_OVERHEAD >= max_bytes
            )
            # under load the commit rounds themselves are the batches: a round that brings a
            # quarter batch or more is sealed at once rather than written to the events table
            # and read back after linger_ms (per-row SQL that would compete with ingest)
            if not p0 and not full and left < quarter and first.received + batch.linger_ms > self.now_ms:
                break
            blobs: list[bytes] = []
            flagged: list[Key] = []
            size = BATCH_OVERHEAD
            oldest = first.received
            j = i
            while j < n and len(blobs) < max_events:
                ev = inbox[j].event
                if reserve_only and ev.prio != 0:
                    break
                if blobs and size + len(ev.encoded) > max_bytes:
                    break
                blobs.append(ev.encoded)
                size += len(ev.encoded)
                if ev.wants_receipts:
                    flagged.append(ev.key)
                if ev.received < oldest:  # noqa: PLR1730 - a compare per event, not a call
                    oldest = ev.received
                j += 1
            self.sealed.append(BatchPlan(blobs, first.prio, tuple(flagged), oldest))
            self.inflight += 1
            i = j
        return inbox[i:]

    def _seal_backlog(self, cap: int, oldest_ms: int | None) -> None:
        """Seal batches from the events table, until `cap` batches are sealed in this round."""
        batch, backlog, backlog_bytes = self.batch, self.backlog, self.backlog_bytes
        while sum(backlog) and len(self.sealed) < cap:
            p0 = backlog[0] > 0
            if not self._room(p0):
                break
            full = sum(backlog) >= batch.max_events or sum(backlog_bytes) + BATCH_OVERHEAD >= batch.max_bytes
            if not p0 and not full and oldest_ms is not None and oldest_ms + batch.linger_ms > self.now_ms:
                break
            # in the reserve slot only alarms: they come first, so take as many as there are
            reserve_only = p0 and self.inflight >= batch.window
            limit = min(backlog[0], batch.max_events) if reserve_only else batch.max_events
            b = _BatchBuilder(limit, batch.max_bytes - BATCH_OVERHEAD)
            for lane in self.lanes[:1] if reserve_only else self.lanes:
                lane.fill(b, backlog, backlog_bytes)
                if b.closed:
                    break
            if not b.blobs:
                break
            self.sealed.append(BatchPlan(b.blobs, b.prio, tuple(b.flagged), b.oldest))
            self.inflight += 1
            # what remains is older than linger by now, or is P0: it is sealed as it fills
            oldest_ms = oldest_ms if sum(backlog) else None

    def _write(self, inbox: list[Submitted]) -> None:
        """The inbox events left over go to the events table, after what each lane holds."""
        for s in inbox:
            ev = s.event
            self.backlog[ev.prio] += 1
            self.backlog_bytes[ev.prio] += len(ev.encoded)
            self.lanes[ev.prio].inbox.append(s)

    def _bound(self, limits: BufferConfig) -> None:
        """Evict the oldest P2, then the oldest P1, until the backlog is within its bounds."""
        backlog, backlog_bytes = self.backlog, self.backlog_bytes
        limit_all = limits.max_bytes
        limit_low = limit_all - limits.p0_reserve_bytes
        for prio in (2, 1):
            need = max(backlog_bytes[1] + backlog_bytes[2] - limit_low, sum(backlog_bytes) - limit_all)
            if need <= 0:
                return
            n, freed, keys = self.lanes[prio].evict(need)
            backlog[prio] -= n
            backlog_bytes[prio] -= freed
            self.evicted[prio] += n
            self.dropped.extend(keys)
        self.over_bound = max(0, sum(backlog_bytes) - limit_all)

    def _oldest(self) -> int | None:
        if not sum(self.backlog):
            return None
        found = [t for t in (lane.oldest() for lane in self.lanes) if t is not None]
        return min(found) if found else None

    def _result(
        self,
        items: Sequence[Submitted],
        acks: Sequence[SealedBatch],
        band_rows: Sequence[tuple[str, int, int]],
        oldest_ms: int | None,
    ) -> Plan:
        before = self.before
        gw_seq = max((s.event.seq for s in items if s.replay_row is None), default=before.gw_seq)
        last: dict[str, ReplayRow] = {}
        for s in items:
            if s.replay_row is not None:
                last[s.event.device] = s.replay_row
        b, bb, ev = self.backlog, self.backlog_bytes, self.evicted
        evicted = (ev[0], ev[1], ev[2])
        return Plan(
            state=State(
                backlog=(b[0], b[1], b[2]),
                backlog_bytes=(bb[0], bb[1], bb[2]),
                oldest_ms=oldest_ms if sum(b) else None,
                inflight=self.inflight,
                evicted=evicted,
                gw_seq=gw_seq,
            ),
            delete_batches=[a.seq for a in acks],
            delivered=[k for a in acks for k in a.flagged],
            consumed=[(lane.prio, lane.consumed) for lane in self.lanes if lane.consumed is not None],
            insert=[s.event for lane in self.lanes for s in lane.inbox[lane.inbox_at :]],
            replay=[(d, *row) for d, row in last.items()],
            stored=[s.event.key for s in items if s.event.wants_receipts],
            band_rows=list(band_rows),
            band_alerts=[k for s in items if s.replay_row is None and (k := band_event_key(s.event)) is not None],
            dropped=self.dropped,
            seal=self.sealed,
            write_counters=gw_seq != before.gw_seq or evicted != before.evicted,
            over_bound=self.over_bound,
        )
