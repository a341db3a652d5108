"""The field audit log: append-only, hash-chained JSON lines, one per provisioning action.

Each line is a JSON object with sorted keys:

    {"action": "flash.register", "detail": {...}, "device": "AP-...", "hash": "<hex>",
     "prev": "<hex>", "seq": 7, "time": "2026-01-02T03:04:05Z", "who": "tech@laptop"}

`hash` is SHA-256 over the canonical JSON of the entry without `hash` (sorted keys, no
spaces); `prev` is the previous entry's hash (64 zeros for seq 1); seq counts from 1. So an
edited, removed, inserted or reordered line breaks the chain at that line. Cutting lines off
the end is caught against the head (seq, hash) the encrypted inventory records at every save.
No entry carries a secret: device keys never reach this module.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.shared.files import write_all
from provisioning.errors import ProvisionError

ZERO = "0" * 64
MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def operator() -> str:
    """Who runs the tool: $GE_PROVISION_OPERATOR, else user@host."""
    who = os.environ.get("GE_PROVISION_OPERATOR")
    if who:
        return who[:64]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def verify(path: Path, anchor: Head | None = None) -> Head:
    """Check the whole chain (and that it reaches `anchor`); returns the last entry's head."""
    path = Path(path)
    head = Head(0, ZERO)
    seen_anchor = anchor is None or anchor.seq == 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        f = None
    except OSError as exc:
        raise ProvisionError(f"{path}: {exc.strerror}") from exc
    if f is not None:
        with f:
            for n, raw in enumerate(f, 1):
                where = f"{path}: line {n}"
                head = _next_head(where, raw, head)
                if anchor is not None and head.seq == anchor.seq:
                    if head.hash != anchor.hash:
                        raise ProvisionError(f"{where}: differs from the entry the inventory recorded (rewritten)")
                    seen_anchor = True
    if anchor is not None and not seen_anchor:
        raise ProvisionError(
            f"{path}: ends at entry {head.seq} but the inventory recorded entry {anchor.seq} (entries cut off the end)"
        )
    return head


def _next_head(where: str, raw: bytes, head: Head) -> Head:
    """The head after the log line `raw`, which must be the entry that follows `head`."""
    if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
        raise ProvisionError(f"{where}: not a complete audit entry (cut or over-long line)")
    try:
        entry = json.loads(raw)
    except ValueError:
        raise ProvisionError(f"{where}: not JSON; the audit log was altered") from None
    if not isinstance(entry, dict):
        raise ProvisionError(f"{where}: not an audit entry; the audit log was altered")
    if entry.get("seq") != head.seq + 1:
        raise ProvisionError(f"{where}: seq {entry.get('seq')!r}, expected {head.seq + 1} (lines removed or reordered)")
    if entry.get("prev") != head.hash:
        raise ProvisionError(f"{where}: does not chain to the entry before it (altered, removed or inserted)")
    if entry.get("hash") != entry_hash(entry):
        raise ProvisionError(f"{where}: its hash does not match its content (altered)")
    return Head(head.seq + 1, str(entry["hash"]))


class AuditLog:
    """Appends entries to the log; refuses to append to a log whose chain is broken."""

    def __init__(self, path: Path, anchor: Head | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.head = verify(self.path, anchor)
        self.who = operator()

    def append(self, action: str, device: str | None = None, **detail: Any) -> Head:
        """Write one entry (O_APPEND, fsync) and return the new head."""
        with self._lock:
            entry: dict[str, Any] = {
                "action": action,
                "detail": detail,
                "device": device,
                "prev": self.head.hash,
                "seq": self.head.seq + 1,
                "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "who": self.who,
            }
            entry["hash"] = entry_hash(entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                write_all(fd, _canonical(entry) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self.head = Head(entry["seq"], entry["hash"])
            return self.head
