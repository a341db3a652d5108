"""Group commit: the one thread that writes the buffer.

    event loop                               committer thread
    Pipeline ---submit / submit_group--+
    Uplink -----ack / set_uplink-------+--> CommitInbox --> plan_round() (agent/gateway/planner.py)
    CommandHandler --set_batch---------+                    seal the plan's batches (agent/gateway/signer.py)
                                                            Store.apply(): one transaction, one fsync
    Pipeline.on_commit(CommitResult) <--call_soon_threadsafe--+

Accepted events queue up in the inbox while the previous round is being fsynced; each round
then takes all of them, with central's acknowledgements and the wristband counters that came
in meanwhile, and writes the events, the replay state that admitted them, receipt-ledger
rows, acknowledged batches and newly sealed batches in ONE transaction with ONE fsync. The
result goes back to the event loop (receipt 1, PUBACKs to the local broker, batches to
publish). What a round does is decided by the planner; its rules are in agent/gateway/planner.py.

Sealing happens here, so a batch is durable before it is published and a restart resends the
same bytes. A round whose transaction fails changes nothing: its input goes back to the front
of the inbox and the chain is rewound. For want of disk space (SQLITE_FULL) the store makes
room (a checkpoint) and the planner decides what gives way (`after_disk_full`: P2, then P1,
then part of the alarms' reserve); the round is retried at once while that changes anything.
Otherwise (an I/O error, or nothing left to give) it is retried with backoff while the
pipeline reports the error. While the disk is full or bounds P1/P2 the committer looks at the
space between rounds (`after_disk_check`), and every `DISK_REPORT_S` otherwise, for the
operator (GATEWAY_HEARTBEAT, metrics).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent.gateway.buffer import Recovered, Store
from agent.gateway.config import BatchConfig, BufferConfig
from agent.gateway.planner import (
    BACKLOG_BATCHES_PER_ROUND,
    Disk,
    DiskStep,
    LivenessRow,
    Space,
    State,
    Submitted,
    after_disk_check,
    after_disk_full,
    plan_round,
    seal_wait,
)
from agent.gateway.signer import SealedBatch, Signer
from agent.gateway.stats import DiskReport
from agent.shared.errors import StoreError
from agent.shared.log import Throttle

log = logging.getLogger(__name__)

# The pause after a drain round (a round that only sealed batches from the events table),
# ended by any new event; see BACKLOG_BATCHES_PER_ROUND in agent/gateway/planner.py.
DRAIN_PAUSE_S = 0.004
# A trickle of telemetry waits this many events at most for the group-commit wait.
_GROUP_MAX = 64
# How often the space is looked at while the disk is full or bounds P1/P2, and otherwise
# (for the operator only: one statvfs).
DISK_CHECK_S = 1.0
DISK_REPORT_S = 10.0


@dataclass(slots=True)
class CommitResult:
    """What one round did, for the event loop (Pipeline.on_commit)."""

    committed: list[Submitted] = field(default_factory=list)
    sealed: list[SealedBatch] = field(default_factory=list)
    sealed_oldest: list[int] = field(default_factory=list)  # per sealed batch: receive time of its oldest event
    backlog: tuple[int, int, int] = (0, 0, 0)
    backlog_bytes: tuple[int, int, int] = (0, 0, 0)
    oldest_ms: int | None = None  # receive time of the oldest event not yet sealed
    evicted: tuple[int, int, int] = (0, 0, 0)  # totals per lane, persisted
    dropped: list[tuple[str, int, int]] = field(default_factory=list)  # evicted events that want receipts
    commit_ms: float = 0.0
    error: str | None = None
    disk: DiskReport | None = None  # the disk as last measured, when that changed


def recovered_state(rec: Recovered, disk: Disk | None = None) -> State:
    """The committer's state after a restart, from what the buffer holds. `disk`: full when the
    alarms' reserve could not be made whole at start; P1/P2 may then hold what they hold."""
    b, bb, ev = rec.backlog, rec.backlog_bytes, rec.evicted
    if disk is not None and disk.full and disk.bound is None:
        disk = Disk(full=True, bound=bb[1] + bb[2])
    return State(
        backlog=(b[0], b[1], b[2]),
        backlog_bytes=(bb[0], bb[1], bb[2]),
        oldest_ms=(rec.oldest_received or 0) if sum(b) else None,
        inflight=len(rec.batches),
        evicted=(ev[0], ev[1], ev[2]),
        gw_seq=rec.gw_seq,
        disk=disk or Disk(),
        high_water=sum(bb),
    )


class CommitInbox:
    """What the event loop hands the committer thread; every method is safe to call from the loop.

    The committer (this module) is its one reader: it takes everything at the start of a round.
    """

    def __init__(self, batch: BatchConfig) -> None:
        self._cv = threading.Condition()
        self._items: deque[Submitted] = deque()
        self._acks: deque[SealedBatch] = deque()
        self._band_rows: deque[tuple[str, int, int]] = deque()  # wristband advert counters (band_replay)
        self._liveness: deque[LivenessRow] = deque()  # device liveness (agent/gateway/liveness.py)
        self._batch = batch
        self._uplink = False
        self._stopping = False

    def submit(self, item: Submitted) -> None:
        with self._cv:
            self._items.append(item)
            if len(self._items) == 1:
                self._cv.notify()

    def submit_group(
        self, items: list[Submitted], band_rows: list[tuple[str, int, int]], liveness: list[LivenessRow] | None = None
    ) -> None:
        """Queue events with the rows that go with them: one transaction.

        band_rows: (band, counter, seen_ms) from BandResolver.take_rows() (agent/gateway/wristbands/source.py);
        liveness: device liveness rows (agent/gateway/liveness.py), with or without an event.
        """
        with self._cv:
            self._items.extend(items)
            self._band_rows.extend(band_rows)
            if liveness:
                self._liveness.extend(liveness)
            self._cv.notify()

    def ack(self, batch: SealedBatch) -> None:
        """Central acknowledged `batch`: delete it and mark its events delivered."""
        with self._cv:
            self._acks.append(batch)
            self._cv.notify()

    def set_uplink(self, connected: bool) -> None:
        """Batches are sealed only while the uplink is connected."""
        with self._cv:
            self._uplink = connected
            self._cv.notify()

    def set_batch(self, batch: BatchConfig) -> None:
        """New batch settings (central's CONFIG command), in force from the next round."""
        with self._cv:
            self._batch = batch
            self._cv.notify()

    def _empty(self) -> bool:
        return not self._items and not self._acks and not self._band_rows and not self._liveness

    def _take(self) -> _Taken:
        taken = _Taken(list(self._items), list(self._acks), list(self._band_rows), list(self._liveness))
        self._items.clear()
        self._acks.clear()
        self._band_rows.clear()
        self._liveness.clear()
        return taken

    def _put_back(self, taken: _Taken) -> None:
        with self._cv:
            self._items.extendleft(reversed(taken.items))
            self._acks.extendleft(reversed(taken.acks))
            self._band_rows.extendleft(reversed(taken.band_rows))
            self._liveness.extendleft(reversed(taken.liveness))


@dataclass(slots=True)
class _Taken:
    """What one commit round takes from the inbox."""

    items: list[Submitted]
    acks: list[SealedBatch]
    band_rows: list[tuple[str, int, int]]
    liveness: list[LivenessRow]


class Committer:
    """Owns the Store from its own thread; the event loop talks to it through the CommitInbox."""

    def __init__(
        self,
        store: Store,
        sealer: Signer,
        inbox: CommitInbox,
        *,
        state: State,
        loop: asyncio.AbstractEventLoop,
        on_result: Callable[[CommitResult], None],
        limits: BufferConfig | None = None,
        commit_wait_ms: float = 0.0,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.inbox = inbox
        self.state = state  # written by the committer thread only, once it runs
        self.loop = loop
        self.on_result = on_result
        self.limits = limits
        self.commit_wait = commit_wait_ms / 1000.0
        self.disk_check_s = DISK_CHECK_S
        self._over_bound = Throttle()
        self._disk_log = Throttle()
        self._next_disk = 0.0  # monotonic time of the next look at the space
        self._disk_report: DiskReport | None = None
        self._checkpoint: str | None = None  # the last round's plan asked for it
        self._episodes = 0  # times the disk became full since the start
        self._full_s = 0.0  # seconds it was full, episodes that ended
        self._full_since: float | None = None  # monotonic time the current episode began
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    def start(self) -> None:
        self._report_disk()  # the disk as the agent starts: the first heartbeat carries it
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then end the thread."""
        inbox = self.inbox
        with inbox._cv:
            inbox._stopping = True
            inbox._cv.notify()
        self._thread.join(timeout)

    # --- committer thread ----------------------------------------------------------

    def _wait_for_work(self, draining: bool) -> bool:
        """Block until a round has something to do; False once stopped with nothing left.

        Called with the inbox's lock held.
        """
        inbox = self.inbox
        if draining:
            # a breath between backlog rounds for the event loop and the brokers; a new event
            # (an alarm) ends it at once
            deadline = time.monotonic() + DRAIN_PAUSE_S
            while not inbox._items and not inbox._stopping and (left := deadline - time.monotonic()) > 0:
                inbox._cv.wait(left)
        while True:
            wait = seal_wait(self.state, inbox._items, inbox._uplink, inbox._batch, int(time.time() * 1000))
            if not inbox._empty() or wait == 0.0 or inbox._stopping:
                break
            due = self._disk_due()
            if due == 0.0:
                break  # a round without events: evictions toward the disk's bound, a look at the space
            inbox._cv.wait(due if wait is None else wait if due is None else min(wait, due))
        if inbox._stopping and inbox._empty():
            return False
        if (
            self.commit_wait
            and inbox._items
            and not inbox._acks
            and not inbox._stopping
            and len(inbox._items) < _GROUP_MAX
            and not any(s.event.prio == 0 for s in inbox._items)
        ):
            # bounded wait so that a trickle of telemetry shares one fsync
            inbox._cv.wait(self.commit_wait)
        return True

    def _run(self) -> None:
        inbox = self.inbox
        backoff = 0.1
        draining = False  # the last round only sealed batches from the events table
        while True:
            with inbox._cv:
                if not self._wait_for_work(draining):
                    return
                taken = inbox._take()
                uplink, batch = inbox._uplink, inbox._batch
            try:
                result = self._commit(taken, uplink, batch)
            except StoreError as exc:
                inbox._put_back(taken)
                retry = exc.full and self._disk_full(exc)
                self.loop.call_soon_threadsafe(self.on_result, CommitResult(error=str(exc), disk=self._disk_report))
                if retry:
                    continue
                log.error("commit_failed reason=%r retry_in_s=%.1f", str(exc), backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            draining = not taken.items and (len(result.sealed) >= BACKLOG_BATCHES_PER_ROUND or self._disk_due() == 0.0)
            self.loop.call_soon_threadsafe(self.on_result, result)
            # the disk's work after the round's results are on their way: receipts and batches
            # do not wait for a checkpoint
            self._after_round()

    def _after_round(self) -> None:
        mode, self._checkpoint = self._checkpoint, None
        if mode is not None:
            try:
                self.store.checkpoint(mode, may_release=self.state.disk.full)
            except StoreError as exc:  # the round is durable; the next one meets the disk
                log.warning("checkpoint_failed mode=%s reason=%r", mode, str(exc))
        self._report_disk()

    def _report_disk(self) -> None:
        """When it is time, look at the disk; a change goes to the event loop as a result that
        leaves every other counter as it is."""
        news = self._watch_disk()
        if news is not None:
            st = self.state
            report = CommitResult(
                backlog=st.backlog,
                backlog_bytes=st.backlog_bytes,
                oldest_ms=st.oldest_ms,
                evicted=st.evicted,
                disk=news,
            )
            self.loop.call_soon_threadsafe(self.on_result, report)

    # --- the disk (decisions: agent/gateway/planner.py after_disk_full, after_disk_check) ---

    def _disk_full(self, exc: StoreError) -> bool:
        """A round failed for want of space: make room, decide what gives way; True to retry at once."""
        store = self.store
        try:
            space = store.make_room()
        except StoreError as err:
            log.error("disk_make_room_failed reason=%r", str(err))
            return False
        before = self.state.disk
        step = after_disk_full(self.state, space)
        if step.release:
            store.release_reserve(step.release)
        self.state = replace(self.state, disk=step.disk)
        self._next_disk = min(self._next_disk, time.monotonic() + self.disk_check_s)
        self._report(space, step.disk)
        suppressed = self._disk_log.allow("full")
        if not before.full or suppressed is not None:
            log.error(
                "disk_full path=%s free_bytes=%d reserve_bytes=%d wal_bytes=%d backlog_bytes=%s"
                " p1p2_bound=%d failures=%d alarms_only=%d retry=%d reason=%r suppressed_since_last=%d",
                store.path,
                space.free,
                store.reserve.size if store.reserve is not None else 0,
                space.wal,
                list(self.state.backlog_bytes),
                step.disk.bound or 0,
                step.disk.failures,
                step.disk.alarms_only,
                step.retry,
                str(exc),
                suppressed or 0,
            )
        return step.retry

    def _disk_due(self) -> float | None:
        """Seconds until a round is due for the disk's sake (0: now), None while it needs none:
        while the disk is full or bounds P1/P2, a look at the space every disk_check_s, and
        rounds one after the other (with the drain's pause) while P1/P2 are over the bound."""
        d = self.state.disk
        if not d.full and d.bound is None:
            return None
        bb = self.state.backlog_bytes
        if d.bound is not None and bb[1] + bb[2] > d.bound:
            return 0.0
        return max(0.0, self._next_disk - time.monotonic())

    def _watch_disk(self) -> DiskReport | None:
        """After a committed round: look at the space when it is time (often while the disk is
        full or bounds P1/P2); the report when it changed."""
        now = time.monotonic()
        if now < self._next_disk:
            return None
        disk = self.state.disk
        watching = disk.full or disk.bound is not None
        self._next_disk = now + (self.disk_check_s if watching else DISK_REPORT_S)
        store = self.store
        try:
            space = store.space()
            if watching:
                step = after_disk_check(self.state, space, self.limits)
                self._disk_step(step)
                if step.restore or step.give_back:
                    space = store.space()
        except StoreError as exc:
            log.error("disk_check_failed reason=%r", str(exc))
            return None
        before = self._disk_report
        report = self._report(space, self.state.disk)
        return report if report != before else None

    def _disk_step(self, step: DiskStep) -> None:
        store, before = self.store, self.state.disk
        log.debug("disk_check backlog_bytes=%s before=%s step=%s", list(self.state.backlog_bytes), before, step)
        if step.give_back:
            store.give_back(step.give_back)
        if step.restore:
            store.restore_reserve()
        self.state = replace(self.state, disk=step.disk)
        after = step.disk
        if before.full and not after.full:
            log.warning("disk_space_returned path=%s p1p2_bound=%s", store.path, after.bound)
        elif before.bound is not None and after.bound is None:
            log.info("disk_bound_lifted path=%s", store.path)

    def _report(self, space: Space, disk: Disk) -> DiskReport:
        """The disk for the operator; counts the times it became full and the time spent full."""
        now = time.monotonic()
        if disk.full and self._full_since is None:
            self._full_since = now
            self._episodes += 1
        elif not disk.full and self._full_since is not None:
            self._full_s += now - self._full_since
            self._full_since = None
        full_s = self._full_s + (now - self._full_since if self._full_since is not None else 0.0)
        reserve = self.store.reserve
        self._disk_report = report = DiskReport(
            full=disk.full,
            free=space.free,
            reserve=reserve.size if reserve is not None else 0,
            reserve_target=space.reserve_target,
            bound=disk.bound,
            episodes=self._episodes,
            full_s=int(full_s),
        )
        return report

    def _commit(self, taken: _Taken, uplink: bool, batch: BatchConfig) -> CommitResult:
        """One round: plan, seal and apply in one transaction; the chain is rewound on failure."""
        t0 = time.perf_counter()
        now_ms = int(time.time() * 1000)
        store, sealer = self.store, self.sealer
        chain = (sealer.seq, sealer.prev)
        try:
            with store.transaction():
                plan = plan_round(
                    taken.items,
                    taken.acks,
                    taken.band_rows,
                    self.state,
                    store,
                    uplink=uplink,
                    batch=batch,
                    limits=self.limits,
                    now_ms=now_ms,
                    liveness=taken.liveness,
                )
                sealed = [sealer.seal(b.blobs, now_ms, b.prio, b.flagged) for b in plan.seal]
                store.apply(plan, sealed, (sealer.epoch, sealer.seq, sealer.prev))
        except BaseException:
            sealer.seq, sealer.prev = chain
            raise
        self.state = st = plan.state
        self._checkpoint = plan.checkpoint
        if plan.over_bound:
            suppressed = self._over_bound.allow("p0")
            if suppressed is not None:
                log.warning(
                    "buffer_over_bound alarms_bytes=%d max_bytes=%d over=%d suppressed_since_last=%d",
                    st.backlog_bytes[0],
                    self.limits.max_bytes if self.limits is not None else 0,
                    plan.over_bound,
                    suppressed,
                )
        return CommitResult(
            committed=taken.items,
            sealed=sealed,
            sealed_oldest=[b.oldest for b in plan.seal],
            backlog=st.backlog,
            backlog_bytes=st.backlog_bytes,
            oldest_ms=st.oldest_ms,
            evicted=st.evicted,
            dropped=plan.dropped,
            commit_ms=(time.perf_counter() - t0) * 1000,
        )
