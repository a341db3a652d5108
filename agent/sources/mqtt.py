"""The local broker: device frames in (ge/dev/+/up), receipts out (ge/dev/<id>/down).

The subscription uses a persistent session and acknowledges each QoS 1 frame only after the
event is durable in the buffer (or was rejected), in the order the frames arrived (MQTT 3.1.1
§4.6). A kill -9 of the agent therefore loses nothing the broker handed over: the broker
redelivers whatever was not acknowledged. aiomqtt has no public manual-ack switch, so the
paho client underneath it is used for that (`manual_ack_set` and `ack`, paho's documented API).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.backoff import Backoff
from agent.config import BrokerConfig
from agent.pipeline import Pipeline, Stats

log = logging.getLogger("agent.sources.mqtt")

UP_FILTER = "ge/dev/+/up"
_PREFIX = "ge/dev/"
_SUFFIX = "/up"
DOWNLINK_QUEUE = 10_000
# MQTT 5 Receive Maximum: how many unacknowledged frames the broker may hand over at once.
# It bounds the agent's memory whatever the broker is configured to; acks follow each commit.
RECEIVE_MAXIMUM = 4096
SESSION_EXPIRY_S = 7 * 24 * 3600


def down_topic(device_id: str) -> str:
    return f"{_PREFIX}{device_id}/down"


class _AckQueue:
    """PUBACKs for one connection, released in arrival order as frames are settled."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.slots: deque[list[int | bool]] = deque()
        self.live = True

    def slot(self, mid: int) -> list[int | bool]:
        entry: list[int | bool] = [mid, False]
        self.slots.append(entry)
        return entry

    def settle(self, entry: list[int | bool]) -> None:
        entry[1] = True
        if not self.live:
            return
        paho = self.client._client  # private: see the module docstring
        while self.slots and self.slots[0][1]:
            paho.ack(int(self.slots.popleft()[0]), 1)


class LocalBroker:
    """Runs the subscription and the receipt downlink, reconnecting with backoff."""

    def __init__(self, cfg: BrokerConfig, pipeline: Pipeline, stats: Stats) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.stats = stats
        self.backoff = Backoff()
        self._down: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(DOWNLINK_QUEUE)
        self.connected = asyncio.Event()
        pipeline.send_receipt = self.send

    def send(self, device_id: str, payload: bytes) -> None:
        try:
            self._down.put_nowait((down_topic(device_id), payload))
        except asyncio.QueueFull:
            # the device resends and gets its receipt from the ledger then
            self.stats.counts["receipts_dropped"] += 1

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning("local_broker_down host=%s port=%d reason=%r", self.cfg.host, self.cfg.port, str(exc))
            finally:
                self.connected.clear()
                self.stats.local_connected = False
            await asyncio.sleep(self.backoff.next())

    async def _session(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        async with aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=self.cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            keepalive=self.cfg.keepalive,
        ) as client:
            client._client.manual_ack_set(True)  # private: see the module docstring
            acks = _AckQueue(client)
            await client.subscribe(UP_FILTER, qos=1)
            self.backoff.reset()
            self.connected.set()
            self.stats.local_connected = True
            log.info("local_broker_up host=%s port=%d", self.cfg.host, self.cfg.port)
            downlink = asyncio.create_task(self._downlink(client))
            try:
                async for message in client.messages:
                    topic = message.topic.value
                    device = topic[len(_PREFIX) : -len(_SUFFIX)] if topic.endswith(_SUFFIX) else None
                    payload = message.payload
                    if not isinstance(payload, bytes):
                        payload = bytes(payload) if isinstance(payload, bytearray) else b""
                    if message.qos == 1:
                        self.pipeline.ingest(payload, device, functools.partial(acks.settle, acks.slot(message.mid)))
                    else:
                        self.pipeline.ingest(payload, device, _noop)
            finally:
                acks.live = False
                downlink.cancel()

    async def _downlink(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload = await self._down.get()
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError:
                # lost with the connection; the device resends and gets it from the ledger
                self.stats.counts["receipts_dropped"] += 1
                return


def _noop() -> None:
    pass
