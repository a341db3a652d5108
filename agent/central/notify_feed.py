"""Central's side: gateway batches in (verified in-process), ACK commands out.

    central broker --batches--> CentralFeed: agent.central.batch_verifier.BatchVerifier.feed() (signature, chain,
        dedupe, device MACs) -> each accepted event -> Notifier.alert() (ledger commit)
        -> PUBACK. A message is acknowledged only after the ledger holds what it caused, so a
        kill -9 loses nothing: the broker hands the batch over again (persistent session) and
        the ledger drops the alert ids it already has.
    Notifier.ack() -> ledger `commands` -> CommandSender: a signed ACK (docs/protocol.md §8)
        on venues/<venue>/gateways/<gw>/commands, retried until central's broker took it.

Why in-process rather than reading `guardian-agent verify`'s output: only what the verifier
accepts notifies (same code, no second parser), and the MQTT acknowledgement can wait for the
ledger, which a pipe cannot give. The in-process verifier starts with no chain state after a
restart, so its first batch per gateway is a `new_epoch`/gap to it: chain integrity is reported
by the verifier service; here a gap is logged and nothing else (redelivered alerts are dropped
by id, never by chain position).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import cbor2
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.central import command_sender as sender
from agent.central.batch_verifier import INTEGRITY_PROBLEMS, BatchVerifier
from agent.notify.alert import Alert, wanted
from agent.notify.ledger import Ledger
from agent.notify.notifier import Notifier
from agent.shared import commands as cm
from agent.shared import cose
from agent.shared.backoff import Backoff
from agent.shared.errors import AgentError, CommandError, StoreError
from agent.shared.protocol import BATCH_FILTER, IDENT_RE, SESSION_EXPIRY_S

log = logging.getLogger("agent.notify.central")

COMMAND_TTL_S = 3600
COMMAND_RETRY_CAP_S = 60.0


def topic_parts(topic: str) -> tuple[str, str] | None:
    """(venue, gateway) of venues/<venue>/gateways/<gw>/batches, None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "venues" or parts[2] != "gateways" or parts[4] != "batches":
        return None
    if not IDENT_RE.fullmatch(parts[1]) or not IDENT_RE.fullmatch(parts[3]):
        return None
    return parts[1], parts[3]


class CentralFeed:
    """Verified events from central's broker into the notifier, acknowledged after the commit."""

    def __init__(
        self,
        notifier: Notifier,
        verifier: BatchVerifier,
        host: str,
        port: int,
        *,
        venues: Callable[[str], str | None],
        topic: str = BATCH_FILTER,
        client_id: str = "ge-notify",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`venues(gateway)`: the venue a gateway is enrolled at (None: unknown gateway)."""
        self.notifier = notifier
        self.verifier = verifier
        self.host = host
        self.port = port
        self.venues = venues
        self.topic = topic
        self.client_id = client_id
        self.tls = tls
        self.connected = asyncio.Event()

    def handle(self, topic: str, payload: bytes) -> int:
        """Verify one batch message and hand its events to the notifier; events accepted."""
        where = topic_parts(topic)
        if where is None:
            self.notifier.counts["feed_bad_topic"] += 1
            log.warning("batch_rejected reason=bad_topic topic=%r", topic[:120])
            return 0
        venue, topic_gw = where
        # before the verifier sees it: a batch on a topic that is not its signer's, or of a
        # gateway not enrolled at the topic's venue, is refused, so that it can never take the
        # place (in the verifier's dedupe) of the same batch on its right topic
        kid = _kid(payload)
        if kid is not None and kid != topic_gw:
            self.notifier.counts["feed_wrong_gateway"] += 1
            log.warning("batch_rejected reason=wrong_gateway topic=%s signer=%r", topic, kid[:40])
            return 0
        if self.venues(topic_gw) != venue:
            self.notifier.counts["feed_wrong_venue"] += 1
            log.warning("batch_rejected reason=wrong_venue topic=%s gateway=%s", topic, topic_gw)
            return 0
        accepted = 0
        for rec in self.verifier.feed(topic, payload):
            kind = rec.get("kind")
            if kind != "event":
                self.notifier.counts[f"feed_{kind}"] += 1
                level = logging.WARNING if kind in INTEGRITY_PROBLEMS else logging.INFO
                log.log(
                    level, "batch_%s topic=%s detail=%r", kind, topic, {k: v for k, v in rec.items() if k != "kind"}
                )
                continue
            if rec["gateway"] != topic_gw:  # unreachable after the kid check; kept as the last word
                self.notifier.counts["feed_wrong_gateway"] += 1
                continue
            if not wanted(int(rec["type"])):
                continue
            try:
                alert = Alert.from_record(venue, rec)
            except (KeyError, TypeError, ValueError) as exc:
                self.notifier.counts["feed_malformed"] += 1
                log.warning("event_malformed topic=%s reason=%r", topic, str(exc))
                continue
            self.notifier.alert(alert)
            accepted += 1
        return accepted

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        backoff = Backoff(cap=5.0)
        while not stop.is_set():
            try:
                await self._session(stop, ready)
            except aiomqtt.MqttError as exc:
                log.warning("central_broker_down host=%s port=%d reason=%r", self.host, self.port, str(exc))
            except StoreError as exc:
                # not acknowledged: the broker hands the batch over again on the next session
                log.error("ledger_write_failed reason=%r", str(exc))
            self.connected.clear()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next())

    async def _session(self, stop: asyncio.Event, ready: Callable[[], None] | None) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            tls_context=self.tls,
            keepalive=10,
        )
        # Private attribute, as agent/uplink.py: aiomqtt has no manual-ack switch, and the PUBACK
        # must wait for the ledger
        client._client.manual_ack_set(True)
        async with client:
            await client.subscribe(self.topic, qos=1)
            self.connected.set()
            log.info("central_feed_up host=%s port=%d topic=%s", self.host, self.port, self.topic)
            if ready is not None:
                ready()
            ticker = asyncio.create_task(self._tick())
            stopper = asyncio.create_task(stop.wait())
            try:
                async for message in _until(client.messages, stopper):
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    self.handle(message.topic.value, payload)
                    if message.qos > 0:
                        client._client.ack(message.mid, message.qos)
            finally:
                ticker.cancel()
                stopper.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for rec in self.verifier.tick():
                log.info("batch_%s detail=%r", rec.get("kind"), {k: v for k, v in rec.items() if k != "kind"})


def _kid(data: bytes) -> str | None:
    """The kid in a COSE_Sign1's protected header, unverified (routing only); None when unreadable."""
    try:
        obj = cose.loads(data)
        header = cose.loads(obj.value[0]) if isinstance(obj, cbor2.CBORTag) and obj.tag == 18 else None
        kid = header.get(4) if isinstance(header, dict) else None
    except (cbor2.CBORDecodeError, ValueError, TypeError, IndexError, OverflowError, RecursionError):
        return None
    return kid.decode("ascii", errors="replace") if isinstance(kid, bytes) else None


async def _until(messages: Any, stopper: asyncio.Task[Any]) -> Any:
    """The messages of an aiomqtt iterator until `stopper` completes."""
    it = messages.__aiter__()
    while True:
        nxt = asyncio.ensure_future(it.__anext__())
        done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if nxt not in done:
            nxt.cancel()
            return
        yield nxt.result()


class CommandSender:
    """Sends the ACK commands the ledger owes to gateways (central's signed command path)."""

    def __init__(
        self,
        ledger: Ledger,
        key: Any,
        kid: str,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        ttl_s: int = COMMAND_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.key = key
        self.kid = kid
        self.host = host
        self.port = port
        self.tls = tls
        self.ttl_s = ttl_s
        self.clock = clock
        self.wake = asyncio.Event()
        self.sent = 0

    async def send_due(self) -> None:
        now_ms = int(self.clock() * 1000)
        for c in self.ledger.due_commands(now_ms):
            issued = int(self.clock())
            with self.ledger.tx() as db:
                seq = self.ledger.next_command_seq(db, c.gateway, time.time_ns() // 1000)
            payload = cm.encode_payload(
                c.gateway, seq, issued, issued + self.ttl_s, cm.OP_ACK, sender.ack_args(c.device, c.boot, c.seq, c.text)
            )
            message = cm.sign_command(self.key, self.kid, payload)
            topic = f"venues/{c.venue}/gateways/{c.gateway}/commands"
            try:
                await sender.send_command(self.host, self.port, topic, message, self.tls)
            except CommandError as exc:
                delay = min(COMMAND_RETRY_CAP_S, 2.0 * 2**c.attempts)
                with self.ledger.tx() as db:
                    self.ledger.set_command(
                        db,
                        c.alert_id,
                        attempts=c.attempts + 1,
                        next_at_ms=int((self.clock() + delay) * 1000),
                        last_error=str(exc)[:200],
                    )
                log.warning("ack_command_failed alert=%s attempt=%d error=%r", c.alert_id, c.attempts + 1, str(exc))
                continue
            with self.ledger.tx() as db:
                self.ledger.set_command(db, c.alert_id, state="sent", attempts=c.attempts + 1)
            self.sent += 1
            log.info("ack_command_sent alert=%s gateway=%s seq=%d topic=%s", c.alert_id, c.gateway, seq, topic)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.send_due()
            except AgentError as exc:
                log.error("ack_command_error reason=%r", str(exc))
            due = self.ledger.next_command_due()
            wait = None if due is None else max(0.05, due / 1000 - self.clock())
            waiter = asyncio.ensure_future(self.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
