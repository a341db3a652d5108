"""The local broker client (agent/gateway/sources/mqttclient.py) against a scripted broker on a real
loopback socket: PUBACK order, receipts and their PUBACKs, and bad packets closing the
connection with a reason. The client against Mosquitto is exercised by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from agent.gateway.sources.mqttclient import LocalBrokerError, MqttClient, publish_packet, varint

CONNACK_OK = b"\x20\x03\x00\x00\x00"


def publish(topic: bytes, payload: bytes, pid: int, qos: int = 1, props: bytes = b"\x00") -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"") + props + payload
    return bytes((0x30 | qos << 1,)) + varint(len(body)) + body


class Broker:
    """Accepts one client, answers CONNECT with `connack`, records what the client sends."""

    def __init__(self, connack: bytes = CONNACK_OK) -> None:
        self.connack = connack
        self.received = bytearray()
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.got = asyncio.Event()
        self.finished = asyncio.Event()  # the connection's handler has returned
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            first = await reader.read(1024)  # CONNECT
            assert first[0] == 0x10
            writer.write(self.connack)
            await writer.drain()
            self.connected.set()
            while data := await reader.read(65536):
                self.received += data
                self.got.set()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.finished.set()

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def wait_for(self, pred: Callable[[bytes], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not pred(bytes(self.received)):
                self.got.clear()
                await self.got.wait()


class Got(list[tuple[bytes, bytes, Callable[[], None]]]):
    """Messages the client handed over, with a wait for a count."""

    def __init__(self) -> None:
        super().__init__()
        self.more = asyncio.Event()

    def __call__(self, topic: bytes, payload: bytes, ack: Callable[[], None]) -> None:
        self.append((topic, payload, ack))
        self.more.set()

    async def wait(self, n: int, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while len(self) < n:
                self.more.clear()
                await self.more.wait()


@asynccontextmanager
async def pair(
    broker: Broker, outbox: deque[tuple[bytes, bytes]] | None = None, max_packet: int = 4096
) -> AsyncIterator[tuple[MqttClient, Got]]:
    server = await asyncio.start_server(broker.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got = Got()
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: MqttClient("agent", 30, 3600, 16, max_packet, got, outbox or deque()),
        "127.0.0.1",
        port,
    )
    try:
        yield client, got
    finally:
        client.close()
        await asyncio.wait_for(client.closed, 5)
        server.close()
        await server.wait_closed()
        if broker.writer is not None:
            broker.writer.close()
            await asyncio.wait_for(broker.finished.wait(), 5)  # the broker side's reader saw the end


async def test_pubacks_go_out_in_arrival_order_whatever_order_they_are_settled_in() -> None:
    broker = Broker()
    async with pair(broker) as (client, got):
        assert await client.connected is False
        frames = b"".join(publish(b"ge/dev/A/up", b"frame%d" % i, i) for i in (1, 2, 3))
        broker.send(frames + publish(b"t", b"q0", 0, 0))
        await got.wait(4)
        assert [(t, p) for t, p, _ in got] == [
            (b"ge/dev/A/up", b"frame1"),
            (b"ge/dev/A/up", b"frame2"),
            (b"ge/dev/A/up", b"frame3"),
            (b"t", b"q0"),
        ]
        got[2][2]()  # the third is settled first: nothing may go out yet (an early PUBACK 3
        # would come before PUBACK 1, and the exact byte strings awaited below would never match)
        got[0][2]()
        await broker.wait_for(lambda r: r == b"\x40\x02\x00\x01")
        got[1][2]()
        got[1][2]()  # settling twice changes nothing
        await broker.wait_for(lambda r: r == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03")


async def test_receipts_are_published_and_the_unacknowledged_go_again_after_a_reconnect() -> None:
    broker = Broker(b"\x20\x06\x00\x00\x03\x21\x00\x01")  # the broker's Receive Maximum is 1
    outbox: deque[tuple[bytes, bytes]] = deque([(b"ge/dev/A/down", b"r1"), (b"ge/dev/A/down", b"r2")])
    async with pair(broker, outbox) as (client, _):
        await client.connected
        first = publish_packet(b"ge/dev/A/down", b"r1", 1)
        await broker.wait_for(lambda r: r == first)
        assert list(outbox) == [(b"ge/dev/A/down", b"r2")], "the second waits for the first one's PUBACK"
        broker.send(b"\x40\x02\x00\x01")
        await broker.wait_for(lambda r: r == first + publish_packet(b"ge/dev/A/down", b"r2", 2))
        assert broker.writer is not None
        broker.writer.close()
        assert "closed" in await client.closed
    assert list(outbox) == [(b"ge/dev/A/down", b"r2")], "unacknowledged: first in line on the next connection"


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "longer than 4 bytes"),
        (b"\x30\x80\x00", "shortest form"),
        (b"\x50\x02\x00\x01", "unexpected packet 0x50"),
        (publish(b"t", b"x", 1, qos=2), "QoS 2"),
        (b"\x38\x04\x00\x01tx", "DUP flag"),
        (publish(b"t", b"x", 0), "packet id 0"),
        (publish(b"", b"x", 1), "empty topic"),
        (publish(b"t", b"x", 1, props=b"\x02\x23\x00"), "runs past"),
        (publish(b"t", b"x", 1, props=b"\x03\x23\x00\x01"), "topic alias"),
        (publish(b"t", b"x", 1, props=b"\x02\x7f\x00"), "unknown property 0x7f"),
        (b"\x40\x02\x00\x09", "not in flight"),
        (b"\x90\x04\x00\x07\x00\x01", "not asked for"),
        (b"\xd0\x01\x00", "PINGRESP with a body"),
        (b"\x20\x03\x00\x00\x00", "a second CONNACK"),
        (b"\x30" + varint(5000) + b"\x00" * 5000, "over the maximum of 4096"),
    ],
)
async def test_a_bad_packet_closes_the_connection_with_the_reason(packet: bytes, reason: str) -> None:
    broker = Broker()
    async with pair(broker) as (client, got):
        await client.connected
        broker.send(packet)
        closed = await asyncio.wait_for(client.closed, 5)
        assert reason in closed, closed
        assert got == []
        await broker.wait_for(lambda r: r[:1] == b"\xe0")  # DISCONNECT with a reason code
        assert broker.received[2] in (0x81, 0x82)


async def test_a_refused_connect_names_the_reason_code() -> None:
    broker = Broker(b"\x20\x03\x00\x87\x00")  # not authorized
    async with pair(broker) as (client, _):
        with pytest.raises(LocalBrokerError, match="0x87"):
            await client.connected


async def test_a_broker_disconnect_is_reported() -> None:
    broker = Broker()
    async with pair(broker) as (client, _):
        await client.connected
        broker.send(b"\xe0\x01\x8b")  # server shutting down
        assert "DISCONNECT 0x8b" in await asyncio.wait_for(client.closed, 5)


async def test_reading_pauses_while_over_the_receive_maximum() -> None:
    broker = Broker()
    async with pair(broker) as (client, got):
        await client.connected
        broker.send(b"".join(publish(b"t", b"x", i) for i in range(1, 41)))  # Receive Maximum is 16
        await got.wait(16)
        # the 16th unacknowledged one paused reading from the socket (what one read already
        # brought in is still handed over)
        assert client.overruns == 1 and not client.closed.done()
        assert client.transport is not None and not client.transport.is_reading()
        while True:
            n = len(got)
            for _, _, ack in got[:-8]:
                ack()  # settled down to 8, half of the maximum: reading goes on
            assert client.transport.is_reading()
            if n == 40:
                break
            await got.wait(n + 1)
        for _, _, ack in got:
            ack()
        await broker.wait_for(lambda r: len(r) == 40 * 4)
