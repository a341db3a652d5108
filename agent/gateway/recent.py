"""The last alarms and alerts through the gateway, how far each got, and one log line per alarm.

    Pipeline.ingest / gateway_event / band_events --accepted(event)--> RecentEvents
    Pipeline.on_commit --committed(round's events), sealed(round's batches)-->   (receipt 1, batch)
    Uplink's PUBACK    --delivered(batch)-->                                      (receipt 2)
    CommandHandler     --acknowledged(device, boot, seq)-->                       (receipt 3)
    the status page    <--snapshot()--

Only P0 and P1 events are kept (alarms, alerts, state changes: rare); telemetry costs one
comparison. The ring holds the last `size` of them; everything it keeps on the side (events
not sealed yet, batches not acknowledged yet) points into the ring and leaves with it, so its
memory is bounded whatever the traffic. Which batch carries an event is found by looking for
the event's encoding in the sealed batch's bytes (an event's canonical encoding holds its
device, boot, seq and MAC, so it occurs in exactly one batch); that search runs only while a
tracked event waits for its batch, so a round of telemetry pays an empty-dict check.

Every alarm (P0) that central's broker acknowledged is logged at info, once:

    alarm device=AP-0001 zone=entrance type=ALARM ref=AP-0001/3/17 stored_ms=3.1 delivered_ms=14.2

(the gateway's latencies: from the frame's acceptance to the fsync, and to central's PUBACK).
An alarm that is stored while central cannot take it (no batch sealed in the round that
stored it) is logged once more when stored, as `alarm_held`, so an installer pressing a post
during an outage still sees it arrive.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.gateway.planner import Submitted
from agent.gateway.signer import SealedBatch
from agent.shared.frames import Event
from agent.shared.log import Fields, logfmt
from agent.shared.protocol import type_name
from agent.shared.registry import Registry

log = logging.getLogger(__name__)

Key = tuple[str, int, int]  # (device, boot, seq)
RING = 50


class _Entry:
    # times: monotonic seconds (latencies), shown as the wall-clock time of the frame's arrival
    # plus the monotonic time since then
    __slots__ = ("acked", "delivered", "dropped", "encoded", "event", "held", "stored", "t0", "zone")

    def __init__(self, event: Event, zone: str | None, t0: float) -> None:
        self.event = event
        self.zone = zone
        self.t0 = t0
        self.encoded: bytes | None = event.encoded  # until its batch is known
        self.stored: float | None = None
        self.delivered: float | None = None
        self.acked: float | None = None
        self.held = False
        self.dropped = False  # evicted from a full buffer (receipt 4; never an alarm)

    def wall_ms(self, t: float | None) -> int | None:
        return None if t is None else self.event.received + round((t - self.t0) * 1000)


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One alarm or alert as the page shows it; times are unix ms, None until it happened."""

    device: str
    boot: int
    seq: int
    type: int
    type_name: str
    priority: int
    zone: str | None
    received_ms: int
    stored_ms: int | None  # receipt 1: durable in the buffer
    delivered_ms: int | None  # receipt 2: central's broker acknowledged its batch
    acked_ms: int | None  # receipt 3: a dispatcher acknowledged it
    dropped: bool  # evicted from a full buffer before central had it (P1 only)

    @property
    def ref(self) -> str:
        """The event reference `guardian-agent verify` prints and `command ack` takes."""
        return f"{self.device}/{self.boot}/{self.seq}"

    @property
    def receipt(self) -> int:
        """The furthest receipt reached: 0 accepted, 1 stored, 2 delivered, 3 acknowledged."""
        if self.acked_ms is not None:
            return 3
        if self.delivered_ms is not None:
            return 2
        return 1 if self.stored_ms is not None else 0


class RecentEvents:
    """The last alarms and alerts (P0, P1) with their receipts; see the module docstring."""

    __slots__ = ("_by_batch", "_clock", "_ring", "_size", "_unsealed", "_unstored", "gateway_id", "registry")

    def __init__(
        self, gateway_id: str, registry: Registry, *, size: int = RING, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gateway_id = gateway_id
        self.registry = registry
        self._size = size
        self._clock = clock
        self._ring: OrderedDict[Key, _Entry] = OrderedDict()
        self._unstored: dict[Key, _Entry] = {}
        self._unsealed: dict[Key, _Entry] = {}
        self._by_batch: dict[int, list[_Entry]] = {}

    # --- writers (the event loop) ---------------------------------------------------------

    def accepted(self, event: Event) -> None:
        """An event was accepted or raised; kept when it is an alarm or an alert (P0, P1)."""
        if event.prio > 1:
            return
        key = event.key
        entry = _Entry(event, self._zone(event), self._clock())
        ring = self._ring
        ring[key] = entry
        self._unstored[key] = entry
        if len(ring) > self._size:
            old_key, _ = ring.popitem(last=False)
            self._forget(old_key)

    def committed(self, items: Sequence[Submitted]) -> None:
        """A commit round made these events durable: receipt 1."""
        unstored = self._unstored
        if not unstored:
            return
        now = self._clock()
        for s in items:
            entry = unstored.pop(s.event.key, None)
            if entry is not None:
                entry.stored = now
                self._unsealed[s.event.key] = entry

    def sealed(self, batches: Sequence[SealedBatch]) -> None:
        """The batches a commit round sealed; then alarms stored but left unsealed are held."""
        unsealed = self._unsealed
        if not unsealed:
            return
        for batch in batches:
            found = [k for k, e in unsealed.items() if e.encoded is not None and e.encoded in batch.blob]
            for key in found:
                entry = unsealed.pop(key)
                entry.encoded = None
                self._by_batch.setdefault(batch.seq, []).append(entry)
        for entry in unsealed.values():
            if entry.event.prio == 0 and not entry.held:
                entry.held = True
                self._log("alarm_held", entry, "waiting for central")

    def delivered(self, batch: SealedBatch) -> None:
        """Central's broker acknowledged `batch`: receipt 2 for the events it carries."""
        entries = self._by_batch.pop(batch.seq, None)
        if entries is None:
            return
        now = self._clock()
        for entry in entries:
            entry.delivered = now
            if entry.event.prio == 0:
                self._log("alarm", entry)

    def acknowledged(self, device: str, boot: int, seq: int) -> None:
        """Central's ACK command for the event: receipt 3."""
        entry = self._ring.get((device, boot, seq))
        if entry is not None and entry.acked is None:
            entry.acked = self._clock()

    def dropped(self, keys: Iterable[Key]) -> None:
        """Evicted from a full buffer (P1 only; an alarm is never evicted)."""
        for key in keys:
            entry = self._ring.get(key)
            if entry is not None:
                entry.dropped = True
                self._forget(key)

    # --- reader (the status page) ----------------------------------------------------------

    def snapshot(self) -> list[RecentEvent]:
        """The kept events, newest first."""
        out = []
        for entry in reversed(self._ring.values()):
            ev = entry.event
            out.append(
                RecentEvent(
                    ev.device,
                    ev.boot,
                    ev.seq,
                    ev.type,
                    type_name(ev.type),
                    ev.prio,
                    entry.zone,
                    ev.received,
                    entry.wall_ms(entry.stored),
                    entry.wall_ms(entry.delivered),
                    entry.wall_ms(entry.acked),
                    entry.dropped,
                )
            )
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _zone(self, event: Event) -> str | None:
        device = self.registry.get(event.device)
        if device is not None:
            if device.kind != "wristband":
                return device.zone
            # a wristband alert names the zone it was raised in (docs/protocol.md §4.4)
            zone = event.data.get(2)
            return zone if isinstance(zone, str) else None
        if event.device == self.gateway_id:
            # DEVICE_OFFLINE/ONLINE and NOTIFIED name a device in data key 1
            subject = event.data.get(1)
            found = self.registry.get(subject) if isinstance(subject, str) else None
            return found.zone if found is not None else None
        return None

    def _forget(self, key: Key) -> None:
        self._unstored.pop(key, None)
        entry = self._unsealed.pop(key, None)
        if entry is None:
            # it may wait in a batch; the batch's list keeps it only until the PUBACK, so drop it there
            for seq, entries in list(self._by_batch.items()):
                kept = [e for e in entries if e.event.key != key]
                if len(kept) != len(entries):
                    if kept:
                        self._by_batch[seq] = kept
                    else:
                        del self._by_batch[seq]
                    break

    def _log(self, what: str, entry: _Entry, reason: str | None = None) -> None:
        ev = entry.event
        fields = [
            f"device={logfmt(ev.device)}",
            f"zone={logfmt(entry.zone) if entry.zone is not None else '-'}",
            f"type={type_name(ev.type)}",
            f"ref={logfmt(f'{ev.device}/{ev.boot}/{ev.seq}')}",
        ]
        for name, t in (("stored_ms", entry.stored), ("delivered_ms", entry.delivered)):
            if t is not None:
                fields.append(f"{name}={(t - entry.t0) * 1000:.1f}")
        if reason is not None:
            fields.append(f"reason={logfmt(reason)}")
        # the values went through logfmt() one by one: the line is written as it is
        log.info("%s %s", what, Fields(" ".join(fields)))
