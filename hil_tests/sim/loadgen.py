"""Simulated devices that put a steady mixed load on the gateway's local broker.

Frames are built with the firmware's own frame module (firmware/lib/frame.py, on CPython).
Like the alarm post firmware, a device keeps every frame that asks for receipts (all P0 and
P1 here) until receipt 2 or receipt 4, sends it again after `resend_s` while receipt 1 is
missing and after `recheck_s` while receipt 2 is (the gateway then answers with the receipt
for the event's current state), so the load behaves as real devices would across agent
crashes and broker restarts. P2 frames
(telemetry) are sent once and not tracked, as a device does with heartbeats.

With `resend=False` every frame goes out exactly once: nothing a gateway loses after its
receipt 1 can come back through a device's resend, so a test sees every such loss.

`FleetLoad` runs its own asyncio loop in a thread, so a test can kill and restart processes
from its own thread while the load keeps flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiomqtt

from agent.shared.registry import Device
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

TYPES = {0: fwframe.T_ALARM, 1: fwframe.T_TAMPER, 2: fwframe.T_HEARTBEAT}

Key = tuple[str, int, int]


@dataclass
class _Pending:
    topic: str
    blob: bytes
    prio: int
    sent_at: float = 0.0


@dataclass
class LoadReport:
    """What the simulated devices sent and what the gateway told them."""

    sent: dict[Key, int] = field(default_factory=dict)  # key -> priority
    stored: set[Key] = field(default_factory=set)  # receipt 1 seen
    delivered: set[Key] = field(default_factory=set)  # receipt 2 seen
    dropped: set[Key] = field(default_factory=set)  # receipt 4 seen
    resent: int = 0
    reconnects: int = 0
    bad_receipts: int = 0

    def keys(self, prio: int) -> set[Key]:
        return {k for k, p in self.sent.items() if p == prio}


class FleetLoad:
    """Devices publishing `rate` frames/s in total, mixed P0/P1/P2 by `mix` (fractions)."""

    def __init__(
        self,
        broker: tuple[str, int],
        devices: Sequence[Device],
        rate: float = 200.0,
        mix: tuple[float, float, float] = (0.05, 0.15, 0.80),
        seed: int = 0,
        resend_s: float = 2.0,
        recheck_s: float = 5.0,
        boot: int = 1,
        resend: bool = True,
    ) -> None:
        self.broker = broker
        self.devices = list(devices)
        self.rate = rate
        self.mix = mix
        self.rng = random.Random(seed)
        self.resend_s = resend_s
        self.recheck_s = recheck_s
        self.resend = resend  # False: each frame once, whatever its receipts say
        self.boot = boot
        self.report = LoadReport()
        self._seq = dict.fromkeys((d.id for d in self.devices), 0)
        self._keys = {d.id: d.key for d in self.devices}
        self._pending: dict[Key, _Pending] = {}
        self._lock = threading.Lock()
        self._sending = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # --- test thread ---------------------------------------------------------------

    def start(self) -> None:
        self._sending.set()
        self._thread = threading.Thread(target=self._main, name="fleet-load", daemon=True)
        self._thread.start()

    def stop_sending(self) -> None:
        """No new frames from now on; pending ones are still resent until their receipts."""
        self._sending.clear()

    def stop(self) -> None:
        self._sending.clear()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        if self.error is not None:
            raise RuntimeError(f"fleet load failed: {self.error!r}") from self.error

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every tracked frame has receipt 2 or 4 (after stop_sending())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.05)
        return False

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def progress(self) -> tuple[int, int]:
        """(alarms sent, events with receipt 1) so far, while the load runs."""
        with self._lock:
            return sum(1 for p in self.report.sent.values() if p == 0), len(self.report.stored)

    # --- load thread ---------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _run(self) -> None:
        host, port = self.broker
        while not self._stop.is_set():
            try:
                async with aiomqtt.Client(host, port, identifier="fleet-load", keepalive=5) as client:
                    await client.subscribe("ge/dev/+/down", qos=1)
                    with self._lock:
                        for p in self._pending.values():
                            p.sent_at = 0.0  # everything unconfirmed goes again on a new connection
                    reader = asyncio.create_task(self._receipts(client))
                    try:
                        await self._publish_loop(client)
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await reader
                    return
            except aiomqtt.MqttError:
                self.report.reconnects += 1
                await asyncio.sleep(0.2)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        tick = 0.01
        carry = 0.0
        while not self._stop.is_set():
            if self._sending.is_set():
                carry += self.rate * tick
                while carry >= 1.0:
                    carry -= 1.0
                    await self._new_frame(client)
            await self._resend_due(client)
            await asyncio.sleep(tick)

    async def _new_frame(self, client: aiomqtt.Client) -> None:
        device = self.rng.choice(self.devices).id
        prio = self.rng.choices((0, 1, 2), self.mix)[0]
        self._seq[device] += 1
        seq = self._seq[device]
        flags = fwframe.FLAG_RECEIPTS if prio < 2 else 0
        blob = fwframe.build(self._keys[device], device, self.boot, seq, TYPES[prio], seq, {}, flags)
        key = (device, self.boot, seq)
        topic = f"ge/dev/{device}/up"
        with self._lock:
            self.report.sent[key] = prio
            if flags:
                self._pending[key] = _Pending(topic, blob, prio, time.monotonic())
        await client.publish(topic, blob, qos=1)

    async def _resend_due(self, client: aiomqtt.Client) -> None:
        if not self.resend:
            return
        now = time.monotonic()
        with self._lock:
            stored = self.report.stored
            due = [
                (k, p)
                for k, p in self._pending.items()
                if now - p.sent_at >= (self.recheck_s if k in stored else self.resend_s)
            ]
            for _, p in due:
                p.sent_at = now
        for _, p in sorted(due):
            self.report.resent += 1
            await client.publish(p.topic, p.blob, qos=1)

    async def _receipts(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            device = str(msg.topic).split("/")[2]
            key_bytes = self._keys.get(device)
            payload = msg.payload
            if key_bytes is None or not isinstance(payload, bytes):
                self.report.bad_receipts += 1
                continue
            try:
                boot, seq, kind = fwframe.parse_receipt(key_bytes, payload)
            except fwframe.FrameError:
                self.report.bad_receipts += 1
                continue
            key = (device, boot, seq)
            with self._lock:
                if kind == fwframe.R_STORED:
                    self.report.stored.add(key)
                    pending = self._pending.get(key)
                    if pending is not None:
                        pending.sent_at = time.monotonic()
                elif kind == fwframe.R_DELIVERED:
                    self.report.stored.add(key)
                    self.report.delivered.add(key)
                    self._pending.pop(key, None)
                elif kind == fwframe.R_DROPPED:
                    self.report.dropped.add(key)
                    self._pending.pop(key, None)
