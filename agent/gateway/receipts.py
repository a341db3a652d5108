"""Receipts to devices (docs/protocol.md §3): which one an event has earned, and the way back.

    Pipeline.ingest --heard(device, source)--> ReceiptRouter <--register(name, send)-- sources
    Pipeline.on_commit  --stored / dropped-->  ReceiptLedger --send(device, boot, seq, kind)--^
    Uplink (PUBACK)     --delivered-------->   ReceiptLedger
    CommandHandler (central's ACK) --send(..., RECEIPT_ACKNOWLEDGED)--> ReceiptRouter

A receipt goes back the way its device last spoke: each source registers a route (its name
and how it writes a message to a device) when it is built, the pipeline tells the router the
source of every frame that verified, and a device never heard on a registered route (or not
heard yet) gets its receipts through the default route, the local broker. Receipts are
MACed under the device key (frames.receipt); devices no longer in the registry (revoked) get
none.

The ledger mirrors the buffer's `ledger` table on the event loop (the committer thread writes
the table in the same rounds): for each recent receipt-wanting event, the last receipt it
earned, so a device that sends an event again (it lost the receipt) is told again
(docs/protocol.md §6 step 7) without a query. Those answers to resends are rate-limited per
device: a resend and a replay are the same bytes, and without a limit each of 100,000 replays
of one captured frame would cost the targeted post a receipt to receive and check.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.gateway.buffer import LEDGER_PER_DEVICE
from agent.gateway.signer import SealedBatch
from agent.gateway.stats import ReceiptCounters
from agent.shared.frames import receipt
from agent.shared.protocol import RECEIPT_DELIVERED, RECEIPT_DROPPED, RECEIPT_STORED
from agent.shared.registry import Registry

Send = Callable[[str, bytes], None]  # (device id, receipt message) -> written or queued by a source
Key = tuple[str, int, int]  # (device, boot, seq)

PENDING = 0  # accepted, not yet durable (no receipt earned yet)
_RESENT = (RECEIPT_STORED, RECEIPT_DELIVERED, RECEIPT_DROPPED)
# Receipts answering resends, per device: a bucket of RESEND_BURST, refilled at RESEND_PER_S.
# The burst is what the ledger can answer for at all (a post that lost every receipt, e.g. in
# a power cut, resends its whole outbox on reconnecting and gets them all back at once); the
# rate is four times what a full outbox of 32 needs when it rechecks every 60 s and resends
# unstored entries every 5 s (docs/protocol.md §7).
RESEND_BURST = LEDGER_PER_DEVICE
RESEND_PER_S = 2.0


class ReceiptRouter:
    """Routes each device's receipts to the source it was last heard on."""

    __slots__ = ("_default", "_last", "_routes", "counters", "gateway_id", "registry")

    def __init__(self, gateway_id: str, registry: Registry) -> None:
        self.gateway_id = gateway_id
        self.registry = registry
        self.counters = ReceiptCounters()
        self._routes: dict[str, Send] = {}
        self._default: Send | None = None
        self._last: dict[str, str] = {}  # device id -> source of its last frame that verified

    def register(self, name: str, send: Send, *, default: bool = False) -> None:
        """A source's way to its devices; `default` for devices not heard on any route."""
        if name in self._routes:
            raise ValueError(f"receipt route {name!r} registered twice")
        self._routes[name] = send
        if default:
            self._default = send

    def heard(self, device: str, source: str) -> None:
        """A frame of `device` verified on `source`: its receipts go back that way from now on."""
        self._last[device] = source

    def send(self, device_id: str, boot: int, seq: int, kind: int) -> None:
        """Receipt `kind` for event (boot, seq) of `device_id`, MACed under the device key."""
        device = self.registry.get(device_id)
        if device is None:
            return
        route = self._routes.get(self._last.get(device_id, ""), self._default)
        if route is None:
            return
        route(device_id, receipt(device.key, self.gateway_id, boot, seq, kind))
        self.counters.sent += 1


class ReceiptLedger:
    """The receipt each recent receipt-wanting event has earned; sends receipts 1, 2 and 4."""

    __slots__ = ("_clock", "_registry", "_resend_budget", "entries", "router")

    def __init__(
        self,
        entries: dict[Key, int],
        router: ReceiptRouter,
        registry: Registry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entries = entries  # as Store.recover() found the ledger table
        self.router = router
        self._registry = registry
        self._clock = clock
        # device -> [tokens, clock at the last refill]; only devices whose frames verified
        self._resend_budget: dict[str, list[float]] = {}

    def accepted(self, key: Key) -> None:
        """A receipt-wanting event was accepted; it earns receipt 1 once it is durable."""
        self.entries[key] = PENDING

    def resend(self, key: Key) -> None:
        """A replayed receipt-wanting event: tell its device again what it has earned, if anything
        and if the device's resend budget allows (counted as `resends_limited` otherwise)."""
        known = self.entries.get(key)
        if known in _RESENT:
            now = self._clock()
            budget = self._resend_budget.get(key[0])
            if budget is None:
                budget = self._resend_budget[key[0]] = [float(RESEND_BURST), now]
            else:
                budget[0] = min(float(RESEND_BURST), budget[0] + (now - budget[1]) * RESEND_PER_S)
                budget[1] = now
            if budget[0] < 1.0:
                self.router.counters.resends_limited += 1
                return
            budget[0] -= 1.0
            self.router.send(key[0], key[1], key[2], known)

    def stored(self, key: Key) -> None:
        """Durable (fsynced): receipt 1, unless the event has already earned a later one."""
        if self.entries.get(key, PENDING) < RECEIPT_STORED:
            self.entries[key] = RECEIPT_STORED
        self.router.send(key[0], key[1], key[2], RECEIPT_STORED)

    def dropped(self, key: Key) -> None:
        """Evicted from a full buffer (docs/protocol.md §4.5): receipt 4, the device stops waiting."""
        self.entries[key] = RECEIPT_DROPPED
        self.router.send(key[0], key[1], key[2], RECEIPT_DROPPED)

    def delivered(self, batch: SealedBatch) -> None:
        """Central's broker acknowledged `batch`: receipt 2 for each event in it that asked."""
        for key in batch.flagged:
            self.entries[key] = RECEIPT_DELIVERED
            self.router.send(key[0], key[1], key[2], RECEIPT_DELIVERED)
        self._prune()

    def _prune(self) -> None:
        # the durable ledger keeps the newest entries per device; the mirror stays bounded too
        entries = self.entries
        if len(entries) > LEDGER_PER_DEVICE * max(len(self._registry), 1) * 2:
            by_device: dict[str, list[Key]] = {}
            for key in entries:
                by_device.setdefault(key[0], []).append(key)
            for keys in by_device.values():
                keys.sort()
                for key in keys[:-LEDGER_PER_DEVICE]:
                    if entries[key] in (RECEIPT_DELIVERED, RECEIPT_DROPPED):
                        del entries[key]
