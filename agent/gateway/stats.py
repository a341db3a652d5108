"""Counters and gauges of the gateway's parts: each part writes its own, readers take a snapshot.

One writer per counter. Every part creates its counters object, keeps it as `.counters` and
is the only code that changes it; all writers run on the event loop (the committer thread
reports through the pipeline, agent/gateway/pipeline.py `on_commit`):

    PipelineCounters  agent/gateway/pipeline.py        frames accepted and rejected (by reason), events
                                               committed, batches sealed, wristband events, and
                                               the buffer as the last commit round left it
    UplinkCounters    agent/gateway/uplink.py          link state, batches in flight and the receive
                                               time of their oldest event, batches and events
                                               central's broker acknowledged
    ReceiptCounters   agent/gateway/receipts.py        receipts handed to a source (the router), answers
                                               to resends held back by the rate limit (the ledger)
    LocalCounters     agent/gateway/sources/mqtt.py    local broker link state and connections lost,
                                               receipts it dropped
    SerialCounters    agent/gateway/sources/serial.py  bytes, frames, framing rejects (by reason),
                                               receipts dropped (port down or not draining)
    BleCounters       agent/gateway/wristbands/source.py     adverts accepted, repeated, rejected (by
                                               reason), scanner restarts
    CommandCounters   agent/gateway/command_handler.py        central's commands accepted (by op), rejected
                                               (by reason)
    LivenessCounters  agent/gateway/liveness.py      devices followed, DEVICE_OFFLINE/ONLINE raised,
                                               status messages rejected (by reason)
    FallbackCounters  agent/gateway/fallback.py      whether the gateway notifies people itself, alerts
                                               it took on and handed over, its events, the sounder

Readers (the periodic `stats` log line and `agent_stopped`, the gateway heartbeat of
docs/protocol.md §4.4, the Prometheus collector in agent/gateway/metrics.py) call `Stats.snapshot()`
and get a frozen copy. Prometheus scrapes from its own thread: the copy reads each integer
once and copies each by-reason table with one `dict()` call, which holds the GIL for the whole
copy, so a scrape never sees a table change size under it.

The counters are plain attributes on slotted objects: the hot paths pay one attribute
increment per event, as they did with the shared bag this replaces.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Lanes = tuple[int, int, int]


@dataclass(slots=True)
class PipelineCounters:
    """Written by Pipeline (agent/gateway/pipeline.py)."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # device frames, by reason (docs/protocol.md §6)
    committed: int = 0
    batches_sealed: int = 0
    band_events: int = 0  # wristband alerts raised by the gateway
    # the buffer as the last commit round left it (agent/gateway/committer.py CommitResult)
    backlog: Lanes = (0, 0, 0)
    backlog_bytes: Lanes = (0, 0, 0)
    backlog_oldest_ms: int | None = None  # receive time (unix ms) of the oldest event not yet sealed
    evicted: Lanes = (0, 0, 0)  # totals since the buffer was created
    store_error: str | None = None  # set while commits fail


@dataclass(slots=True)
class UplinkCounters:
    """Written by Uplink (agent/gateway/uplink.py)."""

    connected: bool = False
    inflight: int = 0  # sealed batches waiting for central's PUBACK
    inflight_oldest_ms: int | None = None  # receive time of the oldest event in them
    batches_acked: int = 0
    delivered: int = 0  # events in the batches central's broker acknowledged


@dataclass(slots=True)
class ReceiptCounters:
    """Written by ReceiptRouter (`sent`) and ReceiptLedger (`resends_limited`), agent/gateway/receipts.py."""

    sent: int = 0
    resends_limited: int = 0  # receipts not sent for a resend or replay: over the device's rate


@dataclass(slots=True)
class LocalCounters:
    """Written by LocalBroker (agent/gateway/sources/mqtt.py)."""

    connected: bool = False
    disconnects: int = 0  # connections to the local broker that were up and were lost
    receipts_dropped: int = 0  # downlink queue full or refused by the broker


@dataclass(slots=True)
class SerialCounters:
    """Written by SerialSources and its ports (agent/gateway/sources/serial.py)."""

    bytes: int = 0
    frames: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # framing, by reason (docs/protocol.md §9)
    receipts_dropped: int = 0


@dataclass(slots=True)
class BleCounters:
    """Written by BleSources (agent/gateway/wristbands/source.py)."""

    accepted: int = 0
    repeats: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # adverts, by reason (docs/protocol.md §10.4)
    scanner_restarts: int = 0


@dataclass(slots=True)
class CommandCounters:
    """Written by CommandHandler (agent/gateway/command_handler.py)."""

    accepted: Counter[str] = field(default_factory=Counter)  # by op
    rejected: Counter[str] = field(default_factory=Counter)  # by reason (docs/protocol.md §8)


@dataclass(slots=True)
class LivenessCounters:
    """Written by Liveness (agent/gateway/liveness.py)."""

    followed: int = 0  # posts and sensors followed
    offline: int = 0  # DEVICE_OFFLINE raised since start
    online: int = 0  # DEVICE_ONLINE raised since start
    rejected: Counter[str] = field(default_factory=Counter)  # status messages, by reason


@dataclass(slots=True)
class FallbackCounters:
    """Written by Fallback (agent/gateway/fallback.py)."""

    active: bool = False  # the gateway is notifying people itself (central unreachable)
    taken: int = 0  # alerts the gateway took on itself
    handed_over: int = 0  # of those, central's broker has them now
    notified_events: int = 0  # NOTIFIED events raised
    local_acks: int = 0  # acknowledgements at the gateway (LOCAL_ACK raised)
    sounder_runs: int = 0
    sounder_failures: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A read-only copy of every part's counters at one moment."""

    accepted: int
    rejected: Mapping[str, int]
    committed: int
    batches_sealed: int
    band_events: int
    backlog: Lanes
    backlog_bytes: Lanes
    evicted: Lanes
    store_error: str | None
    oldest_age_ms: int  # the oldest event central has not acknowledged; 0 when there is none
    uplink_connected: bool
    inflight_batches: int
    batches_acked: int
    delivered: int
    receipts_sent: int
    receipts_limited: int
    receipts_dropped: int
    local_connected: bool
    local_disconnects: int
    serial_bytes: int
    serial_frames: int
    serial_rejected: Mapping[str, int]
    ble_accepted: int
    ble_repeats: int
    ble_rejected: Mapping[str, int]
    ble_scanner_restarts: int
    commands_accepted: Mapping[str, int]
    commands_rejected: Mapping[str, int]
    devices_followed: int
    devices_offline: int
    devices_online: int
    status_rejected: Mapping[str, int]
    fallback_active: bool
    fallback_taken: int
    fallback_handed_over: int
    local_acks: int
    sounder_runs: int
    sounder_failures: int

    def log_fields(self) -> dict[str, Any]:
        """The fields of the `stats` and `agent_stopped` log lines, in their order."""
        return {
            "accepted": self.accepted,
            "committed": self.committed,
            "delivered": self.delivered,
            "batches_sealed": self.batches_sealed,
            "batches_acked": self.batches_acked,
            "receipts_sent": self.receipts_sent,
            "receipts_limited": self.receipts_limited,
            "rejected": dict(self.rejected),
            "serial_rejected": dict(self.serial_rejected),
            "ble_rejected": dict(self.ble_rejected),
            "commands_accepted": dict(self.commands_accepted),
            "commands_rejected": dict(self.commands_rejected),
            "backlog": list(self.backlog),
            "backlog_bytes": list(self.backlog_bytes),
            "oldest_age_ms": self.oldest_age_ms,
            "evicted": list(self.evicted),
            "inflight_batches": self.inflight_batches,
            "uplink": "up" if self.uplink_connected else "down",
            "local": "up" if self.local_connected else "down",
            "local_disconnects": self.local_disconnects,
            "devices_followed": self.devices_followed,
            "devices_offline": self.devices_offline,
            "devices_online": self.devices_online,
            "status_rejected": dict(self.status_rejected),
            "fallback": "on" if self.fallback_active else "off",
            "fallback_taken": self.fallback_taken,
            "local_acks": self.local_acks,
            "sounder_failures": self.sounder_failures,
        }


@dataclass(frozen=True, slots=True)
class Stats:
    """The read side: every part's counters, copied together by `snapshot()`."""

    pipeline: PipelineCounters = field(default_factory=PipelineCounters)
    uplink: UplinkCounters = field(default_factory=UplinkCounters)
    receipts: ReceiptCounters = field(default_factory=ReceiptCounters)
    local: LocalCounters = field(default_factory=LocalCounters)
    serial: SerialCounters = field(default_factory=SerialCounters)
    ble: BleCounters = field(default_factory=BleCounters)
    commands: CommandCounters = field(default_factory=CommandCounters)
    liveness: LivenessCounters = field(default_factory=LivenessCounters)
    fallback: FallbackCounters = field(default_factory=FallbackCounters)

    def snapshot(self, now_ms: int | None = None) -> Snapshot:
        p, u, loc, ser, ble, cmd = self.pipeline, self.uplink, self.local, self.serial, self.ble, self.commands
        oldest = [t for t in (p.backlog_oldest_ms, u.inflight_oldest_ms) if t is not None]
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        return Snapshot(
            accepted=p.accepted,
            rejected=dict(p.rejected),
            committed=p.committed,
            batches_sealed=p.batches_sealed,
            band_events=p.band_events,
            backlog=p.backlog,
            backlog_bytes=p.backlog_bytes,
            evicted=p.evicted,
            store_error=p.store_error,
            oldest_age_ms=max(0, now_ms - min(oldest)) if oldest else 0,
            uplink_connected=u.connected,
            inflight_batches=u.inflight,
            batches_acked=u.batches_acked,
            delivered=u.delivered,
            receipts_sent=self.receipts.sent,
            receipts_limited=self.receipts.resends_limited,
            receipts_dropped=loc.receipts_dropped + ser.receipts_dropped,
            local_connected=loc.connected,
            local_disconnects=loc.disconnects,
            serial_bytes=ser.bytes,
            serial_frames=ser.frames,
            serial_rejected=dict(ser.rejected),
            ble_accepted=ble.accepted,
            ble_repeats=ble.repeats,
            ble_rejected=dict(ble.rejected),
            ble_scanner_restarts=ble.scanner_restarts,
            commands_accepted=dict(cmd.accepted),
            commands_rejected=dict(cmd.rejected),
            devices_followed=self.liveness.followed,
            devices_offline=self.liveness.offline,
            devices_online=self.liveness.online,
            status_rejected=dict(self.liveness.rejected),
            fallback_active=self.fallback.active,
            fallback_taken=self.fallback.taken,
            fallback_handed_over=self.fallback.handed_over,
            local_acks=self.fallback.local_acks,
            sounder_runs=self.fallback.sounder_runs,
            sounder_failures=self.fallback.sounder_failures,
        )
