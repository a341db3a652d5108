"""The buffer on a real, small, full filesystem (invariant 9): alarms are still stored, P2 and then
P1 give way, the write-ahead log stays bounded, and the alarms' reserve comes back with the space.

A tmpfs (and an ext4 image on a loop device: what a Pi's SD card holds) of a few MiB is mounted
for each test (tests/conftest.py `small_fs`); the committer thread and the store run as in the
agent, driven through the commit inbox. The disk fills two ways, as in the field: the agent's own
backlog grows while central is away, and then something else (a runaway log: `hog`) takes what
is left.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import pytest

from agent.gateway.buffer import Store
from agent.gateway.committer import CommitResult, Committer
from agent.gateway.config import BatchConfig, BufferConfig
from agent.gateway.planner import Submitted
from agent.gateway.replay import ReplayState
from agent.gateway.reserve import SpaceReserve
from agent.gateway.signer import SealedBatch
from agent.gateway.stats import DiskReport
from agent.shared import cose
from agent.shared.frames import Event
from agent.shared.protocol import AAD_BATCH
from hil_tests.sim.smallfs import SmallFilesystem
from tests.agent.test_committer import KEY, committer_for
from tests.conftest import MakeFilesystem

FS_SIZE = 4 << 20
RESERVE = 512 << 10
LIMITS = BufferConfig(max_bytes=1 << 30, p0_reserve_bytes=1 << 20)  # the disk is the bound here
BATCH = BatchConfig(max_events=200, max_bytes=64 << 10, linger_ms=0, window=4)
TYPE_OF_LANE = (1, 64, 128)  # ALARM, TAMPER, HEARTBEAT


@dataclass
class Rig:
    """The committer on the small filesystem, and what its rounds told the event loop."""

    fs: SmallFilesystem
    committer: Committer
    store: Store
    results: asyncio.Queue[CommitResult]
    seq: int = 0
    acked: set[int] = field(default_factory=set)
    prio: dict[int, int] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)
    disk: DiskReport = field(default_factory=DiskReport)
    full_seen: int = 0  # reports of a full disk
    sealed: list[SealedBatch] = field(default_factory=list)
    failed_rounds: int = 0

    def submit(self, counts: tuple[int, int, int]) -> list[int]:
        """One burst of new events, `counts` per lane (P0 and P1 ask for receipts); their seqs."""
        items, seqs = [], []
        for prio, n in enumerate(counts):
            for _ in range(n):
                self.seq += 1
                seq = self.seq
                # about 200 bytes encoded, a sensor frame's size
                ev = Event("AP-1", 1, seq, TYPE_OF_LANE[prio], 0, 1, {1: "x" * 160}, bytes(8), 1 if prio < 2 else 0)
                self.prio[seq] = prio
                items.append(Submitted(ev, ReplayState(1, seq, 0).as_row(), lambda seq=seq: self.acked.add(seq)))
                seqs.append(seq)
        self.committer.inbox.submit_group(items, [])
        return seqs

    async def settle(self, seqs: list[int], within: float = 10.0) -> None:
        """Wait until every one of `seqs` was committed (acked) in some round."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not set(seqs) <= self.acked:
            await self.next_result(deadline - loop.time())

    async def next_result(self, within: float) -> CommitResult:
        res = await asyncio.wait_for(self.results.get(), max(0.01, within))
        if res.disk is not None:
            self.disk = res.disk
            self.full_seen += res.disk.full
        if res.error is not None:
            self.failed_rounds += 1
        self.dropped.update(seq for _, _, seq in res.dropped)
        self.sealed.extend(res.sealed)
        return res

    async def until(self, what: str, check: object, within: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not check():  # type: ignore[operator]
            if loop.time() > deadline:
                raise AssertionError(f"{what}: not within {within}s; disk {self.disk}")
            with suppress(TimeoutError):
                await self.next_result(0.2)


@asynccontextmanager
async def running(fs: SmallFilesystem, rig: Rig | None = None) -> AsyncIterator[Rig]:
    """The store and its committer on `fs` (again, after a restart, when `rig` is given)."""
    reserve = SpaceReserve(fs.mountpoint / "buffer.reserve", RESERVE)
    store = Store(fs.mountpoint / "buffer.db", reserve=reserve)
    reserve.fill()
    committer, results = committer_for(store, store.recover(), BATCH, LIMITS)
    committer.disk_check_s = 0.05
    if rig is None:
        rig = Rig(fs, committer, store, results)
    else:
        rig.committer, rig.store, rig.results = committer, store, results
    committer.start()
    try:
        yield rig
    finally:
        committer.stop()
        store.close()


async def fill_until_full(rig: Rig) -> None:
    """Central is away: telemetry (and some P1) until a round meets the full disk."""
    for _ in range(2000):
        await rig.settle(rig.submit((0, 1, 40)))
        if rig.disk.full:
            return
    raise AssertionError(f"the disk never filled: {rig.fs.free()} bytes free")


def buffer_files(fs: SmallFilesystem) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in fs.mountpoint.iterdir()}


async def alarms_while_full(rig: Rig, rounds: int) -> None:
    """Alarms among telemetry: every one committed (receipt 1), none evicted."""
    alarms: list[int] = []
    for _ in range(rounds):
        seqs = rig.submit((1, 1, 40))
        alarms.append(seqs[0])
        await rig.settle(seqs)
    assert set(alarms) <= rig.acked
    assert not set(alarms) & rig.dropped, "an alarm was evicted"


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
async def test_alarms_are_stored_on_a_full_disk_and_the_reserve_comes_back(kind: str, small_fs: MakeFilesystem) -> None:
    fs = small_fs("data", FS_SIZE, kind)
    async with running(fs) as rig:
        assert rig.store.reserve is not None and rig.store.reserve.size == RESERVE
        await fill_until_full(rig)
        files = buffer_files(fs)
        assert files["buffer.db-wal"] <= 4 * rig.store.wal_bound, f"the log is bounded: {files}"
        # the backlog filled the disk; alarms keep coming, among telemetry
        await alarms_while_full(rig, 60)
        assert rig.committer.state.evicted[2] > 0, "telemetry gave way"
        assert rig.committer.state.evicted[0] == 0
        # something else takes what is left of the disk
        fs.hog()
        await alarms_while_full(rig, 60)
        assert rig.full_seen, "the operator is told"
        assert rig.committer.state.disk.bound is not None
    # kill and restart on the full disk: it opens, and alarms are stored
    async with running(fs, rig) as rig:
        await alarms_while_full(rig, 20)
        # the disk gets room again: the reserve comes back and the disk is not full any more
        fs.free_hog()
        await rig.until("space returned", lambda: not rig.disk.full and rig.disk.reserve == RESERVE)
        # central returns: the backlog drains, in lane order, alarms first
        rig.committer.inbox.set_uplink(True)
        await rig.until("a first batch", lambda: rig.sealed)
        assert rig.sealed[0].prio == 0
    db = sqlite3.connect(fs.mountpoint / "buffer.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {cbor2.loads(b)[3] for (b,) in db.execute("SELECT blob FROM events")}
    finally:
        db.close()
    batched = {e for b in rig.sealed for e in _seqs(b)}
    alarms = {s for s, p in rig.prio.items() if p == 0}
    assert alarms <= stored | batched, f"alarms lost: {sorted(alarms - stored - batched)[:5]}"


def _seqs(batch: SealedBatch) -> list[int]:
    _, payload = cose.sign1_verify(batch.blob, {b"GW-T": KEY.public_key()}, AAD_BATCH)
    return [e[3] for e in cbor2.loads(payload)[5]]


async def test_a_disk_filled_by_something_else_keeps_the_reserve_for_alarms(small_fs: MakeFilesystem) -> None:
    fs = small_fs("data", FS_SIZE)
    async with running(fs) as rig:
        await rig.settle(rig.submit((1, 5, 50)))
        fs.hog()
        assert fs.free() < 8192
        await alarms_while_full(rig, 100)
        assert rig.full_seen
        telemetry = [s for s, p in rig.prio.items() if p == 2]
        assert set(telemetry) <= rig.acked, "telemetry is acknowledged too (stored or evicted), never left hanging"
        os.sync()


def test_the_reserve_is_allocated_as_far_as_the_disk_allows(small_fs: MakeFilesystem) -> None:
    fs = small_fs("data", 1 << 20)
    fs.hog(leave=300 << 10)
    reserve = SpaceReserve(fs.mountpoint / "buffer.reserve", RESERVE)
    free = fs.free()
    size = reserve.fill()
    assert 0 < size < RESERVE and size % (64 << 10) == 0 and reserve.deficit == RESERVE - size
    assert fs.free() <= free - size, "its blocks are allocated, not a sparse file"
    assert reserve.release(100 << 10) == 100 << 10 and fs.free() >= free - size + (100 << 10)
    fs.free_hog()
    assert reserve.fill() == RESERVE and (fs.mountpoint / "buffer.reserve").stat().st_size == RESERVE
    assert SpaceReserve(reserve.path, RESERVE // 2).fill() == RESERVE // 2, "a lower target gives the rest back"
    assert reserve.release(1 << 30) == RESERVE, "the reserve's size at most"


def test_an_older_buffer_is_converted_to_hand_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
    old.execute("INSERT INTO meta VALUES ('epoch', 5), ('seq', 3), ('hash', x'00')")
    old.commit()
    old.close()
    store = Store(path)
    try:
        assert store.db.execute("PRAGMA auto_vacuum").fetchone() == (2,), "incremental"
        assert store.recover().epoch == 5, "the data kept"
    finally:
        store.close()


async def test_the_buffer_opens_on_a_full_disk_and_stores_alarms(small_fs: MakeFilesystem) -> None:
    fs = small_fs("data", FS_SIZE)
    async with running(fs) as rig:
        await rig.settle(rig.submit((1, 1, 20)))
    # closed cleanly: SQLite removed its -wal and -shm files, which opening must make again
    assert not (fs.mountpoint / "buffer.db-shm").exists()
    fs.hog()
    assert fs.free() < 8192
    async with running(fs, rig) as rig:
        reserve = rig.store.reserve
        assert reserve is not None and reserve.size < RESERVE, "opening took some of the reserve"
        await alarms_while_full(rig, 20)
