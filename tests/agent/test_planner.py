"""The commit round's planner (agent/gateway/planner.py) against its rules, without SQLite.

A model of the events table (lanes of rows in a list) stands in for the Store: it answers the
planner's reads and applies each plan the way Store.apply does (consumed lane prefixes
deleted, new rows appended). Hypothesis drives runs of many rounds (new events of every lane
and size, PUBACKs in any order, the uplink going down and up, time passing) under small batch
and buffer limits, and every round is checked against the durability and ordering rules of
docs/protocol.md §4 and §4.5. A failing example is printed with its seed (GE_SEED=<n> replays
a run) and its reproduction blob.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from agent.gateway.config import BatchConfig, BufferConfig
from agent.gateway.planner import (
    BACKLOG_BATCHES_PER_ROUND,
    BATCH_OVERHEAD,
    CHECKPOINT_RESET,
    CHECKPOINT_TRUNCATE,
    DISK_EVICT_ROUND,
    P0_RESERVE,
    TRUNCATE_AFTER_BYTES,
    Disk,
    DiskStep,
    Plan,
    Row,
    Space,
    State,
    Submitted,
    after_disk_check,
    after_disk_full,
    plan_round,
    seal_wait,
)
from agent.gateway.signer import SealedBatch
from agent.shared.frames import Event

SEED = int(os.environ.get("GE_SEED") or random.SystemRandom().randrange(2**32))
PROPERTY = settings(max_examples=500, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
TYPE_OF_LANE = (1, 64, 128)  # ALARM (P0), TAMPER (P1), HEARTBEAT (P2)
T0 = 1_700_000_000_000


class Table:
    """The events table: rows per lane in id order, ids from one counter like SQLite's rowid."""

    def __init__(self) -> None:
        self.lanes: list[list[Row]] = [[], [], []]
        self.reads = 0

    def rows(self, prio: int, after: int, limit: int, blobs: bool) -> Sequence[Row]:
        self.reads += 1
        found = [r for r in self.lanes[prio] if r[0] > after][:limit]
        return found if blobs else [(i, size, b"", key, rec) for i, size, _, key, rec in found]

    def apply(self, plan: Plan) -> None:
        for prio, last in plan.consumed:
            self.lanes[prio] = [r for r in self.lanes[prio] if r[0] > last]
        top = max((r[0] for lane in self.lanes for r in lane), default=0)
        for ev in plan.insert:
            top += 1
            key = ev.key if ev.wants_receipts else None
            self.lanes[ev.prio].append((top, len(ev.encoded), ev.encoded, key, ev.received))

    def blobs(self, prio: int) -> list[bytes]:
        return [r[2] for r in self.lanes[prio]]


@dataclass
class Run:
    """One run of rounds: the table, the committer's state, the batches central has not acked."""

    batch: BatchConfig
    limits: BufferConfig | None
    table: Table = field(default_factory=Table)
    state: State = field(default_factory=State)
    unacked: list[SealedBatch] = field(default_factory=list)
    now: int = T0
    next_seq: int = 0
    next_batch: int = 0
    sealed_order: list[list[bytes]] = field(default_factory=lambda: [[], [], []])  # per lane, over the run
    arrived: list[list[bytes]] = field(default_factory=lambda: [[], [], []])
    evicted_blobs: set[bytes] = field(default_factory=set)
    wanting: dict[bytes, tuple[str, int, int]] = field(default_factory=dict)

    def event(self, prio: int, size: int, receipts: bool) -> Submitted:
        self.next_seq += 1
        blob = self.next_seq.to_bytes(4, "big") + bytes([prio]) * (size - 4)
        ev = Event("AP-1", 1, self.next_seq, TYPE_OF_LANE[prio], 0, self.now, {}, b"", 1 if receipts else 0, blob)
        if receipts:
            self.wanting[blob] = ev.key
        self.arrived[prio].append(blob)
        return Submitted(ev, (1, self.next_seq, 0), None)


def lane_of(blob: bytes) -> int:
    return blob[4] if len(blob) > 4 else -1


ROUND = st.tuples(
    st.lists(st.tuples(st.integers(0, 2), st.integers(5, 60), st.booleans()), max_size=14),  # new events
    st.lists(st.integers(0, 20), max_size=3),  # PUBACKs: indexes into the unacked batches
    st.booleans(),  # uplink connected
    st.integers(0, 40),  # ms since the previous round
)
CONFIG = st.tuples(
    st.integers(1, 6),  # max_events
    st.integers(1, 300),  # max_bytes above the overhead
    st.integers(0, 30),  # linger_ms
    st.integers(1, 3),  # window
    st.one_of(st.none(), st.tuples(st.integers(0, 600), st.integers(0, 200))),  # buffer bound, P0 reserve
)


def one_round(run: Run, events: list[tuple[int, int, bool]], acks: list[int], uplink: bool, dt: int) -> None:
    """Plan one round, check it against the rules, apply it to the model."""
    run.now += dt
    b = run.batch
    items = [run.event(p, size, rc) for p, size, rc in events]
    acked: list[SealedBatch] = []
    for i in acks:
        if run.unacked:
            acked.append(run.unacked.pop(i % len(run.unacked)))
    before, lanes_before = run.state, [list(lane) for lane in run.table.lanes]
    pending = [[r[2] for r in lane] for lane in lanes_before]
    for s in sorted(items, key=lambda s: s.event.prio):
        pending[s.event.prio].append(s.event.encoded)
    plan = plan_round(items, acked, [], before, run.table, uplink=uplink, batch=b, limits=run.limits, now_ms=run.now)
    run.table.apply(plan)
    after = plan.state
    sealed = [blob for bp in plan.seal for blob in bp.blobs]

    # nothing is sealed while the uplink is down
    assert uplink or not plan.seal, "sealed with the uplink down"
    # what the plan says about the table is what the table holds
    for p in range(3):
        assert after.backlog[p] == len(run.table.lanes[p]), f"lane {p}: counted {after.backlog[p]}"
        assert after.backlog_bytes[p] == sum(r[1] for r in run.table.lanes[p]), f"lane {p} bytes"
        assert all(r[2] for r in run.table.lanes[p]), "a row was written without its bytes"
    # nothing lost, nothing twice: each lane's events are sealed, evicted or still waiting
    evicted_now = [after.evicted[p] - before.evicted[p] for p in range(3)]
    assert evicted_now[0] == 0, "an alarm was evicted"
    assert len(set(sealed)) == len(sealed), "an event sealed twice"
    gone: list[list[bytes]] = [[], [], []]
    for p in range(3):
        left = run.table.blobs(p)
        taken = pending[p][: len(pending[p]) - len(left)]
        # oldest first: what leaves a lane (sealed or evicted) is its front, what stays its tail
        assert pending[p][len(taken) :] == left, f"lane {p}: what is left is not the lane's tail"
        out_sealed = [x for x in sealed if lane_of(x) == p]
        assert set(out_sealed) <= set(taken), f"lane {p}: sealed something not pending"
        gone[p] = [x for x in taken if x not in set(out_sealed)]
        assert len(gone[p]) == evicted_now[p], f"lane {p}: {len(gone[p])} gone, {evicted_now[p]} counted evicted"
        run.evicted_blobs.update(gone[p])
        run.sealed_order[p].extend(out_sealed)
    # every evicted event that wants receipts gets receipt 4 (P2 evicted first), and only those
    assert plan.dropped == [run.wanting[x] for x in gone[2] + gone[1] if x in run.wanting], "receipt 4"
    assert plan.stored == [s.event.key for s in items if s.event.wants_receipts], "receipt 1 for every new event"
    check_bound(run, plan, evicted_now)
    check_window(run, before, plan, acked, uplink)
    check_p0_first(run, before, plan, items, uplink, len(acked))

    for bp in plan.seal:
        run.next_batch += 1
        run.unacked.append(SealedBatch(1, run.next_batch, b"", b"", len(bp.blobs), bp.prio, bp.flagged))
        assert list(bp.flagged) == [run.wanting[x] for x in bp.blobs if x in run.wanting], "receipt keys of a batch"
        assert bp.prio == lane_of(bp.blobs[0]) and bp.blobs, "a batch's lane is its first event's"
    assert after.inflight == len(run.unacked), "in flight"
    run.state = after


def check_bound(run: Run, plan: Plan, evicted_now: list[int]) -> None:
    """P1/P2 within max_bytes - reserve and everything within max_bytes, unless only alarms are
    left to hold; P2 goes before P1."""
    after = plan.state
    if run.limits is None:
        assert evicted_now == [0, 0, 0] and not plan.dropped
        return
    bb = after.backlog_bytes
    low = run.limits.max_bytes - run.limits.p0_reserve_bytes
    only_alarms = after.backlog[1] == 0 and after.backlog[2] == 0
    assert bb[1] + bb[2] <= low or only_alarms, "P1/P2 over their bound"
    assert sum(bb) <= run.limits.max_bytes or only_alarms, "over the bound with telemetry left to evict"
    if plan.over_bound:
        assert only_alarms, "an overrun reported with telemetry left to evict"
    if plan.insert and sum(bb) > run.limits.max_bytes:
        assert plan.over_bound >= sum(bb) - run.limits.max_bytes, "the alarms' overrun not reported"
    if evicted_now[1]:
        assert after.backlog[2] == 0, "P1 evicted while P2 was left"


def check_window(run: Run, before: State, plan: Plan, acked: list[SealedBatch], uplink: bool) -> None:
    """At most `window` batches in flight, one more for alarms only (the reserve slot)."""
    inflight = before.inflight - len(acked)
    for bp in plan.seal:
        assert inflight < run.batch.window + P0_RESERVE, "sealed past the window and its reserve"
        if inflight >= run.batch.window:
            assert all(lane_of(x) == 0 for x in bp.blobs), "the reserve slot carries alarms only"
        assert len(bp.blobs) <= run.batch.max_events, "batch over max_events"
        size = BATCH_OVERHEAD + sum(len(x) for x in bp.blobs)
        assert size <= run.batch.max_bytes or len(bp.blobs) == 1, "batch over max_bytes"
        inflight += 1


def check_p0_first(run: Run, before: State, plan: Plan, items: list[Submitted], uplink: bool, acks: int) -> None:
    """Alarms never wait for linger or behind telemetry: with room for them they are sealed in
    this round, first; what stays is sealed without waiting in the next."""
    b = run.batch
    room = before.inflight - acks < b.window + P0_RESERVE
    p0_pending = before.backlog[0] > 0 or any(s.event.prio == 0 for s in items)
    if uplink and p0_pending and room:
        assert plan.seal and lane_of(plan.seal[0].blobs[0]) == 0, "an alarm with room was not sealed first"
    cap = b.window + 1 if items else BACKLOG_BATCHES_PER_ROUND
    if uplink and plan.state.backlog[0]:
        no_room = plan.state.inflight >= b.window + P0_RESERVE
        assert no_room or len(plan.seal) >= cap, "an alarm left behind with room for it"
        if not no_room:
            assert seal_wait(plan.state, [], True, b, run.now) == 0.0, "a waiting alarm lingers"


@seed(SEED)
@PROPERTY
@given(config=CONFIG, rounds=st.lists(ROUND, min_size=1, max_size=25))
def test_rounds_keep_the_rules(config: tuple[int, int, int, int, tuple[int, int] | None], rounds: list) -> None:
    note(f"GE_SEED={SEED}")
    max_events, extra, linger, window, bound = config
    limits = BufferConfig(max_bytes=bound[0], p0_reserve_bytes=min(bound[1], bound[0])) if bound else None
    run = Run(BatchConfig(max_events, BATCH_OVERHEAD + extra, linger, window), limits)
    for events, acks, uplink, dt in rounds:
        one_round(run, events, acks, uplink, dt)
    # over the whole run each lane is sealed in arrival order, skipping only evicted events
    for p in range(3):
        expect = [x for x in run.arrived[p] if x not in run.evicted_blobs][: len(run.sealed_order[p])]
        assert run.sealed_order[p] == expect, f"lane {p} sealed out of order"
    # and with the uplink up and everything acknowledged, draining ends with nothing left
    for _ in range(1000):
        if not sum(run.state.backlog):
            break
        one_round(run, [], [0] * len(run.unacked), True, run.batch.linger_ms + 1)
    assert sum(run.state.backlog) == 0, "the backlog did not drain"


# --- the rules one at a time ------------------------------------------------------------------

BATCH = BatchConfig(max_events=100, max_bytes=10_000, linger_ms=20, window=2)


def plan(run: Run, items: list[Submitted], uplink: bool = True) -> Plan:
    out = plan_round(
        items, [], [], run.state, run.table, uplink=uplink, batch=run.batch, limits=run.limits, now_ms=run.now
    )
    run.table.apply(out)
    run.state = out.state
    return out


def test_a_new_alarm_gets_a_batch_of_its_own_before_queued_telemetry() -> None:
    run = Run(BATCH, None)
    plan(run, [run.event(2, 20, False) for _ in range(5)], uplink=False)
    alarm = run.event(0, 20, True)
    out = plan(run, [alarm, run.event(2, 20, False)])
    assert [bp.blobs for bp in out.seal] == [[alarm.event.encoded]]
    assert out.seal[0].flagged == (alarm.event.key,)
    assert out.consumed == [], "the alarm's round takes nothing from the events table"
    assert out.state.backlog == (0, 0, 6), "the telemetry waits, the new one behind the old"


def test_telemetry_waits_for_linger_alarms_do_not() -> None:
    run = Run(BATCH, None)
    out = plan(run, [run.event(2, 20, False), run.event(1, 20, False)])
    assert not out.seal and out.state.backlog == (0, 1, 1) and out.state.oldest_ms == run.now
    assert seal_wait(run.state, [], True, BATCH, run.now + 5) == 0.015
    run.now += 19
    assert not plan(run, []).seal, "linger not over"
    run.now += 1
    out = plan(run, [])
    assert [lane_of(x) for x in out.seal[0].blobs] == [1, 2], "one batch, lane order"
    assert out.state.backlog == (0, 0, 0) and out.state.oldest_ms is None and out.consumed == [(1, 1), (2, 2)]
    alarm = run.event(0, 20, False)
    assert seal_wait(run.state, [alarm], True, BATCH, run.now) == 0.0
    assert [bp.blobs for bp in plan(run, [alarm]).seal] == [[alarm.event.encoded]]


def test_a_busy_round_is_sealed_from_the_inbox_without_touching_the_table() -> None:
    run = Run(BATCH, None)
    items = [run.event(2, 20, False) for _ in range(25)]  # a quarter batch
    out = plan(run, items)
    assert [len(bp.blobs) for bp in out.seal] == [25] and out.insert == [] and out.consumed == []
    assert run.table.reads == 0


def test_seal_wait() -> None:
    run = Run(BATCH, None)
    telemetry, alarm = run.event(2, 20, False), run.event(0, 20, False)
    assert seal_wait(State(), [], True, BATCH, T0) is None, "nothing to seal"
    assert seal_wait(State(), [alarm], False, BATCH, T0) is None, "uplink down"
    assert seal_wait(State(inflight=2), [telemetry], True, BATCH, T0) is None, "window full"
    assert seal_wait(State(inflight=2), [alarm], True, BATCH, T0) == 0.0, "the reserve slot"
    assert seal_wait(State(inflight=3), [alarm], True, BATCH, T0) is None, "reserve used too"
    full = State(backlog=(0, 0, 100), backlog_bytes=(0, 0, 2000), oldest_ms=T0)
    assert seal_wait(full, [], True, BATCH, T0) == 0.0, "a full batch does not linger"
    assert seal_wait(State(backlog=(0, 0, 1), oldest_ms=T0 - 50), [], True, BATCH, T0) == 0.0


def test_evicted_events_are_written_nowhere_and_get_receipt_4() -> None:
    # 10-byte events; P1/P2 may hold 30 bytes, everything 40
    run = Run(BATCH, BufferConfig(max_bytes=40, p0_reserve_bytes=10))
    old = [run.event(2, 10, True), run.event(1, 10, True), run.event(2, 10, False)]
    plan(run, old, uplink=False)
    new = [run.event(2, 10, True), *(run.event(0, 10, i == 0) for i in range(3))]
    out = plan(run, new, uplink=False)
    assert out.dropped == [old[0].event.key, new[0].event.key], "the oldest P2 first, up to the new one"
    assert out.insert == [s.event for s in new[1:]], "the evicted new event is never written"
    assert out.consumed == [(2, 3)]
    assert out.state.backlog == (3, 1, 0) and out.state.evicted == (0, 0, 3) and out.write_counters
    assert out.stored == [new[0].event.key, new[1].event.key], "receipt 1, then 4: the ledger keeps the last"
    out = plan(run, [run.event(0, 10, False) for _ in range(5)], uplink=False)
    assert out.dropped == [old[1].event.key], "then P1"
    assert out.state.backlog == (8, 0, 0) and out.state.evicted == (0, 1, 3), "alarms are kept"
    assert out.over_bound == 40


# --- the disk (docs/protocol.md §4.6) ---------------------------------------------------------

KIB = 1024
SPACE = Space(free=0, reserve=512 * KIB, reserve_target=512 * KIB, wal=300 * KIB, wal_bound=256 * KIB, free_pages=0)
HELD = State(backlog=(5, 10, 1000), backlog_bytes=(1000, 20 * KIB, 2000 * KIB))
LIMITS = BufferConfig(max_bytes=64 << 20, p0_reserve_bytes=8 << 20)


def test_a_first_failure_lowers_the_p1p2_bound_within_the_logs_room() -> None:
    step = after_disk_full(HELD, SPACE)
    held = 2020 * KIB
    assert step.disk == Disk(full=True, bound=held - 100 * KIB, failures=1), (
        "an eighth, at most a third of the log's room"
    )
    assert step.release == 0 and step.retry
    roomy = after_disk_full(HELD, replace(SPACE, wal=8 << 20))
    assert roomy.disk.bound == held - held // 8
    small = after_disk_full(State(backlog_bytes=(0, 0, 10 * KIB)), SPACE)
    assert small.disk.bound == 0, "at least DISK_EVICT_MIN: everything, here"
    again = after_disk_full(replace(HELD, disk=Disk(full=True, bound=1000 * KIB)), SPACE)
    assert again.disk.bound == 1000 * KIB - 100 * KIB, "from the bound it has, not from what is held"


def test_a_failure_right_after_gives_up_part_of_the_reserve_for_alarms_only() -> None:
    failed = replace(HELD, disk=Disk(full=True, bound=1900 * KIB, failures=1))
    step = after_disk_full(failed, SPACE)
    assert step.disk == Disk(full=True, bound=1900 * KIB, failures=2) and step.disk.alarms_only
    assert step.release == 64 * KIB and step.retry, "an eighth of the target"
    last = after_disk_full(replace(failed, disk=step.disk), replace(SPACE, reserve=10 * KIB))
    assert last.release == 10 * KIB and last.retry, "what is left"
    gone = after_disk_full(replace(failed, disk=last.disk), replace(SPACE, reserve=0))
    assert gone.release == 0 and not gone.retry, "nothing left to give: the round waits with backoff"
    assert gone.disk.failures == 4


def test_space_coming_back_restores_the_reserve_then_the_disk_then_the_bound() -> None:
    full = replace(HELD, disk=Disk(full=True, bound=1900 * KIB))
    short = replace(SPACE, reserve=448 * KIB)
    # the reserve first, once the disk has it and the log's margin (2 x its bound) besides
    assert after_disk_check(full, replace(short, free=64 * KIB + 512 * KIB), LIMITS) == DiskStep(
        full.disk, restore=True
    )
    # until then free pages go back to the filesystem, and P1/P2 give way for what they lack
    step = after_disk_check(full, replace(short, free=100 * KIB, free_pages=200 * KIB), LIMITS)
    assert step.give_back == 200 * KIB and step.disk.full
    assert step.disk.bound == 1900 * KIB - (576 - 100 - 200) * KIB
    step = after_disk_check(full, replace(short, free=100 * KIB, free_pages=900 * KIB), LIMITS)
    assert step.give_back == 476 * KIB and step.disk.bound == 1900 * KIB, "enough free pages: the bound stays"
    # the reserve whole and the margin free: not full; P1/P2 may grow into half the room
    step = after_disk_check(full, replace(SPACE, free=512 * KIB + 400 * KIB), LIMITS)
    assert step.disk == Disk(full=False, bound=2020 * KIB + 200 * KIB)
    assert after_disk_check(full, replace(SPACE, free=256 << 20), LIMITS).disk == Disk(), "the bound lifted"
    # a tight disk that never failed is left alone
    bounded = replace(HELD, disk=Disk(bound=1900 * KIB))
    assert after_disk_check(bounded, replace(SPACE, free=0, free_pages=1 << 20), LIMITS) == DiskStep(bounded.disk)


def test_alarms_only_rounds_drop_p1p2_arrivals_and_keep_every_alarm() -> None:
    run = Run(BATCH, LIMITS)
    plan(run, [run.event(2, 20, False) for _ in range(4)], uplink=False)
    run.state = replace(run.state, disk=Disk(full=True, bound=1 << 20, failures=2))
    alarm, p1, p2 = run.event(0, 20, True), run.event(1, 20, True), run.event(2, 20, False)
    out = plan(run, [p2, alarm, p1], uplink=True)
    assert [bp.blobs for bp in out.seal] == [[alarm.event.encoded]], "the alarm is sealed at once"
    assert out.insert == [] and out.consumed == [], "nothing else written, no row deleted"
    assert out.dropped == [p1.event.key] and out.state.evicted == (0, 1, 1)
    assert out.state.disk == Disk(full=True, bound=1 << 20, failures=0), "it committed"
    assert out.checkpoint == CHECKPOINT_RESET, "while full the log is reused, not grown"


def test_a_full_disk_evicts_a_little_each_round_p2_before_p1() -> None:
    run = Run(BatchConfig(max_events=10_000, max_bytes=1 << 24, linger_ms=20, window=2), LIMITS)
    plan(run, [run.event(1, 1000, True) for _ in range(10)], uplink=False)
    plan(run, [run.event(2, 1000, False) for _ in range(200)], uplink=False)
    run.state = replace(run.state, disk=Disk(full=True, bound=0))
    arrivals = [run.event(2, 1000, False) for _ in range(3)]
    out = plan(run, arrivals, uplink=False)
    assert out.consumed == [(2, 11 + DISK_EVICT_ROUND // 1000)], "at most DISK_EVICT_ROUND of rows"
    assert out.insert == [], "arrivals past the bound are evicted as they come"
    assert out.state.backlog == (0, 10, 200 - 1 - DISK_EVICT_ROUND // 1000)
    assert out.state.evicted == (0, 0, 3 + 1 + DISK_EVICT_ROUND // 1000)
    while run.state.backlog[2]:
        p2 = run.state.backlog[2]
        out = plan(run, [], uplink=False)
        assert p2 - out.state.backlog[2] <= 1 + DISK_EVICT_ROUND // 1000, "a little each round"
        assert out.state.backlog[1] == 10 or not out.state.backlog[2], "P1 waits for P2 to be gone"
    while run.state.backlog[1]:
        out = plan(run, [], uplink=False)
    assert out.state.evicted[1] == 10 and len(out.dropped) >= 1, "then P1, with receipt 4"


def test_a_drained_big_backlog_truncates_the_log_once() -> None:
    run = Run(BatchConfig(max_events=1000, max_bytes=1 << 24, linger_ms=0, window=100), None)
    plan(run, [run.event(2, 5000, False) for _ in range(TRUNCATE_AFTER_BYTES // 5000 + 1)], uplink=False)
    checkpoints = []
    for _ in range(10):
        checkpoints.append(plan(run, [], uplink=True).checkpoint)
        if not sum(run.state.backlog):
            break
    assert checkpoints[-1] == CHECKPOINT_TRUNCATE and checkpoints.count(CHECKPOINT_TRUNCATE) == 1
    assert run.state.high_water == 0
    assert plan(run, [run.event(2, 10, False)], uplink=True).checkpoint is None, "a small one does not"


DISKS = st.one_of(
    st.just(Disk()),
    st.builds(
        Disk,
        full=st.booleans(),
        bound=st.one_of(st.none(), st.integers(0, 400)),
        failures=st.integers(0, 3),
    ),
)


@seed(SEED)
@PROPERTY
@given(config=CONFIG, rounds=st.lists(st.tuples(ROUND, DISKS), min_size=1, max_size=25))
def test_disk_rounds_never_lose_an_alarm(
    config: tuple[int, int, int, int, tuple[int, int] | None], rounds: list
) -> None:
    """Under any disk state, every alarm that arrives is written or sealed and none is evicted;
    an alarms-only round keeps no P1/P2 arrival; a full disk deletes few rows per round, P1
    rows only once P2 is gone; every evicted event that wants receipts is named for receipt 4."""
    note(f"GE_SEED={SEED}")
    max_events, extra, linger, window, bound = config
    limits = BufferConfig(max_bytes=bound[0], p0_reserve_bytes=min(bound[1], bound[0])) if bound else None
    run = Run(BatchConfig(max_events, BATCH_OVERHEAD + extra, linger, window), limits)
    for (events, acks, uplink, dt), disk in rounds:
        run.now += dt
        run.state = replace(run.state, disk=disk)
        items = [run.event(p, size, rc) for p, size, rc in events]
        acked = [run.unacked.pop(i % len(run.unacked)) for i in acks if run.unacked]
        before = [list(lane) for lane in run.table.lanes]
        out = plan_round(
            items, acked, [], run.state, run.table, uplink=uplink, batch=run.batch, limits=limits, now_ms=run.now
        )
        run.table.apply(out)
        run.state = out.state
        sealed = {blob for bp in out.seal for blob in bp.blobs}
        written = {ev.encoded for ev in out.insert}
        kept = sealed | written
        for s in items:
            blob = s.event.encoded
            if s.event.prio == 0:
                assert blob in kept, "an alarm was neither written nor sealed"
            elif disk.alarms_only:
                assert blob not in kept, "a P1/P2 arrival kept in an alarms-only round"
        rows_out = {p: [r for r in before[p] if r not in run.table.lanes[p]] for p in range(3)}
        evicted_rows = {p: [r for r in rows_out[p] if r[2] not in sealed] for p in range(3)}
        assert not evicted_rows[0], "an alarm row evicted"
        if disk.full:
            deleted = sum(r[1] for p in (1, 2) for r in evicted_rows[p])
            assert deleted <= DISK_EVICT_ROUND + 60, f"{deleted} bytes of rows evicted in one full round"
            if evicted_rows[1]:
                assert not run.table.lanes[2], "P1 rows evicted while P2 rows were left"
        evicted_new = [s.event for s in items if s.event.encoded not in kept]
        dropped = {s.key for s in evicted_new if s.wants_receipts}
        dropped |= {r[3] for p in (1, 2) for r in evicted_rows[p] if r[3] is not None}
        assert set(out.dropped) == dropped, "receipt 4 for exactly the evicted events that want it"
        assert out.state.disk.failures == 0 and (out.checkpoint == CHECKPOINT_RESET) == disk.full
        for bp in out.seal:
            run.next_batch += 1
            run.unacked.append(SealedBatch(1, run.next_batch, b"", b"", len(bp.blobs), bp.prio, bp.flagged))
