"""What the status page and `guardian-agent status` show, built from the parts' snapshots.

`build()` is pure apart from the clock and one disk query: it reads only what the readers
return (copies: Stats.snapshot(), RecentEvents.snapshot(), the BLE source's last sightings,
the liveness tracker's snapshot) and never touches the pipeline's state, so the page cannot
slow or lock the alarm path beyond the cost of reading those copies. The result is plain
JSON (docs/deploy-raspberry-pi.md, "The status page", says what each figure means).

Figures the gateway does not know are absent or null, never made up: a post's battery, RSSI
and firmware version are not in its frames (docs/protocol.md §2.1), so only wristbands have
battery and RSSI (from their adverts), and firmware is null until devices report it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.gateway.recent import RecentEvent
from agent.gateway.stats import Snapshot
from agent.gateway.wristbands.source import BandSeen, ScannerState
from agent.shared.registry import Device

LANES = ("P0", "P1", "P2")
# thresholds of the page's "needs attention" list
UNDELIVERED_WARN_MS = 60_000  # an event waiting this long: central is not taking batches
DISK_WARN_FRACTION = 0.05  # less free than this on the buffer's file system
DISK_WARN_BYTES = 200 * 1024 * 1024
HISTORY_S = 3600  # rejects "in the last hour"
HISTORY_STEP_S = 60


class DeviceLiveness(Protocol):
    """One device as the liveness tracker sees it (agent/gateway/liveness.py)."""

    @property
    def last_heard_ms(self) -> int | None: ...
    @property
    def interval_ms(self) -> int | None: ...
    @property
    def offline_since_ms(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Readers:
    """The snapshot functions the view is built from; each returns a copy."""

    stats: Callable[[], Snapshot]
    recent: Callable[[], Sequence[RecentEvent]]
    devices: Callable[[], Iterable[Device]]
    bands: Callable[[], Mapping[str, BandSeen]]
    scanners: Callable[[], Sequence[ScannerState]]
    liveness: Callable[[], Mapping[str, DeviceLiveness]] | None = None


class RejectHistory:
    """Reject totals sampled once a minute, for the counts of the last hour."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, dict[tuple[str, str], int]]] = deque(maxlen=HISTORY_S // HISTORY_STEP_S + 1)

    def last_hour(self, now: float, totals: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        if not self._samples or now - self._samples[-1][0] >= HISTORY_STEP_S:
            self._samples.append((now, dict(totals)))
        base = next((c for t, c in self._samples if now - t <= HISTORY_S), {})
        return {k: n - base.get(k, 0) for k, n in totals.items()}


def disk(data_dir: Path, buffer_path: Path) -> dict[str, Any]:
    """The buffer's file system and the buffer's own size (SQLite file and its WAL)."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return {"path": str(data_dir), "error": exc.strerror}
    size = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):  # no WAL file, or the buffer not created yet
            size += buffer_path.with_name(buffer_path.name + suffix).stat().st_size
    return {"path": str(data_dir), "free_bytes": usage.free, "total_bytes": usage.total, "buffer_bytes": size}


def build(
    readers: Readers,
    *,
    gateway: str,
    venue: str,
    disk_state: dict[str, Any],
    history: RejectHistory,
    started: float,
    now: float | None = None,
) -> dict[str, Any]:
    """The whole view as a JSON-able dict (the page's /api/status)."""
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    st = readers.stats()
    scanners = readers.scanners()
    devices = _devices(readers, now_ms)
    view: dict[str, Any] = {
        "gateway": {"id": gateway, "venue": venue, "now_ms": now_ms, "uptime_s": int(now - started)},
        "health": _health(st, disk_state),
        "counters": {
            "frames_accepted": st.accepted,
            "events_committed": st.committed,
            "events_delivered": st.delivered,
            "batches_sealed": st.batches_sealed,
            "batches_acked": st.batches_acked,
            "receipts_sent": st.receipts_sent,
            "receipts_dropped": st.receipts_dropped,
            "adverts_accepted": st.ble_accepted,
            "band_events": st.band_events,
        },
        "events": [_event(e) for e in readers.recent()],
        "devices": devices,
        "scanners": [
            {
                "name": s.name,
                "backend": s.backend,
                "running": s.running,
                "silent_s": round(s.silent_s, 1),
                "blind": s.blind,
                "restarts": s.restarts,
            }
            for s in scanners
        ],
        "rejects": _rejects(st, history, now),
    }
    view["problems"] = problems(view)
    return view


def _health(st: Snapshot, disk_state: dict[str, Any]) -> dict[str, Any]:
    return {
        "uplink": {"up": st.uplink_connected, "inflight_batches": st.inflight_batches},
        "local_broker": {"up": st.local_connected},
        "buffer": {
            "lanes": [
                {"lane": lane, "events": st.backlog[i], "bytes": st.backlog_bytes[i], "evicted": st.evicted[i]}
                for i, lane in enumerate(LANES)
            ],
            "oldest_undelivered_ms": st.oldest_age_ms,
            "store_error": st.store_error,
        },
        "disk": disk_state,
    }


def _event(e: RecentEvent) -> dict[str, Any]:
    return {
        "ref": e.ref,
        "device": e.device,
        "type": e.type,
        "type_name": e.type_name,
        "priority": e.priority,
        "zone": e.zone,
        "received_ms": e.received_ms,
        "stored_ms": e.stored_ms,
        "delivered_ms": e.delivered_ms,
        "acked_ms": e.acked_ms,
        "receipt": e.receipt,
        "dropped": e.dropped,
        "latency_ms": None if e.delivered_ms is None else e.delivered_ms - e.received_ms,
    }


def _devices(readers: Readers, now_ms: int) -> list[dict[str, Any]]:
    bands = readers.bands()
    live = readers.liveness() if readers.liveness is not None else {}
    out = []
    for d in sorted(readers.devices(), key=lambda d: d.id):
        # bands are followed by their adverts, posts and sensors by the liveness tracker
        followed = d.kind == "wristband" or readers.liveness is not None
        row: dict[str, Any] = {
            "id": d.id,
            "kind": d.kind,
            "zone": d.zone,
            "last_heard_ms": None,
            "heartbeat_ms": None,
            "offline_since_ms": None,
            "state": "not heard" if followed else "unknown",
            "battery": None,
            "rssi": None,
            "scanner": None,
            "firmware": None,
        }
        seen = bands.get(d.id)
        if seen is not None:
            row.update(last_heard_ms=seen.t_ms, battery=seen.battery, rssi=seen.rssi, scanner=seen.scanner)
            row["state"] = "strap open" if seen.strap_open else ("worn" if seen.worn else "not worn")
        tracked = live.get(d.id)
        if tracked is not None:
            if tracked.last_heard_ms is not None and (row["last_heard_ms"] or 0) < tracked.last_heard_ms:
                row["last_heard_ms"] = tracked.last_heard_ms
            row["heartbeat_ms"] = tracked.interval_ms
            row["offline_since_ms"] = tracked.offline_since_ms
            if tracked.offline_since_ms is not None:
                row["state"] = "offline"
            elif tracked.last_heard_ms is not None and seen is None:
                row["state"] = "online"
        out.append(row)
    return out


_REJECT_SOURCES = (
    ("frames", "rejected"),
    ("serial", "serial_rejected"),
    ("adverts", "ble_rejected"),
    ("commands", "commands_rejected"),
)


def _rejects(st: Snapshot, history: RejectHistory, now: float) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str], int] = {}
    for source, attr in _REJECT_SOURCES:
        for reason, n in getattr(st, attr).items():
            if source == "adverts" and reason == "other_company":
                continue  # other companies' beacons: normal on the air, not a rejection
            totals[(source, reason)] = n
    recent = history.last_hour(now, totals)
    order = sorted(totals, key=lambda k: (-recent.get(k, 0), -totals[k], k))
    return [
        {
            "source": source,
            "reason": reason,
            "total": totals[(source, reason)],
            "last_hour": recent.get((source, reason), 0),
        }
        for source, reason in order
    ]


def problems(view: dict[str, Any]) -> list[str]:
    """What needs an installer's attention, in words; empty when all is well."""
    health = view["health"]
    out = []
    if not health["uplink"]["up"]:
        out.append("central is unreachable: events wait in the buffer")
    if not health["local_broker"]["up"]:
        out.append("the local broker is down: posts and sensors cannot reach the gateway")
    buf = health["buffer"]
    if buf["store_error"]:
        out.append(f"the buffer cannot be written: {buf['store_error']}")
    if buf["oldest_undelivered_ms"] >= UNDELIVERED_WARN_MS:
        out.append(f"an event has waited {buf['oldest_undelivered_ms'] // 1000} s for central")
    dk = health["disk"]
    if "error" in dk:
        out.append(f"the buffer's disk cannot be read: {dk['error']}")
    elif dk["free_bytes"] < max(DISK_WARN_BYTES, dk["total_bytes"] * DISK_WARN_FRACTION):
        out.append(f"the disk is nearly full: {dk['free_bytes'] // (1024 * 1024)} MiB free")
    offline = [d["id"] for d in view["devices"] if d["state"] == "offline"]
    if offline:
        out.append(f"{len(offline)} device(s) offline: {', '.join(offline[:5])}{' ...' if len(offline) > 5 else ''}")
    blind = [s["name"] for s in view["scanners"] if s["blind"]]
    if blind:
        out.append(f"BLE scanner(s) hear nothing: {', '.join(blind)}")
    return out
