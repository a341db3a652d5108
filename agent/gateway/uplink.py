"""The uplink to central: sealed batches out over MQTT 5, QoS 1, deleted only after PUBACK.

Batches are published concurrently (the committer keeps at most `window` unacknowledged,
plus one P0 reserve slot). A batch whose PUBACK does not arrive is published again, with the
same bytes, after the next (re)connect; central drops the duplicate by (epoch, seq). On each
PUBACK the committer is told (the batch is deleted from the buffer in its next round) and
`on_delivered` sends receipt 2 for the batch's receipt-wanting events (agent/gateway/receipts.py);
the committer is also told when the link comes up or goes down, as it seals only while up.

The same MQTT 5 session carries the gateway's presence (retained `online` on its status topic
after every connect, `offline` as the last will and before a graceful stop) and central's
signed commands (subscribed QoS 1; each is acknowledged only after agent/gateway/command_handler.py settled
it, so a command is not lost to a kill -9). With [central.tls] the connection trusts only the
configured CA and checks the broker's host name (docs/protocol.md §5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.gateway.config import AgentConfig
from agent.gateway.signer import SealedBatch, batch_oldest_received
from agent.gateway.stats import UplinkCounters
from agent.shared.backoff import Backoff
from agent.shared.protocol import SESSION_EXPIRY_S
from agent.shared.tls import tls_context

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 5.0
# MQTT 5 Receive Maximum: what central sends the gateway are commands, settled one at a time
RECEIVE_MAXIMUM = 16
ONLINE = b"online"
OFFLINE = b"offline"


class CommitterLink(Protocol):
    """What the uplink tells the committer (agent/gateway/committer.py CommitInbox)."""

    def set_uplink(self, connected: bool) -> None:
        """Connected or not: batches are sealed only while connected."""

    def ack(self, batch: SealedBatch) -> None:
        """Central's broker acknowledged `batch`: delete it from the buffer."""


class CommandSink(Protocol):
    """Where central's commands go (agent/gateway/command_handler.py CommandHandler)."""

    @property
    def enabled(self) -> bool: ...
    def submit(self, data: bytes, ack: Callable[[], None]) -> None: ...


class Uplink:
    """The connection to central's broker: batches out, presence, commands in; reconnects with backoff."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        unacked: Sequence[SealedBatch],
        committer: CommitterLink,
        on_delivered: Callable[[SealedBatch], None],
        commands: CommandSink | None = None,
        observe_delivery: Callable[[float], None] | None = None,
    ) -> None:
        """
        Args:
            unacked: sealed batches a previous run left unacknowledged: published again first.
            committer: told the link state and each PUBACK.
            on_delivered: each batch central's broker acknowledged (receipts 2).
            commands: central's commands, acknowledged once settled; None: not subscribed.
            observe_delivery: a histogram, per acknowledged batch, of the seconds from the
                receipt of its oldest event to the PUBACK (agent/gateway/metrics.py).
        """
        self.cfg = cfg
        self.committer = committer
        self.on_delivered = on_delivered
        self.commands = commands
        self.observe_delivery = observe_delivery
        tls = cfg.central.tls
        self._tls = tls_context(tls, f"{cfg.path}: central.tls.") if tls is not None else None
        self.topic = cfg.batch_topic
        self.counters = UplinkCounters()
        # sealed batches waiting for their PUBACK, and the receive time of each one's oldest event
        self.inflight: dict[int, SealedBatch] = {}
        self._oldest: dict[int, int] = {}
        for b in unacked:
            self._track(b, batch_oldest_received(b.blob))
        self.backoff = Backoff(cap=10.0)
        self._client: aiomqtt.Client | None = None
        self._broken = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        # unix ms since when the link is down (from the start until the first connect); None
        # while connected (the fallback notifier reads it, agent/gateway/fallback.py)
        self.down_since_ms: int | None = int(time.time() * 1000)

    def publish(self, batch: SealedBatch, oldest_ms: int) -> None:
        """A newly sealed batch (durable already); published at once when connected."""
        self._track(batch, oldest_ms)
        if self._client is not None:
            self._start(self._client, batch)

    def _track(self, batch: SealedBatch, oldest_ms: int) -> None:
        self.inflight[batch.seq] = batch
        self._oldest[batch.seq] = oldest_ms
        c = self.counters
        c.inflight = len(self.inflight)
        if c.inflight_oldest_ms is None or oldest_ms < c.inflight_oldest_ms:
            c.inflight_oldest_ms = oldest_ms

    def _start(self, client: aiomqtt.Client, batch: SealedBatch) -> None:
        task = asyncio.create_task(self._publish(client, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, client: aiomqtt.Client, batch: SealedBatch) -> None:
        try:
            await client.publish(self.topic, batch.blob, qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            log.warning("batch_publish_failed seq=%d reason=%r", batch.seq, str(exc))
            self._broken.set()
            return
        if self.inflight.pop(batch.seq, None) is not None:
            self._delivered(batch)

    def _delivered(self, batch: SealedBatch) -> None:
        oldest = self._oldest.pop(batch.seq)
        if self.observe_delivery is not None:
            self.observe_delivery(max(0.0, time.time() - oldest / 1000.0))
        c = self.counters
        c.inflight = len(self.inflight)
        c.inflight_oldest_ms = min(self._oldest.values(), default=None)
        c.batches_acked += 1
        c.delivered += batch.events
        self.committer.ack(batch)
        self.on_delivered(batch)

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "uplink_down host=%s port=%d reason=%r", self.cfg.central.host, self.cfg.central.port, str(exc)
                )
            finally:
                self._client = None
                if self.down_since_ms is None:
                    self.down_since_ms = int(time.time() * 1000)
                self.connected.clear()
                self.counters.connected = False
                self.committer.set_uplink(False)
                for task in list(self._tasks):
                    task.cancel()
            await asyncio.sleep(self.backoff.next())

    async def announce_offline(self) -> None:
        """Graceful stop: retained `offline` first, as a clean DISCONNECT discards the will."""
        client = self._client
        if client is None:
            return
        try:
            await client.publish(self.cfg.status_topic, OFFLINE, qos=1, retain=True, timeout=STATUS_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            log.warning("status_offline_failed reason=%r", str(exc))

    async def _session(self) -> None:
        central = self.cfg.central
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        client = aiomqtt.Client(
            central.host,
            central.port,
            identifier=central.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            keepalive=central.keepalive,
            max_inflight_messages=self.cfg.batch.window + 2,
            will=aiomqtt.Will(self.cfg.status_topic, OFFLINE, qos=1, retain=True),
            tls_context=self._tls,
        )
        # before connecting: commands queued in the session arrive right after CONNACK.
        # Private attribute: aiomqtt has no manual-ack switch (see agent/gateway/sources/mqtt.py).
        client._client.manual_ack_set(True)
        async with client:
            _honour_cancel()
            self._broken.clear()
            self._client = client
            self.backoff.reset()
            self.connected.set()
            self.down_since_ms = None
            self.counters.connected = True
            log.info("uplink_up host=%s port=%d resending=%d", central.host, central.port, len(self.inflight))
            for seq in sorted(self.inflight):
                self._start(client, self.inflight[seq])
            self.committer.set_uplink(True)
            watch = asyncio.create_task(self._watch(client))
            broken = asyncio.create_task(self._broken.wait())
            # the announcement runs beside the watch: a connection lost before its answers is
            # noticed by the watch (or a failed publish) at once, not after the request's timeout
            announce = asyncio.create_task(self._announce(client))
            pending = {watch, broken, announce}
            try:
                while announce in pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    if announce in done:
                        announce.result()  # its MqttError ends the session
                        _honour_cancel()
                    if done - {announce}:
                        break
                else:
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if watch in done and watch.exception() is not None:
                    raise watch.exception()  # type: ignore[misc]
                if broken in done:
                    raise aiomqtt.MqttError("a batch publish failed (batch_publish_failed): connecting again")
            finally:
                for task in (watch, broken, announce):
                    task.cancel()

    async def _announce(self, client: aiomqtt.Client) -> None:
        enabled = self.commands is not None and self.commands.enabled
        if enabled:
            await client.subscribe(self.cfg.command_topic, qos=1, timeout=PUBLISH_TIMEOUT_S)
        else:
            # a session from a run with commands enabled may still hold the subscription
            await client.unsubscribe(self.cfg.command_topic, timeout=PUBLISH_TIMEOUT_S)
        await client.publish(self.cfg.status_topic, ONLINE, qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S)
        log.info("status_online topic=%s commands=%s", self.cfg.status_topic, "on" if enabled else "off")

    async def _watch(self, client: aiomqtt.Client) -> None:
        # commands in; iterating ends with MqttError when the connection drops
        async for message in client.messages:
            ack = self._acker(client, message.mid, message.qos)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if self.commands is not None and message.topic.matches(self.cfg.command_topic):
                self.commands.submit(payload, ack)
            else:
                ack()

    def _acker(self, client: aiomqtt.Client, mid: int, qos: int) -> Callable[[], None]:
        def ack() -> None:
            # a PUBACK only on the connection the message came on; after a reconnect the
            # broker delivers an unacknowledged command again
            if qos > 0 and self._client is client:
                client._client.ack(mid, qos)

        return ack


def _honour_cancel() -> None:
    """Raise the cancellation that aiomqtt may have dropped in the call just made.

    aiomqtt awaits with asyncio.wait_for, which on Python 3.11 returns the result of an
    operation that completes just as the task is cancelled and drops the cancellation; the
    task still counts the request (Task.cancelling()). Without this a stopping agent could
    wait for the uplink forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
