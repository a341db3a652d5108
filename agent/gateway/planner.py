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
- The disk is a bound too (docs/protocol.md §4.6). A round that fails for want of space is
  answered by `after_disk_full`: P1/P2 get a lower bound of their own (`Disk.bound`, the
  oldest P2 and then P1 evicted to it, which frees pages SQLite reuses), and a second failure
  in a row gives up part of the alarms' reserve file (agent/gateway/reserve.py) and drops
  P1/P2 arrivals (receipt 4) until a round commits. While the disk is full a round deletes
  at most DISK_EVICT_ROUND bytes of rows (each deleted page goes through the write-ahead log
  first), arrivals past the bound are evicted as they come, and every round ends with a
  checkpoint, so the log is reused instead of grown. `after_disk_check` brings the reserve
  back, and raises or lifts the bound, as space returns.

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
from agent.shared.frames import Event, band_event_key, band_open_changes

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
# When the disk fills: P1/P2 lose an eighth of what they hold, at least this much (bytes of
# events), at most a third of the room the write-ahead log has (evicting rows writes their
# pages to the log before they are free).
DISK_EVICT_MIN = 64 * 1024
# ... and while it is full, a round deletes at most this much of their rows, so that it fits
# in the log (about 20 pages).
DISK_EVICT_ROUND = 64 * 1024
# How much of the alarms' reserve a failed round gives up: an eighth, at least this much.
DISK_RELEASE_MIN = 64 * 1024
# After a drain from at least this much backlog the write-ahead log is truncated (a
# TRUNCATE checkpoint), giving the disk back what the log grew to.
TRUNCATE_AFTER_BYTES = 4 * 1024 * 1024
# Checkpoints a plan asks for once its transaction committed (Store.checkpoint): SQLite's
# modes. PASSIVE copies the log into the database file without waiting for readers; when it
# copied all of it the next commit starts the log from its beginning (it is reused, not
# grown). TRUNCATE also cuts the log file to nothing: the disk gets it back.
CHECKPOINT_RESET = "PASSIVE"
CHECKPOINT_TRUNCATE = "TRUNCATE"

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
class Disk:
    """The data filesystem as the commit rounds see it (docs/protocol.md §4.6)."""

    full: bool = False  # a round failed for want of space, and space has not come back since
    bound: int | None = None  # bytes of P1+P2 events this disk holds: set when it filled, raised as space returns
    failures: int = 0  # rounds failed for want of space in a row; 0 once a round commits

    @property
    def alarms_only(self) -> bool:
        """Failed twice in a row: the alarms' reserve is being given up, so P1/P2 arrivals are dropped."""
        return self.failures >= 2


@dataclass(frozen=True, slots=True)
class Space:
    """What the store measured of the data filesystem and the buffer file (Store.space())."""

    free: int  # bytes the filesystem still has free
    reserve: int  # bytes the alarms' reserve file holds
    reserve_target: int  # ... when whole
    wal: int  # bytes of the write-ahead log file, reused from its start after a checkpoint
    wal_bound: int  # how far the log grows between checkpoints once the disk is not full
    free_pages: int  # bytes of free pages in the buffer file, reused before the file grows


@dataclass(frozen=True, slots=True)
class DiskStep:
    """A decision about the disk: the committer's new Disk, and the store's work."""

    disk: Disk
    release: int = 0  # bytes of the reserve to give up now
    restore: bool = False  # allocate the reserve to its target again
    give_back: int = 0  # bytes of free pages to hand back to the filesystem (incremental vacuum)
    retry: bool = False  # a failed round has a new chance at once


@dataclass(frozen=True, slots=True)
class State:
    """What the committer knows between rounds (recovered at start, then from each Plan)."""

    backlog: Lanes = (0, 0, 0)  # events in the events table, per lane
    backlog_bytes: Lanes = (0, 0, 0)
    oldest_ms: int | None = None  # receive time of the oldest of them; None when there are none
    inflight: int = 0  # sealed batches central has not acknowledged
    evicted: Lanes = (0, 0, 0)  # totals, persisted
    gw_seq: int = 0  # the gateway's own event counter, persisted
    disk: Disk = Disk()
    high_water: int = 0  # most backlog bytes since the write-ahead log was last truncated


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
    # bands' open EXIT/MISSING: (band, type) -> (since, zone name) opened, None closed
    band_open: dict[tuple[str, int], tuple[int, str | None] | None] = field(default_factory=dict)
    liveness: list[LivenessRow] = field(default_factory=list)  # devices' liveness (agent/gateway/liveness.py)
    dropped: list[Key] = field(default_factory=list)  # evicted events that want receipts: ledger 4
    seal: list[BatchPlan] = field(default_factory=list)  # in chain order
    write_counters: bool = False  # gw_seq or the eviction totals changed
    over_bound: int = 0  # bytes the alarms alone are over [buffer] max_bytes (P0 is kept)
    checkpoint: str | None = None  # CHECKPOINT_RESET or CHECKPOINT_TRUNCATE once committed


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


def after_disk_full(state: State, space: Space) -> DiskStep:
    """A round failed for want of space (SQLITE_FULL): what gives way before it is tried again.

    The first failure lowers the P1/P2 bound below what they hold: the rounds that follow
    evict the oldest P2, then P1, a little each (SQLite reuses their pages). A failure right
    after that keeps the bound, gives up part of the alarms' reserve and makes the next round
    one for alarms only (P1/P2 arrivals dropped, no rows deleted: the smallest transaction).
    Alarms are never evicted: when nothing is left to give, `retry` is False and the round
    waits like any failed one.
    """
    d = state.disk
    failures = d.failures + 1
    if failures == 1:
        held = state.backlog_bytes[1] + state.backlog_bytes[2]
        cap = held if d.bound is None else min(d.bound, held)
        step = min(max(DISK_EVICT_MIN, cap // 8), (space.wal + space.free) // 3)
        return DiskStep(Disk(full=True, bound=max(0, cap - step), failures=1), retry=True)
    release = min(space.reserve, max(DISK_RELEASE_MIN, space.reserve_target // 8))
    return DiskStep(Disk(full=True, bound=d.bound, failures=failures), release=release, retry=release > 0)


def after_disk_check(state: State, space: Space, limits: BufferConfig | None) -> DiskStep:
    """Between rounds, while the disk is full or bounds P1/P2: is there room again?

    Room is what the filesystem has free beyond the log's growth (`margin`: twice its bound,
    for the log and the pages it brings into the database file). First the alarms' reserve
    comes back: allocated again once the filesystem has it and the margin besides. Until
    then, and until the margin is free, free pages of the buffer file are handed back to the
    filesystem, and when there are too few of them P1/P2 give way: their bound goes down by
    what is missing, so the rounds evict it (P2 first) and the next check hands it back.
    With the reserve whole and the margin free the disk is no longer full, and P1/P2 may grow
    into half of the room (an event costs more on disk than its bytes: pages, index, log);
    the bound is lifted once it reaches [buffer]'s own.
    """
    d = state.disk
    deficit = max(0, space.reserve_target - space.reserve)
    margin = 2 * space.wal_bound
    held = state.backlog_bytes[1] + state.backlog_bytes[2]
    if deficit and space.free >= deficit + margin:
        return DiskStep(d, restore=True)
    want = deficit + margin - space.free
    if want > 0:
        if not d.full:
            return DiskStep(d)  # a tight disk, not a full one: P1/P2 stay within the bound they have
        give = min(space.free_pages, want)
        bound = d.bound
        if want > give:
            bound = max(0, min(held if bound is None else bound, held) - (want - give))
        return DiskStep(Disk(full=True, bound=bound, failures=d.failures), give_back=give)
    bound = d.bound
    if bound is not None:
        bound = max(bound, held - want // 2)  # want <= 0 here: -want is the room
        if limits is not None and bound >= limits.max_bytes - limits.p0_reserve_bytes:
            bound = None
    return DiskStep(Disk(full=False, bound=bound, failures=d.failures))


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

    def evict(self, need: int, rows_max: int | None = None) -> tuple[int, int, list[Key], int]:
        """Take the oldest events until `need` bytes are freed: (events, bytes, receipt keys,
        bytes of them taken from the table). At most `rows_max` bytes come from the table
        (deleting rows writes their pages to the log); the rest from this round's arrivals."""
        count = freed = from_rows = 0
        keys: list[Key] = []
        while freed < need:
            if rows_max is None or from_rows < rows_max:
                self._read(EVICT_CHUNK, False)
            if self.buf and (rows_max is None or from_rows < rows_max):
                _, size, _, key, _ = self._take_row()
                from_rows += size
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
        return count, freed, keys, from_rows

    def exhausted(self) -> bool:
        """Nothing left in the lane: no table rows, no arrivals."""
        return not self.buf and self.unread <= 0 and self.inbox_at >= len(self.inbox)

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
        # the bounds: [buffer]'s, and the disk's on P1/P2 (None: unbounded)
        self.limit_all = limits.max_bytes if limits is not None else None
        self.limit_low = limits.max_bytes - limits.p0_reserve_bytes if limits is not None else None
        if state.disk.bound is not None:
            self.limit_low = state.disk.bound if self.limit_low is None else min(self.limit_low, state.disk.bound)

    def plan(
        self, items: Sequence[Submitted], acks: Sequence[SealedBatch], band_rows: Sequence[tuple[str, int, int]]
    ) -> Plan:
        backlog, batch, uplink = self.backlog, self.batch, self.uplink
        self.inflight -= len(acks)
        oldest_ms = self.before.oldest_ms
        inbox = sorted(items, key=lambda s: s.event.prio)  # stable: arrival order per lane
        if self.before.disk.alarms_only:
            inbox = self._drop_arrivals(inbox)
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
        if self.limit_low is not None and (inbox or self.before.disk.bound is not None):
            self._bound(self.limit_low, self.limit_all)
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

    def _bound(self, limit_low: int, limit_all: int | None) -> None:
        """Evict the oldest P2, then the oldest P1, until the backlog is within its bounds:
        P1/P2 within `limit_low`, everything within `limit_all` (when [buffer] sets it). While
        the disk is full a round deletes at most DISK_EVICT_ROUND bytes of rows (none in a
        retry for alarms only): the rest comes from the round's arrivals, and P1 is touched
        only once P2 has nothing left."""
        backlog, backlog_bytes = self.backlog, self.backlog_bytes
        disk = self.before.disk
        rows_max = (0 if disk.alarms_only else DISK_EVICT_ROUND) if disk.full else None
        for prio in (2, 1):
            need = backlog_bytes[1] + backlog_bytes[2] - limit_low
            if limit_all is not None:
                need = max(need, sum(backlog_bytes) - limit_all)
            if need <= 0:
                return
            lane = self.lanes[prio]
            n, freed, keys, from_rows = lane.evict(need, rows_max)
            backlog[prio] -= n
            backlog_bytes[prio] -= freed
            self.evicted[prio] += n
            self.dropped.extend(keys)
            if rows_max is not None:
                rows_max -= from_rows
                if not lane.exhausted():
                    break
        if limit_all is not None:
            self.over_bound = max(0, sum(backlog_bytes) - limit_all)

    def _drop_arrivals(self, inbox: list[Submitted]) -> list[Submitted]:
        """The disk failed twice in a row: P1/P2 arrivals are evicted as they come (receipt 4),
        P2 named before P1 like every eviction; the alarms go on."""
        for prio in (2, 1):
            for s in inbox:
                ev = s.event
                if ev.prio == prio:
                    self.evicted[prio] += 1
                    if ev.wants_receipts:
                        self.dropped.append(ev.key)
        return [s for s in inbox if s.event.prio == 0]

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
        disk = before.disk
        if disk.failures:
            disk = Disk(disk.full, disk.bound, 0)  # this round commits
        held = bb[0] + bb[1] + bb[2]
        high_water = max(before.high_water, held)
        checkpoint = None
        if disk.full:
            checkpoint = CHECKPOINT_RESET  # the log is reused, not grown, while the disk is full
        elif held == 0 and high_water >= TRUNCATE_AFTER_BYTES:
            checkpoint, high_water = CHECKPOINT_TRUNCATE, 0  # a big backlog drained: the log's disk back
        return Plan(
            state=State(
                backlog=(b[0], b[1], b[2]),
                backlog_bytes=(bb[0], bb[1], bb[2]),
                oldest_ms=oldest_ms if sum(b) else None,
                inflight=self.inflight,
                evicted=evicted,
                gw_seq=gw_seq,
                disk=disk,
                high_water=high_water,
            ),
            delete_batches=[a.seq for a in acks],
            delivered=[k for a in acks for k in a.flagged],
            consumed=[(lane.prio, lane.consumed) for lane in self.lanes if lane.consumed is not None],
            insert=[s.event for lane in self.lanes for s in lane.inbox[lane.inbox_at :]],
            replay=[(d, *row) for d, row in last.items()],
            stored=[s.event.key for s in items if s.event.wants_receipts],
            band_rows=list(band_rows),
            band_alerts=[k for s in items if s.replay_row is None and (k := band_event_key(s.event)) is not None],
            band_open=dict(c for s in items if s.replay_row is None for c in band_open_changes(s.event)),
            dropped=self.dropped,
            seal=self.sealed,
            write_counters=gw_seq != before.gw_seq or evicted != before.evicted,
            over_bound=self.over_bound,
            checkpoint=checkpoint,
        )
