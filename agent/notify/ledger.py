"""The delivery ledger: one SQLite file that remembers every alert, delivery and attempt.

Tables:
  alerts      one row per alert id (device/boot/seq): the alert, its state (open, acked,
              resolved, done, stale, closer), the round reached and when the next one is due
  deliveries  one row per (alert, kind, contact, channel): pending -> sending -> sent, or
              failed (retried with backoff) -> gave_up; cancelled once it is no longer needed;
              by_gateway when the gateway's fallback already sent it; unknown when a crash
              left it in doubt and the channel cannot take a repeat (docs/notifications.md)
  attempts    every attempt on every delivery with its result
  tokens      acknowledgement links (random ids; the link's HMAC covers id and expiry), used once
  commands    ACK commands owed to gateways, sent until central's broker took them
  meta        small counters (the last command seq per gateway)

Everything is written in transactions that commit with an fsync (WAL, synchronous=FULL) before
the notifier acts on them: an alert is in the ledger before its MQTT message is acknowledged,
and a delivery is marked `sending` before the message leaves, so after a kill -9 the ledger
says what may have gone out.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.notify.alert import Alert
from agent.shared.errors import StoreError

log = logging.getLogger("agent.notify.ledger")

# WAL + synchronous=FULL: every commit is on disk when it returns (see agent/buffer.py for the
# same choice); the ledger is small and written a few times per alert.
_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    type INTEGER NOT NULL,
    subject TEXT NOT NULL,
    alert TEXT NOT NULL,             -- Alert.to_json()
    state TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT -1,
    next_at_ms INTEGER,              -- next round due (open P0 alerts)
    created_ms INTEGER NOT NULL,
    acked_ms INTEGER, acked_by TEXT, acked_via TEXT,
    resolved_by TEXT                 -- the closer's alert id
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alerts_subject ON alerts (venue, subject, type);
CREATE INDEX IF NOT EXISTS alerts_due ON alerts (next_at_ms) WHERE next_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,        -- idempotency key given to webhook receivers
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,              -- alert | followup | acked | failing | test
    venue TEXT NOT NULL,
    contact TEXT NOT NULL,
    channel TEXT NOT NULL,           -- channel fingerprint (never the URL)
    round INTEGER NOT NULL DEFAULT 0,
    note TEXT,                       -- JSON: what the message needs besides the alert
    state TEXT NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    UNIQUE (alert_id, kind, contact, channel)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_at_ms) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_alert ON deliveries (alert_id);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    result TEXT NOT NULL,            -- sending | sent | failed | in_doubt
    error TEXT,
    PRIMARY KEY (delivery_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_s INTEGER NOT NULL,
    used_ms INTEGER,
    UNIQUE (alert_id, contact)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commands (
    alert_id TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT,
    state TEXT NOT NULL,             -- pending | sent
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
"""

OPEN_STATES = ("open",)


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: str
    alert: Alert
    state: str
    round: int
    next_at_ms: int | None
    created_ms: int
    acked_ms: int | None
    acked_by: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    key: str
    alert_id: str
    kind: str
    venue: str
    contact: str
    channel: str
    round: int
    note: dict[str, Any]
    state: str
    repeat: bool
    attempts: int
    next_at_ms: int | None
    last_error: str | None
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class CommandRow:
    alert_id: str
    venue: str
    gateway: str
    device: str
    boot: int
    seq: int
    text: str | None
    attempts: int
    next_at_ms: int


def _alert_row(r: sqlite3.Row) -> AlertRow:
    return AlertRow(
        r["id"],
        Alert.from_json(json.loads(r["alert"])),
        r["state"],
        r["round"],
        r["next_at_ms"],
        r["created_ms"],
        r["acked_ms"],
        r["acked_by"],
    )


def _delivery_row(r: sqlite3.Row) -> DeliveryRow:
    return DeliveryRow(
        r["id"],
        r["key"],
        r["alert_id"],
        r["kind"],
        r["venue"],
        r["contact"],
        r["channel"],
        r["round"],
        json.loads(r["note"]) if r["note"] else {},
        r["state"],
        bool(r["repeat"]),
        r["attempts"],
        r["next_at_ms"],
        r["last_error"],
        r["created_ms"],
    )


class Ledger:
    """The notifier's durable state. Single-threaded: the notifier's event loop owns it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(self.path, 0o600)  # who was told what: personal data
            self.db.row_factory = sqlite3.Row
            for pragma in _PRAGMAS:
                self.db.execute(pragma)
            self.db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the delivery ledger: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed (with an fsync) when the block ends without error."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK")
            raise StoreError(f"{self.path}: commit failed: {exc}") from exc

    # --- alerts ---------------------------------------------------------------------------

    def add_alert(self, db: sqlite3.Connection, alert: Alert, state: str, now_ms: int) -> bool:
        """Insert the alert; False when its id is already in the ledger (a repeat)."""
        cur = db.execute(
            "INSERT OR IGNORE INTO alerts (id, venue, type, subject, alert, state, created_ms) VALUES (?,?,?,?,?,?,?)",
            (alert.id, alert.venue, alert.type, alert.subject, json.dumps(alert.to_json()), state, now_ms),
        )
        return cur.rowcount == 1

    def alert(self, alert_id: str) -> AlertRow | None:
        r = self.db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if r is None else _alert_row(r)

    def set_alert(self, db: sqlite3.Connection, alert_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        db.execute(f"UPDATE alerts SET {cols} WHERE id = ?", (*fields.values(), alert_id))  # noqa: S608

    def alerts_in(self, states: tuple[str, ...]) -> list[AlertRow]:
        """Every alert in one of `states`, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT * FROM alerts WHERE state IN ({marks}) ORDER BY created_ms",  # noqa: S608
            states,
        ).fetchall()
        return [_alert_row(r) for r in rows]

    def open_alerts_for(self, venue: str, subject: str, types: frozenset[int]) -> list[AlertRow]:
        marks = ",".join("?" * len(types))
        rows = self.db.execute(
            f"SELECT * FROM alerts WHERE venue = ? AND subject = ? AND type IN ({marks})"  # noqa: S608
            " AND state IN ('open', 'acked', 'done')",
            (venue, subject, *sorted(types)),
        ).fetchall()
        return [_alert_row(r) for r in rows]

    def closers_for(self, venue: str, subject: str) -> list[AlertRow]:
        rows = self.db.execute(
            "SELECT * FROM alerts WHERE venue = ? AND subject = ? AND state = 'closer'", (venue, subject)
        ).fetchall()
        return [_alert_row(r) for r in rows]

    def due_alerts(self, now_ms: int) -> list[AlertRow]:
        rows = self.db.execute(
            "SELECT * FROM alerts WHERE next_at_ms IS NOT NULL AND next_at_ms <= ? ORDER BY next_at_ms", (now_ms,)
        ).fetchall()
        return [_alert_row(r) for r in rows]

    def next_alert_due(self) -> int | None:
        r = self.db.execute("SELECT MIN(next_at_ms) FROM alerts WHERE next_at_ms IS NOT NULL").fetchone()
        return None if r[0] is None else int(r[0])

    # --- deliveries -----------------------------------------------------------------------

    def add_delivery(
        self,
        db: sqlite3.Connection,
        key: str,
        alert_id: str,
        kind: str,
        venue: str,
        contact: str,
        channel: str,
        rnd: int,
        now_ms: int,
        note: dict[str, Any] | None = None,
        state: str = "pending",
    ) -> bool:
        cur = db.execute(
            "INSERT OR IGNORE INTO deliveries (key, alert_id, kind, venue, contact, channel, round, note, state,"
            " next_at_ms, created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                alert_id,
                kind,
                venue,
                contact,
                channel,
                rnd,
                json.dumps(note) if note else None,
                state,
                now_ms if state == "pending" else None,
                now_ms,
                now_ms,
            ),
        )
        return cur.rowcount == 1

    def delivery(self, delivery_id: int) -> DeliveryRow | None:
        r = self.db.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return None if r is None else _delivery_row(r)

    def deliveries(self, alert_id: str, kind: str | None = None) -> list[DeliveryRow]:
        if kind is None:
            rows = self.db.execute("SELECT * FROM deliveries WHERE alert_id = ? ORDER BY id", (alert_id,))
        else:
            rows = self.db.execute(
                "SELECT * FROM deliveries WHERE alert_id = ? AND kind = ? ORDER BY id", (alert_id, kind)
            )
        return [_delivery_row(r) for r in rows.fetchall()]

    def due_deliveries(self, now_ms: int, limit: int, exclude: set[int]) -> list[DeliveryRow]:
        """Deliveries due by `now_ms`, oldest first, leaving out those in `exclude` (in flight)."""
        rows = self.db.execute(
            "SELECT * FROM deliveries WHERE state IN ('pending', 'failed') AND next_at_ms <= ?"
            " ORDER BY next_at_ms, id LIMIT ?",
            (now_ms, limit + len(exclude)),
        ).fetchall()
        return [d for d in map(_delivery_row, rows) if d.id not in exclude][:limit]

    def next_delivery_due(self, exclude: set[int]) -> int | None:
        rows = self.db.execute(
            "SELECT id, next_at_ms FROM deliveries WHERE state IN ('pending', 'failed') ORDER BY next_at_ms LIMIT ?",
            (len(exclude) + 1,),
        ).fetchall()
        due = [int(r["next_at_ms"]) for r in rows if r["id"] not in exclude]
        return min(due) if due else None

    def in_doubt(self) -> list[DeliveryRow]:
        rows = self.db.execute("SELECT * FROM deliveries WHERE state = 'sending' ORDER BY id").fetchall()
        return [_delivery_row(r) for r in rows]

    def set_delivery(self, db: sqlite3.Connection, delivery_id: int, now_ms: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        db.execute(
            f"UPDATE deliveries SET {cols}, updated_ms = ? WHERE id = ?",  # noqa: S608
            (*fields.values(), now_ms, delivery_id),
        )

    def add_attempt(self, db: sqlite3.Connection, delivery_id: int, n: int, now_ms: int) -> None:
        db.execute(
            "INSERT OR REPLACE INTO attempts (delivery_id, n, started_ms, result) VALUES (?,?,?,'sending')",
            (delivery_id, n, now_ms),
        )

    def end_attempt(
        self, db: sqlite3.Connection, delivery_id: int, n: int, now_ms: int, result: str, error: str | None
    ) -> None:
        db.execute(
            "UPDATE attempts SET ended_ms = ?, result = ?, error = ? WHERE delivery_id = ? AND n = ?",
            (now_ms, result, error, delivery_id, n),
        )

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY n", (delivery_id,))
        return [dict(r) for r in rows.fetchall()]

    def cancel_pending(self, db: sqlite3.Connection, alert_id: str, kinds: tuple[str, ...], now_ms: int) -> int:
        marks = ",".join("?" * len(kinds))
        cur = db.execute(
            f"UPDATE deliveries SET state = 'cancelled', next_at_ms = NULL, updated_ms = ?"  # noqa: S608
            f" WHERE alert_id = ? AND kind IN ({marks}) AND state IN ('pending', 'failed')",
            (now_ms, alert_id, *kinds),
        )
        return cur.rowcount

    # --- tokens -------------------------------------------------------------------------

    def add_token(self, db: sqlite3.Connection, token_id: str, alert_id: str, contact: str, expires_s: int) -> str:
        """The token id for (alert, contact): the existing one, or `token_id` stored as new."""
        db.execute(
            "INSERT OR IGNORE INTO tokens (id, alert_id, contact, expires_s) VALUES (?,?,?,?)",
            (token_id, alert_id, contact, expires_s),
        )
        r = db.execute("SELECT id FROM tokens WHERE alert_id = ? AND contact = ?", (alert_id, contact)).fetchone()
        return str(r["id"])

    def token(self, token_id: str) -> dict[str, Any] | None:
        r = self.db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if r is None else dict(r)

    def open_tokens(self, contact: str, now_s: int) -> list[dict[str, Any]]:
        """The contact's unused, unexpired tokens, newest alert first."""
        rows = self.db.execute(
            "SELECT t.* FROM tokens t JOIN alerts a ON a.id = t.alert_id WHERE t.contact = ? AND t.used_ms IS NULL"
            " AND t.expires_s > ? ORDER BY a.created_ms DESC",
            (contact, now_s),
        )
        return [dict(r) for r in rows.fetchall()]

    def use_token(self, db: sqlite3.Connection, token_id: str, now_ms: int) -> bool:
        cur = db.execute("UPDATE tokens SET used_ms = ? WHERE id = ? AND used_ms IS NULL", (now_ms, token_id))
        return cur.rowcount == 1

    # --- commands to gateways -----------------------------------------------------------

    def add_command(self, db: sqlite3.Connection, alert: Alert, text: str | None, now_ms: int) -> None:
        db.execute(
            "INSERT OR IGNORE INTO commands (alert_id, venue, gateway, device, boot, seq, text, state, next_at_ms)"
            " VALUES (?,?,?,?,?,?,?,'pending',?)",
            (alert.id, alert.venue, alert.gateway, alert.device, alert.boot, alert.seq, text, now_ms),
        )

    def due_commands(self, now_ms: int) -> list[CommandRow]:
        rows = self.db.execute(
            "SELECT * FROM commands WHERE state = 'pending' AND next_at_ms <= ? ORDER BY next_at_ms", (now_ms,)
        ).fetchall()
        return [
            CommandRow(
                r["alert_id"],
                r["venue"],
                r["gateway"],
                r["device"],
                r["boot"],
                r["seq"],
                r["text"],
                r["attempts"],
                r["next_at_ms"],
            )
            for r in rows
        ]

    def next_command_due(self) -> int | None:
        r = self.db.execute("SELECT MIN(next_at_ms) FROM commands WHERE state = 'pending'").fetchone()
        return None if r[0] is None else int(r[0])

    def command_state(self, alert_id: str) -> str | None:
        r = self.db.execute("SELECT state FROM commands WHERE alert_id = ?", (alert_id,)).fetchone()
        return None if r is None else str(r["state"])

    def set_command(self, db: sqlite3.Connection, alert_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        db.execute(f"UPDATE commands SET {cols} WHERE alert_id = ?", (*fields.values(), alert_id))  # noqa: S608

    def next_command_seq(self, db: sqlite3.Connection, gateway: str, floor: int) -> int:
        """A command seq above every one used for `gateway` and at least `floor` (docs/protocol.md §8)."""
        r = db.execute("SELECT v FROM meta WHERE k = ?", (f"cmd_seq:{gateway}",)).fetchone()
        seq = max(floor, (int(r["v"]) + 1) if r is not None else 1)
        db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (f"cmd_seq:{gateway}", seq))
        return seq

    # --- retention ----------------------------------------------------------------------

    def prune(self, before_ms: int) -> int:
        """Forget alerts created before `before_ms` with nothing left to do; alerts removed.

        Safe for dedupe as long as `before_ms` is older than the notifier's max_alert_age_s: an
        alert older than that is recorded as stale and never sent, whatever the ledger holds.
        """
        with self.tx() as db:
            ids = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM alerts WHERE created_ms < ? AND next_at_ms IS NULL LIMIT 10000", (before_ms,)
                )
            ]
            for alert_id in ids:
                db.execute(
                    "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE alert_id = ?)",
                    (alert_id,),
                )
                db.execute("DELETE FROM deliveries WHERE alert_id = ?", (alert_id,))
                db.execute("DELETE FROM tokens WHERE alert_id = ?", (alert_id,))
                db.execute("DELETE FROM commands WHERE alert_id = ? AND state = 'sent'", (alert_id,))
                db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            # reports of failing channels and test messages belong to no alert
            db.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE created_ms < ?"
                " AND alert_id NOT IN (SELECT id FROM alerts) AND state NOT IN ('pending', 'failed', 'sending'))",
                (before_ms,),
            )
            db.execute(
                "DELETE FROM deliveries WHERE created_ms < ? AND alert_id NOT IN (SELECT id FROM alerts)"
                " AND state NOT IN ('pending', 'failed', 'sending')",
                (before_ms,),
            )
        return len(ids)

    # --- figures ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.db.execute("SELECT kind, state, COUNT(*) AS n FROM deliveries GROUP BY kind, state"):
            out[f"{r['kind']}_{r['state']}"] = int(r["n"])
        for r in self.db.execute("SELECT state, COUNT(*) AS n FROM alerts GROUP BY state"):
            out[f"alerts_{r['state']}"] = int(r["n"])
        return out
