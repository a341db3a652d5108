"""The buffer and its group-commit thread, driven directly (no MQTT)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.gateway.buffer import Recovered, Store
from agent.gateway.committer import CommitInbox, CommitResult, Committer, recovered_state
from agent.gateway.config import BatchConfig, BufferConfig
from agent.gateway.planner import Submitted
from agent.gateway.replay import ReplayState
from agent.gateway.signer import SealedBatch, Signer
from agent.shared import cose
from agent.shared.frames import Event
from agent.shared.protocol import AAD_BATCH

KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
KEYS = {b"GW-T": KEY.public_key()}


def event(seq: int, typ: int, device: str = "AP-1", flags: int = 0, received: int = 1) -> Event:
    return Event(device, 1, seq, typ, seq * 10, received, {}, seq.to_bytes(8, "big"), flags)


class Harness:
    def __init__(self, committer: Committer, store: Store, results: asyncio.Queue[CommitResult]) -> None:
        self.committer = committer
        self.inbox = committer.inbox
        self.store = store
        self.results = results
        self.acked: list[int] = []

    def submit(self, *events: Event) -> None:
        # all at once, as a source's burst arrives: one commit round takes them together
        items = []
        for ev in events:
            st = ReplayState(ev.boot, ev.seq, 0)
            items.append(Submitted(ev, st.as_row(), lambda ev=ev: self.acked.append(ev.seq)))
        self.inbox.submit_group(items, [])

    async def next_result(self, within: float = 5.0) -> CommitResult:
        """The next commit round's result (the disk's reports between rounds are skipped)."""
        while True:
            res = await asyncio.wait_for(self.results.get(), within)
            if not (res.disk is not None and not res.committed and not res.sealed and res.error is None):
                return res

    async def committed(self, n: int, within: float = 5.0) -> CommitResult:
        """The result of the commit round that made `n` more events durable (the submitted
        events may be split over several rounds: the committer does not wait for a group)."""
        done = 0
        while True:
            res = await self.next_result(within)
            done += len(res.committed)
            if done >= n:
                return res

    async def sealed(self, n: int, within: float = 5.0) -> list[SealedBatch]:
        got: list[SealedBatch] = []
        while len(got) < n:
            got.extend((await self.next_result(within)).sealed)
        return got


def committer_for(
    store: Store, rec: Recovered, batch: BatchConfig, limits: BufferConfig | None
) -> tuple[Committer, asyncio.Queue[CommitResult]]:
    """A committer over `store` as a restart finds it (not started), and the queue its results go to."""
    results: asyncio.Queue[CommitResult] = asyncio.Queue()

    def on_result(result: CommitResult) -> None:
        # what Pipeline.on_commit does first: release the source's acknowledgements
        for s in result.committed:
            s.token()
        results.put_nowait(result)

    committer = Committer(
        store,
        Signer(KEY, "GW-T", rec.epoch, rec.seq, rec.prev),
        CommitInbox(batch),
        state=recovered_state(rec),
        loop=asyncio.get_running_loop(),
        on_result=on_result,
        limits=limits,
    )
    return committer, results


@asynccontextmanager
async def harness(path: Path, limits: BufferConfig | None = None, **batch: int) -> AsyncIterator[Harness]:
    store = Store(path)
    rec = store.recover()
    cfg = BatchConfig(
        max_events=batch.get("max_events", 1000),
        max_bytes=batch.get("max_bytes", 1 << 20),
        linger_ms=batch.get("linger_ms", 0),
        window=batch.get("window", 8),
    )
    committer, results = committer_for(store, rec, cfg, limits)
    committer.start()
    h = Harness(committer, store, results)
    try:
        yield h
    finally:
        committer.stop()
        store.close()


def events_of(batch: SealedBatch) -> list[dict[int, Any]]:
    _, payload = cose.sign1_verify(batch.blob, KEYS, AAD_BATCH)
    return [dict(e) for e in cbor2.loads(payload)[5]]


async def test_backlog_sealed_in_lane_order(tmp_path: Path) -> None:
    async with harness(tmp_path / "b.db") as h:
        h.submit(*(event(i, 128) for i in range(1, 6)), event(6, 64), event(7, 1), event(8, 128))
        res = await h.next_result()
        assert len(res.committed) == 8 and not res.sealed, "uplink down: nothing sealed"
        assert res.backlog == (1, 1, 6)
        assert h.acked == [1, 2, 3, 4, 5, 6, 7, 8], "acks follow the commit, in arrival order"
        h.inbox.set_uplink(True)
        (batch,) = await h.sealed(1)
        assert [e[3] for e in events_of(batch)] == [7, 6, 1, 2, 3, 4, 5, 8]
        assert batch.prio == 0 and batch.seq == 1


async def test_window_and_p0_reserve(tmp_path: Path) -> None:
    async with harness(tmp_path / "b.db", window=1, max_events=2) as h:
        h.inbox.set_uplink(True)
        h.submit(*(event(i, 128) for i in range(1, 6)))
        (first,) = await h.sealed(1)
        assert [e[3] for e in events_of(first)] == [1, 2]
        h.submit(event(6, 1), event(7, 2))
        (p0,) = await h.sealed(1)
        assert [e[3] for e in events_of(p0)] == [6, 7], "P0 takes the reserve slot, alone"
        h.submit(event(8, 1))
        res = await h.next_result()
        assert not res.sealed and res.backlog == (1, 0, 3), "window + reserve full: P0 waits first in line"
        h.inbox.ack(first)
        (nxt,) = await h.sealed(1)
        assert [e[3] for e in events_of(nxt)] == [8], "the waiting P0 goes first, through the reserve slot"
        h.inbox.ack(p0)
        h.inbox.ack(nxt)
        (tail,) = await h.sealed(1)
        assert [e[3] for e in events_of(tail)] == [3, 4], "then the telemetry, oldest first"


async def test_linger_holds_telemetry_not_alarms(tmp_path: Path) -> None:
    async with harness(tmp_path / "b.db", linger_ms=300) as h:
        h.inbox.set_uplink(True)
        h.submit(event(1, 128, received=int(time.time() * 1000)))
        res = await h.next_result()
        assert not res.sealed and res.backlog == (0, 0, 1)
        (batch,) = await h.sealed(1, within=3)
        assert [e[3] for e in events_of(batch)] == [1]
        h.submit(event(2, 1, received=int(time.time() * 1000)))
        res = await h.next_result()
        assert len(res.sealed) == 1, "an alarm is sealed at once"


async def test_restart_keeps_backlog_batches_replay_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with harness(path, max_events=3) as h:
        h.inbox.set_uplink(True)
        h.submit(*(event(i, 128, flags=1 if i == 2 else 0) for i in range(1, 4)))
        (b1,) = await h.sealed(1)
        h.inbox.set_uplink(False)
        h.submit(event(4, 1, flags=1), event(5, 128))
        await h.next_result()
    store = Store(path)
    rec = store.recover()
    store.close()
    assert [b.seq for b in rec.batches] == [1] and rec.batches[0].blob == b1.blob
    assert rec.batches[0].flagged == (("AP-1", 1, 2),)
    assert rec.backlog == [1, 0, 1]
    assert rec.replay["AP-1"].seq == 5
    assert rec.ledger == {("AP-1", 1, 2): 1, ("AP-1", 1, 4): 1}
    async with harness(path) as h:
        h.inbox.ack(rec.batches[0])
        h.inbox.set_uplink(True)
        (b2,) = await h.sealed(1)
        assert b2.seq == 2 and b2.epoch == b1.epoch
        assert cbor2.loads(cose.sign1_verify(b2.blob, KEYS, AAD_BATCH)[1])[4] == b1.hash
    store = Store(path)
    rec = store.recover()
    store.close()
    assert rec.ledger[("AP-1", 1, 2)] == 2, "acked: delivered"
    assert [b.seq for b in rec.batches] == [2]


async def test_commit_failure_is_retried_without_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness(tmp_path / "b.db") as h:
        real = h.store.insert_events
        calls = {"n": 0}

        def flaky(rows: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise sqlite3.OperationalError("database or disk is full")
            real(rows)

        monkeypatch.setattr(h.store, "insert_events", flaky)
        h.submit(event(1, 128))
        first = await h.next_result()
        assert first.error is not None and "disk is full" in first.error
        assert h.acked == [], "nothing is acknowledged before it is durable"
        second = await h.next_result()
        assert [s.event.seq for s in second.committed] == [1] and h.acked == [1]
        h.inbox.set_uplink(True)
        (batch,) = await h.sealed(1)
        assert batch.seq == 1, "the failed transaction did not advance the chain"


async def test_replay_gaps_survive_a_failed_round_and_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.db"
    st = ReplayState()
    for seq in [1, *range(3, 200)]:  # 2 lost: a gap once the window has passed it
        st.accept(1, seq)
    assert st.is_new(1, 2) and st.gaps
    async with harness(path) as h:
        real = h.store.insert_events
        calls = {"n": 0}

        def flaky(rows: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise sqlite3.OperationalError("disk I/O error")
            real(rows)

        monkeypatch.setattr(h.store, "insert_events", flaky)
        ev = event(199, 128)
        h.inbox.submit(Submitted(ev, st.as_row(), lambda: h.acked.append(199)))
        assert (await h.next_result()).error is not None
        assert (await h.committed(1)).committed, "the retried round wrote the gaps too"
        ev2 = event(200, 128)
        st.accept(1, 200)
        h.inbox.submit(Submitted(ev2, st.as_row(), lambda: h.acked.append(200)))
        await h.committed(1)
        written = h.store.db.execute("SELECT count(*) FROM replay_gaps").fetchone()[0]
        assert written == 1
    store = Store(path)
    rec = store.recover()
    store.close()
    back = rec.replay["AP-1"]
    assert back.gaps == st.gaps and back.is_new(1, 2) and not back.is_new(1, 3)


def test_corrupt_file_is_quarantined_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = Store(path)
    rec = store.recover(now_s=1000)
    with store.transaction():
        store.save_replay([("AP-1", 3, 9, 0, b"")])
    store.close()
    assert rec.epoch == 1000
    path.write_bytes(b"this is not an SQLite file" * 200)
    store = Store(path)
    rec = store.recover(now_s=2000)
    store.close()
    assert rec.quarantined is not None and rec.quarantined.exists()
    assert rec.quarantined.read_bytes().startswith(b"this is not")
    assert rec.epoch == 2000, "a new chain epoch after the loss"


def test_replay_state_salvaged_from_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = Store(path)
    store.recover(now_s=1000)
    with store.transaction():
        store.save_replay([(f"AP-{i}", 3, 9, 0, b"") for i in range(50)])
        store.insert_events([(2, 1000, b"x" * 1000, None, None, None, 0) for _ in range(400)])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    # damage a page in the middle of the events table
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 // 4096 * 4096
    data[mid : mid + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    store = Store(path)
    rec = store.recover(now_s=2000)
    store.close()
    assert rec.quarantined is not None
    assert rec.salvaged_replay == 50 and rec.replay["AP-7"].seq == 9


@asynccontextmanager
async def bounded(path: Path, max_bytes: int, reserve: int) -> AsyncIterator[Harness]:
    async with harness(path, BufferConfig(max_bytes=max_bytes, p0_reserve_bytes=reserve)) as h:
        yield h


async def test_full_buffer_evicts_oldest_p2_then_p1_never_p0(tmp_path: Path) -> None:
    # events 100..199 of a kind all encode to the same size; P1 here asks for receipts (+2)
    s2, s1 = len(event(100, 128).encoded), len(event(100, 64, flags=1).encoded)
    async with bounded(tmp_path / "b.db", max_bytes=15 * s2 + 5 * s1, reserve=5 * s2) as h:
        # uplink down: everything stays in the backlog; P1/P2 may use 15 events' worth
        h.submit(*(event(i, 128) for i in range(101, 111)), *(event(i, 64, flags=1) for i in range(111, 116)))
        res = await h.committed(15)
        assert res.backlog == (0, 5, 10) and res.evicted == (0, 0, 0)
        h.submit(*(event(i, 128) for i in range(116, 119)))  # 3 more P2: the 3 oldest P2 go
        res = await h.committed(3)
        assert res.backlog == (0, 5, 10) and res.evicted == (0, 0, 3) and res.dropped == []
        h.submit(*(event(i, 1) for i in range(119, 124)))  # 5 alarms fit in the reserve
        res = await h.committed(5)
        assert res.backlog == (5, 5, 10) and res.evicted == (0, 0, 3)
        h.submit(*(event(i, 1) for i in range(124, 136)))  # 12 more alarms: P2 go, then P1
        res = await h.committed(12)
        assert res.backlog == (17, 3, 0) and res.evicted == (0, 2, 13)
        # the evicted P1 wanted receipts: they are named for receipt 4
        assert res.dropped == [("AP-1", 1, 111), ("AP-1", 1, 112)]
        h.submit(*(event(i, 1) for i in range(136, 141)))  # past the bound: alarms are still kept
        res = await h.committed(5)
        assert res.backlog == (22, 0, 0) and res.evicted == (0, 5, 13)
        assert h.acked[-1] == 140
        ledger = dict(((d, b, s), st) for d, b, s, st in h.store.db.execute("SELECT * FROM ledger"))
        assert ledger[("AP-1", 1, 111)] == 4
        # everything left drains in lane order once the uplink is back: all 22 alarms
        h.inbox.set_uplink(True)
        batches = await h.sealed(1)
        seqs = [e[3] for b in batches for e in events_of(b)]
        assert sorted(seqs) == list(range(119, 141))


async def test_eviction_counters_survive_a_restart(tmp_path: Path) -> None:
    size = len(event(100, 128, received=1000).encoded)
    async with bounded(tmp_path / "b.db", max_bytes=4 * size, reserve=0) as h:
        h.submit(*(event(i, 128, received=1000 + i - 100) for i in range(101, 108)))
        res = await h.committed(7)
        assert res.evicted == (0, 0, 3) and res.backlog == (0, 0, 4)
        assert res.oldest_ms == 1004, "the oldest event left is the 4th"
    store = Store(tmp_path / "b.db")
    rec = store.recover()
    store.close()
    assert rec.evicted == [0, 0, 3] and rec.oldest_received == 1004 and rec.backlog == [0, 0, 4]


async def test_open_exit_and_missing_are_committed_with_their_alerts(tmp_path: Path) -> None:
    # the alert engine's EXIT/MISSING state rides on the alerts themselves (band events,
    # device = band, no replay row): opened by EXIT or MISSING, closed by BACK_INSIDE, in the
    # same transaction as the alert, and there after a restart
    def band_event(seq: int, typ: int, band: str, received: int, zone: str | None = None) -> Submitted:
        data: dict[int, Any] = {1: "Resident", 3: {"text": "..."}, **({2: zone} if zone else {})}
        return Submitted(Event(band, 1, seq, typ, 0, received, data, b""), None, lambda: None)

    path = tmp_path / "b.db"
    async with harness(path) as h:
        h.inbox.submit_group(
            [
                band_event(1, 6, "WB-1", 1000, "Lounge"),  # MISSING
                band_event(2, 5, "WB-1", 2000, "Front door"),  # EXIT: heard outside, no longer missing
                band_event(3, 5, "WB-2", 3000, "Garden gate"),
                band_event(4, 6, "WB-3", 4000),  # MISSING with no zone known
            ],
            [],
        )
        await h.committed(4)
        assert h.store.load_band_open() == [
            ("WB-1", 5, 2000, "Front door"),
            ("WB-2", 5, 3000, "Garden gate"),
            ("WB-3", 6, 4000, None),
        ]
        h.inbox.submit_group([band_event(5, 68, "WB-1", 5000, "Hall"), band_event(6, 3, "WB-2", 6000)], [])
        await h.committed(2)
    store = Store(path)  # a restart: BACK_INSIDE closed WB-1's; an SOS changes nothing
    try:
        assert store.load_band_open() == [("WB-2", 5, 3000, "Garden gate"), ("WB-3", 6, 4000, None)]
    finally:
        store.close()


async def test_liveness_rows_are_committed_with_their_event_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    async with harness(path) as h:
        offline = Event("GW-T", 1, 1, 74, 0, 5, {1: "AP-1", 2: 130_000, 3: "heartbeat", 4: 60_000}, b"")
        h.inbox.submit_group([Submitted(offline, None, lambda: None)], [], [("AP-1", 60_000, 5, "heartbeat")])
        h.inbox.submit_group([], [], [("SN-1", 0, None, None)])  # a row alone: a device first followed
        await h.committed(1)
    # (stopping the committer commits what is still queued)
    store = Store(path)
    try:
        assert sorted(store.load_liveness()) == [("AP-1", 60_000, 5, "heartbeat"), ("SN-1", 0, None, None)]
        assert store.recover().backlog == [0, 1, 0], "the DEVICE_OFFLINE event is in the same commit"
    finally:
        store.close()


async def test_pending_alerts_are_the_undelivered_ones_with_closers_after_them(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    watched = frozenset({3, 5, 68})
    async with harness(path) as h:
        # sealed while central was up: SOS (band) in a batch central acknowledged, EXIT in one it did not
        h.inbox.set_uplink(True)
        sos = Event("WB-1", 1, 1, 3, 0, 1000, {1: "Room 4"}, b"")
        h.inbox.submit(Submitted(sos, None, lambda: None))
        (delivered,) = await h.sealed(1)
        h.inbox.ack(delivered)
        exit_ = Event("WB-1", 1, 2, 5, 0, 2000, {1: "Room 4"}, b"")
        h.inbox.submit(Submitted(exit_, None, lambda: None))
        await h.sealed(1)
        # the link goes down: a heartbeat, an old BACK_INSIDE before everything and one after
        h.inbox.set_uplink(False)
        h.submit(event(3, 128, received=2500))
        before = Event("WB-2", 1, 4, 68, 0, 500, {1: "Room 5"}, b"")
        back = Event("WB-1", 1, 5, 68, 0, 3000, {1: "Room 4", 3: {"resolves": "EXIT"}}, b"")
        h.inbox.submit_group([Submitted(before, None, lambda: None), Submitted(back, None, lambda: None)], [])
        await h.committed(2)
    store = Store(path)
    try:
        found = store.pending_alerts(watched)
        assert [(e.device, e.seq, e.type) for e in found] == [("WB-1", 2, 5), ("WB-1", 5, 68)]
        assert store.pending_alerts(frozenset({68})) == [], "a closer matters only with a P0 alert pending"
    finally:
        store.close()
