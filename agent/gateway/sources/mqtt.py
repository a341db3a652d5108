"""The local broker: device frames in (ge/dev/+/up), receipts out (ge/dev/<id>/down), and
with device liveness on, the devices' retained status and last wills in (ge/dev/+/status).

The subscription uses a persistent session (clean start off, a session expiry) and
acknowledges each QoS 1 frame only after the event is durable in the buffer (or was
rejected), in the order the frames arrived (MQTT 5 §4.6). A kill -9 of the agent therefore
loses nothing the broker handed over: the broker redelivers whatever was not acknowledged.
The connection is agent/gateway/sources/mqttclient.py (why not aiomqtt: see its first comment);
frames go to the pipeline as they are parsed, many per read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from agent.gateway import broker_files
from agent.gateway.config import BrokerConfig
from agent.gateway.pipeline import Ingest
from agent.gateway.receipts import ReceiptRouter
from agent.gateway.sources.mqttclient import LocalBrokerError, MqttClient
from agent.gateway.stats import LocalCounters
from agent.shared.backoff import Backoff
from agent.shared.protocol import IDENT_RE, SESSION_EXPIRY_S, device_down
from agent.shared.tls import tls_context

log = logging.getLogger(__name__)

SOURCE = "mqtt"  # the pipeline's name for this source, and the receipts' default route
UP_FILTER = "ge/dev/+/up"
STATUS_FILTER = "ge/dev/+/status"
_PREFIX = b"ge/dev/"
_SUFFIX = b"/up"
_STATUS_SUFFIX = b"/status"
DOWNLINK_QUEUE = 10_000
# MQTT 5 Receive Maximum: how many unacknowledged frames the broker may hand over at once.
# It bounds the agent's memory whatever the broker is configured to; acks follow each commit.
RECEIVE_MAXIMUM = 4096
# MQTT 5 Maximum Packet Size: the broker drops larger messages instead of sending them. Far
# above any frame size limit ([limits] max_frame_bytes), so oversized frames still reach the
# agent and are rejected and counted as `oversize`; it bounds what one packet can take.
MAX_PACKET = 1 << 20
# Reconnect delays to the local broker: at most 1 s (full jitter from 0.125 s). The broker runs
# on the gateway itself and the agent is its only client of this kind, so there is no crowd to
# spread out, and every second the agent is away is a second the devices' alarms wait for
# receipt 1 after a broker restart (the devices come back within 1-4 s, firmware/lib/link.py).
RECONNECT_CAP_S = 1.0
CONNECT_TIMEOUT_S = 10.0
_TOPIC_CACHE = 10_000
# the device of a topic that does not name one: not an identifier, so it never matches a kid
INVALID_TOPIC = "<invalid-topic>"


class LocalBroker:
    """Runs the subscription and the receipt downlink, reconnecting with backoff."""

    def __init__(
        self,
        cfg: BrokerConfig,
        *,
        ingest: Ingest,
        receipts: ReceiptRouter,
        on_status: Callable[[str, bytes], None] | None = None,
    ) -> None:
        """
        Args:
            ingest: where frames go (Pipeline.ingest); each comes with an ack that releases
                its PUBACK once the frame is durable or rejected.
            receipts: this source registers as the default route of receipts to devices.
            on_status: (device id, payload) of each message on ge/dev/<id>/status, a device's
                retained `online` or its last will `offline` (agent/gateway/liveness.py);
                None: not subscribed.
        """
        self.cfg = cfg
        self.ingest = ingest
        self.on_status = on_status
        self.counters = LocalCounters()
        self.backoff = Backoff(cap=RECONNECT_CAP_S)
        self._tls = tls_context(cfg.tls, "local.tls.") if cfg.tls is not None else None
        # the agent's login: with the packaged broker config nobody else can use its client id
        self._credentials = None
        if cfg.username is not None and cfg.password_file is not None:
            self._credentials = (cfg.username, broker_files.read_password(cfg.password_file))
        # receipts waiting for the connection (or for the broker's Receive Maximum)
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._client: MqttClient | None = None
        self._devices: dict[bytes, str] = {}  # topic -> device id
        self.connected = asyncio.Event()
        receipts.register(SOURCE, self.send, default=True)

    def send(self, device_id: str, payload: bytes) -> None:
        """Queue a message to ge/dev/<device_id>/down (QoS 1); it goes out when connected."""
        if len(self._outbox) >= DOWNLINK_QUEUE:
            # the device resends and gets its receipt from the ledger then
            self.counters.receipts_dropped += 1
            return
        self._outbox.append((device_down(device_id).encode(), payload))
        if self._client is not None:
            self._client.pump()

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except (LocalBrokerError, OSError, TimeoutError) as exc:
                log.warning("local_broker_down host=%s port=%d reason=%r", self.cfg.host, self.cfg.port, str(exc))
            finally:
                self.connected.clear()
                self.counters.connected = False
            await asyncio.sleep(self.backoff.next())

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        ingest = self.ingest
        devices = self._devices
        on_status = self.on_status

        def on_message(topic: bytes, payload: bytes, ack: Callable[[], None]) -> None:
            device = devices.get(topic)
            if device is None:
                if topic.endswith(_STATUS_SUFFIX) and topic.startswith(_PREFIX):
                    # not a frame: the liveness tracker checks the device and the payload (a
                    # session from a run with liveness on may still hold the subscription)
                    if on_status is not None:
                        on_status(topic[len(_PREFIX) : -len(_STATUS_SUFFIX)].decode("utf-8", errors="replace"), payload)
                    ack()
                    return
                device = self._device_of(topic)
            ingest(payload, device, ack, SOURCE)

        def factory() -> MqttClient:
            return MqttClient(
                self.cfg.client_id,
                self.cfg.keepalive,
                SESSION_EXPIRY_S,
                RECEIVE_MAXIMUM,
                MAX_PACKET,
                on_message,
                self._outbox,
                self._on_published,
                self._credentials,
            )

        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation (the agent
        # stopping) that arrives as the awaited step completes, and the session would go on
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, client = await loop.create_connection(factory, self.cfg.host, self.cfg.port, ssl=self._tls)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await client.connected
            # retain handling 2: a retained message on a device's up topic (one a device's
            # credentials can leave there) is not handed over at every subscription
            await client.subscribe(UP_FILTER, 1, CONNECT_TIMEOUT_S, retain_handling=2)
            if on_status is not None:
                await client.subscribe(STATUS_FILTER, 1, CONNECT_TIMEOUT_S)
            self._client = client
            self.backoff.reset()
            self.connected.set()
            self.counters.connected = True
            log.info("local_broker_up host=%s port=%d", self.cfg.host, self.cfg.port)
            reason = await client.closed
            self.counters.disconnects += 1
            raise LocalBrokerError(reason)
        finally:
            self._client = None
            client.close()

    def _device_of(self, topic: bytes) -> str:
        """The device id in ge/dev/<id>/up, cached per topic; INVALID_TOPIC for a topic of
        another shape or a name that is not an identifier (docs/protocol.md §1), which no
        device can have: the frame is then refused (unknown_device or topic_mismatch) and the
        topic's text never reaches the log."""
        device = INVALID_TOPIC
        if topic.startswith(_PREFIX) and topic.endswith(_SUFFIX):
            name = topic[len(_PREFIX) : -len(_SUFFIX)].decode("ascii", errors="replace")
            if IDENT_RE.fullmatch(name):
                device = name
        if len(self._devices) >= _TOPIC_CACHE:
            self._devices.clear()
        self._devices[topic] = device
        return device

    def _on_published(self, code: int) -> None:
        if code >= 0x80:
            # refused by the broker; the device resends and gets its receipt from the ledger then
            self.counters.receipts_dropped += 1
