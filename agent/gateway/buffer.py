"""The durable buffer: one SQLite file holding everything that must survive a power cut.

Tables:
  events   the backlog of accepted events not yet sealed into a batch, by lane (prio)
  batches  sealed, signed batches not yet acknowledged by central (resent with the same bytes)
  replay   per-device replay state (agent/gateway/replay.py): the top of the record, per round
  replay_gaps  per-device ranges never accepted below the replay window, when they change
  ledger   receipt state of the recent receipt-requesting events of each device
  band_replay  per-wristband advert counter and when it was accepted (agent/gateway/wristbands/resolver.py)
  band_alerts  SOS/FALL alerts already raised, per band event id (never raised twice)
  liveness  per post or sensor: its learned heartbeat interval, and since when it is reported
           offline (agent/gateway/liveness.py), written with the DEVICE_OFFLINE/ONLINE event
  meta     the hash chain head (epoch, seq, hash), the schema version, the gateway's own event
           counter (gw_seq) and the eviction counters (evicted_p1, evicted_p2)

Only the group-commit thread (agent/gateway/committer.py) writes; every method here runs on it,
inside `transaction()`. A commit round reads the events table through `rows()` (the planner's
view, agent/gateway/planner.py) and is written by `apply()`. A file that SQLite reports as corrupt is
moved aside (quarantined) with its -wal/-shm files and a fresh one is started with a new chain
epoch; what can be read of the old replay state is salvaged. Nothing is ever deleted silently.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import cbor2

from agent.gateway.planner import LivenessRow, Plan, Row
from agent.gateway.replay import ReplayState
from agent.gateway.signer import SealedBatch, batch_events
from agent.shared.errors import StoreError
from agent.shared.frames import Event
from agent.shared.protocol import RECEIPT_DELIVERED, RECEIPT_DROPPED, RECEIPT_STORED

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# The receipt ledger must cover a device's whole outbox (32 entries on an alarm post), so
# that a post which lost receipts (power cut) gets one for every event it sends again.
LEDGER_PER_DEVICE = 64

# Why these pragmas:
# - journal_mode=WAL: a commit appends to the write-ahead log (sequential writes, kind to SD
#   cards) instead of rewriting pages in place, and the one fsync per commit covers the log.
# - synchronous=FULL: in WAL mode FULL fsyncs the log at every commit, so a commit that has
#   returned survives a power cut. Receipt 1 promises exactly that; NORMAL would only sync at
#   checkpoints and a power cut could roll back commits that devices were told are stored.
# - wal_autocheckpoint=4000 pages (16 MB): fewer, larger checkpoints under a sustained load.
# - journal_size_limit=64 MB: the log file is truncated back after a checkpoint, so a big
#   backlog that has drained gives its disk space back.
# - cache_size=-8000 (8 MB): a bounded page cache; the agent shares a Pi with other services.
#   The hot pages are few (the lanes' index, the head and tail of the events table), so 8 MB
#   drains and fills a 1,000,000-event backlog as fast as 16 MB did, and the agent holds
#   1,000,000 buffered events in ~69 MB instead of ~79 MB (docs/benchmarks.md).
# - temp_store=MEMORY: sorting for the lane-ordered drain needs no temp files on the SD card.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA wal_autocheckpoint=4000",
    "PRAGMA journal_size_limit=67108864",
    "PRAGMA cache_size=-8000",
    "PRAGMA temp_store=MEMORY",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    prio INTEGER NOT NULL,
    size INTEGER NOT NULL,
    blob BLOB NOT NULL,
    -- set only for events that want receipts, so sealing can name them
    device TEXT, boot INTEGER, seq INTEGER,
    received INTEGER NOT NULL DEFAULT 0  -- gateway receive time, unix ms (schema 2)
);
CREATE INDEX IF NOT EXISTS events_lane ON events (prio, id);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    prio INTEGER NOT NULL,
    events INTEGER NOT NULL,
    blob BLOB NOT NULL,
    hash BLOB NOT NULL,
    flagged BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS replay (
    device TEXT PRIMARY KEY, boot INTEGER NOT NULL, seq INTEGER NOT NULL, bitmap INTEGER NOT NULL
) WITHOUT ROWID;
-- a device's gaps (agent/gateway/replay.py), written only when they change: in order they do
-- not, and the per-round replay row stays 4 integers
CREATE TABLE IF NOT EXISTS replay_gaps (device TEXT PRIMARY KEY, gaps BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID;
-- last accepted advert counter per wristband and when (unix ms) it was accepted (agent/ble)
-- SOS/FALL alerts already raised per wristband and band event id (agent/ble alert dedupe)
CREATE TABLE IF NOT EXISTS band_alerts (
    band TEXT NOT NULL, type INTEGER NOT NULL, event_id INTEGER NOT NULL, PRIMARY KEY (band, type, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS band_replay (
    band TEXT PRIMARY KEY, counter INTEGER NOT NULL, seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- posts and sensors the gateway follows: learned heartbeat interval (ms), and the unix ms since
-- when it is reported offline with the reason (NULL while it reports) (agent/gateway/liveness.py)
CREATE TABLE IF NOT EXISTS liveness (
    device TEXT PRIMARY KEY, interval_ms INTEGER NOT NULL, offline_since_ms INTEGER, reason TEXT
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class Recovered:
    """What a restart finds in the buffer."""

    epoch: int
    seq: int
    prev: bytes
    replay: dict[str, ReplayState] = field(default_factory=dict)
    ledger: dict[tuple[str, int, int], int] = field(default_factory=dict)
    batches: list[SealedBatch] = field(default_factory=list)
    backlog: list[int] = field(default_factory=lambda: [0, 0, 0])
    backlog_bytes: list[int] = field(default_factory=lambda: [0, 0, 0])
    oldest_received: int | None = None
    gw_seq: int = 0
    evicted: list[int] = field(default_factory=lambda: [0, 0, 0])
    quarantined: Path | None = None
    salvaged_replay: int = 0


class Store:
    """The SQLite buffer; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.quarantined: Path | None = None
        self.salvaged: dict[str, ReplayState] = {}
        # per device, the gaps blob last committed (ReplayState.gaps_blob: a new object when they
        # change), and those written by the transaction in progress
        self._gaps_written: dict[str, bytes] = {}
        self._gaps_pending: dict[str, bytes] = {}
        try:
            self.db = self._open()
            self._check()
        except sqlite3.DatabaseError as exc:
            self._quarantine(str(exc))
            self.db = self._open()
        self._migrate()
        self.db.executescript(_SCHEMA)
        if self.salvaged:
            with self.transaction():
                self.save_replay((d, *st.as_row()) for d, st in self.salvaged.items())

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and committed explicitly below.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in _PRAGMAS:
            db.execute(pragma)
        return db

    def _migrate(self) -> None:
        # schema 1 -> 2: events.received (existing rows count as received at the epoch)
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(events)")]
        if cols and "received" not in cols:
            self.db.execute("ALTER TABLE events ADD COLUMN received INTEGER NOT NULL DEFAULT 0")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def _check(self) -> None:
        row = self.db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")

    def _quarantine(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        self.salvaged = _salvage_replay(self.path)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        self.quarantined = target
        log.error(
            "buffer_quarantined path=%s moved_to=%s reason=%r salvaged_replay_devices=%d",
            self.path,
            target,
            reason,
            len(self.salvaged),
        )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; the commit is durable (fsync) when this returns."""
        self._gaps_pending.clear()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot begin a transaction: {exc}") from exc
        try:
            yield
            self.db.execute("COMMIT")
            self._gaps_written.update(self._gaps_pending)
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: {exc}") from exc
            raise

    # --- state at start ------------------------------------------------------------

    def recover(self, now_s: int | None = None) -> Recovered:
        meta = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        if "epoch" not in meta:
            epoch = int(now_s if now_s is not None else time.time())
            with self.transaction():
                self.set_chain(epoch, 0, bytes(32))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            meta = {"epoch": epoch, "seq": 0, "hash": bytes(32)}
        rec = Recovered(epoch=int(meta["epoch"]), seq=int(meta["seq"]), prev=bytes(meta["hash"]))
        rec.quarantined = self.quarantined
        rec.salvaged_replay = len(self.salvaged)
        rec.replay = _read_replay(self.db)
        self._gaps_written = {d: st.gaps_blob for d, st in rec.replay.items()}
        for device, boot, seq, state in self.db.execute("SELECT device, boot, seq, state FROM ledger"):
            rec.ledger[(device, boot, seq)] = state
        for seq, epoch, prio, events, blob, digest, flagged in self.db.execute(
            "SELECT seq, epoch, prio, events, blob, hash, flagged FROM batches ORDER BY seq"
        ):
            keys = tuple((str(d), int(b), int(s)) for d, b, s in cbor2.loads(flagged))
            rec.batches.append(SealedBatch(epoch, seq, bytes(blob), bytes(digest), events, prio, keys))
        for prio, count, size in self.db.execute("SELECT prio, count(*), sum(size) FROM events GROUP BY prio"):
            rec.backlog[prio] = count
            rec.backlog_bytes[prio] = size or 0
        rec.oldest_received = self.oldest_received()
        rec.gw_seq = int(meta.get("gw_seq", 0))
        rec.evicted = [0, int(meta.get("evicted_p1", 0)), int(meta.get("evicted_p2", 0))]
        return rec

    def oldest_received(self) -> int | None:
        """Receive time (unix ms) of the oldest event in the backlog, None when it is empty."""
        # the first row of each lane (by the events_lane index), not a scan of the backlog
        row = self.db.execute(
            "SELECT min(r) FROM ("
            " SELECT (SELECT received FROM events WHERE prio = 0 ORDER BY id LIMIT 1) AS r"
            " UNION ALL SELECT (SELECT received FROM events WHERE prio = 1 ORDER BY id LIMIT 1)"
            " UNION ALL SELECT (SELECT received FROM events WHERE prio = 2 ORDER BY id LIMIT 1))"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # --- writes (inside transaction()) ---------------------------------------------

    def insert_events(self, rows: Iterable[tuple[int, int, bytes, str | None, int | None, int | None, int]]) -> None:
        """rows: (prio, size, blob, device, boot, seq, received); device/boot/seq only for flagged events."""
        # many rows per statement: executemany steps (and releases the GIL) once per row, and
        # under load each step then waits for the event loop to hand the GIL back
        self._insert_many("INSERT INTO events (prio, size, blob, device, boot, seq, received)", 7, list(rows))

    def _insert_many(self, head: str, columns: int, rows: list[tuple[object, ...]]) -> None:
        """`head` VALUES (...), (...), ...: as many rows per statement as 999 parameters allow."""
        per = _MAX_PARAMETERS // columns
        for i in range(0, len(rows), per):
            part = rows[i : i + per]
            self.db.execute(_values_sql(head, columns, len(part)), [v for row in part for v in row])

    def set_counters(self, gw_seq: int, evicted: list[int]) -> None:
        self._insert_many(
            "INSERT OR REPLACE INTO meta (k, v)",
            2,
            [("gw_seq", gw_seq), ("evicted_p1", evicted[1]), ("evicted_p2", evicted[2])],
        )

    def rows(self, prio: int, after: int, limit: int, blobs: bool) -> list[Row]:
        """Up to `limit` events of lane `prio` with an id above `after`, oldest first (the
        planner's Backlog view, agent/gateway/planner.py); blobs only when asked, else b""."""
        if not blobs:
            return [
                (int(i), int(size), b"", (str(d), int(b), int(s)) if d is not None else None, int(r))
                for i, size, d, b, s, r in self.db.execute(
                    "SELECT id, size, device, boot, seq, received FROM events"
                    " WHERE prio = ? AND id > ? ORDER BY id LIMIT ?",
                    (prio, after, limit),
                )
            ]
        # The rows come back as ONE row (a JSON array, blobs in hex): reading row by row steps
        # SQLite once per row and releases the GIL each time, and under load each step then
        # waits for the event loop to hand the GIL back (measured: ~30 ms for 1000 rows while
        # ingest runs, ~3 ms this way). The order is restored in Python: an aggregate does not
        # promise its input order.
        (text,) = self.db.execute(
            "SELECT json_group_array(json_array(id, size, hex(blob), device, boot, seq, received))"
            " FROM (SELECT id, size, blob, device, boot, seq, received FROM events"
            " WHERE prio = ? AND id > ? ORDER BY id LIMIT ?)",
            (prio, after, limit),
        ).fetchone()
        found = json.loads(text)
        found.sort(key=itemgetter(0))
        return [
            (i, size, bytes.fromhex(blob), (device, boot, seq) if device is not None else None, received)
            for i, size, blob, device, boot, seq, received in found
        ]

    def apply(self, plan: Plan, sealed: Sequence[SealedBatch], chain: tuple[int, int, bytes]) -> None:
        """Write one commit round (agent/gateway/planner.py Plan) with its sealed batches; inside
        transaction(). `chain` is the signer's (epoch, seq, hash) after sealing them."""
        if plan.delete_batches:
            self.delete_batches(plan.delete_batches)
            self.ledger_set((*k, RECEIPT_DELIVERED) for k in plan.delivered)
        for prio, last_id in plan.consumed:
            # sealed or evicted: always the oldest events of the lane
            self.db.execute("DELETE FROM events WHERE prio = ? AND id <= ?", (prio, last_id))
        if plan.insert:
            self.insert_events(
                (
                    ev.prio,
                    len(ev.encoded),
                    ev.encoded,
                    *((ev.device, ev.boot, ev.seq) if ev.wants_receipts else (None, None, None)),
                    ev.received,
                )
                for ev in plan.insert
            )
        if plan.replay:
            self.save_replay(plan.replay)
        if plan.stored:
            self.ledger_set((*k, RECEIPT_STORED) for k in plan.stored)
        if plan.band_rows:
            self.save_band_replay(plan.band_rows)
        if plan.band_alerts:
            self.save_band_alerts(plan.band_alerts)
        if plan.liveness:
            self.db.executemany(
                "INSERT OR REPLACE INTO liveness (device, interval_ms, offline_since_ms, reason) VALUES (?, ?, ?, ?)",
                plan.liveness,
            )
        if plan.dropped:
            self.ledger_set((*k, RECEIPT_DROPPED) for k in plan.dropped)
        for batch in sealed:
            self.insert_batch(batch)
        if sealed:
            self.set_chain(*chain)
        if plan.write_counters:
            self.set_counters(plan.state.gw_seq, list(plan.state.evicted))

    def insert_batch(self, batch: SealedBatch) -> None:
        self.db.execute(
            "INSERT INTO batches (seq, epoch, prio, events, blob, hash, flagged) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                batch.seq,
                batch.epoch,
                batch.prio,
                batch.events,
                batch.blob,
                batch.hash,
                cbor2.dumps([list(k) for k in batch.flagged]),
            ),
        )

    def delete_batches(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        for i in range(0, len(seqs), _MAX_PARAMETERS):
            part = seqs[i : i + _MAX_PARAMETERS]
            self.db.execute(_in_sql("DELETE FROM batches WHERE seq IN", len(part)), part)

    def set_chain(self, epoch: int, seq: int, digest: bytes) -> None:
        self._insert_many("INSERT OR REPLACE INTO meta (k, v)", 2, [("epoch", epoch), ("seq", seq), ("hash", digest)])

    def save_replay(self, rows: Iterable[tuple[str, int, int, int, bytes]]) -> None:
        """rows: (device, boot, seq, bitmap, gaps) as ReplayState.as_row() gives them; the gaps
        only when they are not the blob this store last wrote for the device."""
        rows = list(rows)
        self._insert_many("INSERT OR REPLACE INTO replay (device, boot, seq, bitmap)", 4, [r[:4] for r in rows])
        written = self._gaps_written
        changed = [(r[0], r[4]) for r in rows if written.get(r[0]) is not r[4]]
        if changed:
            self._insert_many("INSERT OR REPLACE INTO replay_gaps (device, gaps)", 2, list(changed))
            # known as written once the transaction commits (a rolled-back round is retried
            # with the same rows, which must write them again)
            self._gaps_pending.update(changed)

    def ledger_set(self, entries: Iterable[tuple[str, int, int, int]]) -> None:
        """entries: (device, boot, seq, state); keeps the newest LEDGER_PER_DEVICE per device."""
        entries = list(entries)
        self.db.executemany("INSERT OR REPLACE INTO ledger (device, boot, seq, state) VALUES (?, ?, ?, ?)", entries)
        for device in {e[0] for e in entries}:
            self.db.execute(
                "DELETE FROM ledger WHERE device = ?1 AND (boot, seq) < ("
                " SELECT boot, seq FROM ledger WHERE device = ?1"
                " ORDER BY boot DESC, seq DESC LIMIT 1 OFFSET ?2)",
                (device, LEDGER_PER_DEVICE - 1),
            )

    def load_band_replay(self) -> list[tuple[str, int, int]]:
        """(band, counter, seen_ms) of every wristband with an accepted advert."""
        rows = self.db.execute("SELECT band, counter, seen_ms FROM band_replay").fetchall()
        return [(str(b), int(c), int(t)) for b, c, t in rows]

    def load_band_alerts(self) -> list[tuple[str, int, int]]:
        """(band, type, event id) of every SOS/FALL alert already raised."""
        rows = self.db.execute("SELECT band, type, event_id FROM band_alerts").fetchall()
        return [(str(b), int(t), int(e)) for b, t, e in rows]

    def save_band_alerts(self, rows: Iterable[tuple[str, int, int]]) -> None:
        """rows: (band, type, event id); inside transaction(). Band event ids are 16-bit and
        wrap, so a key is replaced when its id comes round again (the engine forgets old ids)."""
        self.db.executemany("INSERT OR REPLACE INTO band_alerts (band, type, event_id) VALUES (?, ?, ?)", rows)

    def load_liveness(self) -> list[LivenessRow]:
        """(device, interval ms, offline since ms or None, reason or None) of every device followed."""
        rows = self.db.execute("SELECT device, interval_ms, offline_since_ms, reason FROM liveness").fetchall()
        return [(str(d), int(i), None if o is None else int(o), None if r is None else str(r)) for d, i, o, r in rows]

    def pending_alerts(self, types: frozenset[int]) -> list[Event]:
        """The events of `types` (P0 and P1 only) committed but not yet acknowledged by central's
        broker: in the sealed batches waiting for their PUBACK, then in the backlog. The gateway's
        fallback notifier follows them again after a restart (agent/gateway/fallback.py).

        P1 rows of the backlog (closers such as BACK_INSIDE) are read only from the oldest
        pending P0 event on: a closer matters only to an alert still pending.
        """
        found: dict[tuple[str, int, int], Event] = {}
        for (blob,) in self.db.execute("SELECT blob FROM batches ORDER BY seq"):
            for ev in batch_events(bytes(blob)):
                if ev.type in types:
                    found.setdefault(ev.key, ev)
        for (blob,) in self.db.execute("SELECT blob FROM events WHERE prio = 0 ORDER BY id"):
            ev = Event.decode(cbor2.loads(bytes(blob)))
            if ev.type in types:
                found.setdefault(ev.key, ev)
        oldest = min((ev.received for ev in found.values() if ev.prio == 0), default=None)
        if oldest is not None:
            for (blob,) in self.db.execute(
                "SELECT blob FROM events WHERE prio = 1 AND received >= ? ORDER BY id", (oldest,)
            ):
                ev = Event.decode(cbor2.loads(bytes(blob)))
                if ev.type in types:
                    found.setdefault(ev.key, ev)
        return list(found.values())

    def save_band_replay(self, rows: Iterable[tuple[str, int, int]]) -> None:
        """rows: (band, counter, seen_ms); inside transaction()."""
        self.db.executemany("INSERT OR REPLACE INTO band_replay (band, counter, seen_ms) VALUES (?, ?, ?)", rows)


_MAX_PARAMETERS = 999  # SQLite's oldest default limit of parameters per statement


@functools.cache
def _in_sql(head: str, count: int) -> str:
    # only placeholders are added to a fixed statement head
    return f"{head} ({', '.join(['?'] * count)})"


@functools.cache
def _values_sql(head: str, columns: int, rows: int) -> str:
    # only placeholders are added to a fixed statement head, as many as there are rows
    one = "(" + ", ".join(["?"] * columns) + ")"
    return f"{head} VALUES {', '.join([one] * rows)}"


def _read_replay(db: sqlite3.Connection) -> dict[str, ReplayState]:
    """Every device's replay record; the gaps table is optional (a buffer written before it)."""
    gaps: dict[str, bytes] = {}
    try:
        gaps = {str(d): bytes(g) for d, g in db.execute("SELECT device, gaps FROM replay_gaps")}
    except sqlite3.OperationalError:  # no such table: no gaps, everything below the window counts as seen
        pass
    return {
        str(device): ReplayState.from_row(int(boot), int(seq), int(bitmap), gaps.get(str(device), b""))
        for device, boot, seq, bitmap in db.execute("SELECT device, boot, seq, bitmap FROM replay")
    }


def _salvage_replay(path: Path) -> dict[str, ReplayState]:
    """Whatever replay rows can still be read from a corrupt buffer file."""
    out: dict[str, ReplayState] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            out = _read_replay(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.error("buffer_salvage_failed path=%s reason=%r", path, str(exc))
    return out
