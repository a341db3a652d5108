"""The uplink (agent/gateway/uplink.py) against a real Mosquitto, with the committer and the command
handler as small fakes: batches out in order, PUBACKs reported, unacknowledged batches sent
again in order after a reconnect, presence, and central's commands acknowledged only once
settled. Central is a test client on a persistent MQTT 5 session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.gateway.config import AgentConfig, load_config
from agent.gateway.signer import SealedBatch, Signer
from agent.gateway.uplink import Uplink
from agent.shared.frames import Event
from agent.shared.protocol import ZERO_HASH
from hil_tests.sim.mosquitto import Mosquitto

KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


def config(tmp_path: Path, central: Mosquitto) -> AgentConfig:
    (tmp_path / "agent.toml").write_text(
        "[gateway]\nid = 'GW-T'\nvenue = 'v1'\ndata_dir = 'data'\ndevices_file = 'devices.toml'\n"
        f"[local]\nhost = '127.0.0.1'\n[central]\nhost = '127.0.0.1'\nport = {central.port}\n"
    )
    return load_config(tmp_path / "agent.toml")


def batches(n: int, received: int = 1_700_000_000_000) -> list[SealedBatch]:
    sealer = Signer(KEY, "GW-T", 1000, 0, ZERO_HASH)
    return [
        sealer.seal([Event("AP-1", 1, i, 128, 0, received + i, {}, b"").encoded], received + 100, 2) for i in range(n)
    ]


class Fake:
    """A fake that records what it is told; `until` waits for a condition on its records."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def until(self, what: str, pred: Callable[[], bool], within: float = 15.0) -> None:
        try:
            async with asyncio.timeout(within):
                while not pred():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {within} s; {self}") from None


class Committer(Fake):
    """What the uplink tells the committer and the receipt ledger, recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[bool] = []
        self.acks: list[int] = []
        self.delivered: list[int] = []

    def set_uplink(self, connected: bool) -> None:
        self.links.append(connected)
        self.changed.set()

    def ack(self, batch: SealedBatch) -> None:
        self.acks.append(batch.seq)
        self.changed.set()

    def on_delivered(self, batch: SealedBatch) -> None:
        self.delivered.append(batch.seq)
        self.changed.set()


class Commands(Fake):
    """Central's commands as the uplink hands them over; acknowledged only when the test says."""

    enabled = True

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[bytes, Callable[[], None]]] = []

    def submit(self, data: bytes, ack: Callable[[], None]) -> None:
        self.got.append((data, ack))
        self.changed.set()


class Central(Fake):
    """Central's side: a persistent session on the gateway's topics, reconnecting when the broker
    comes back; every message it receives, in order."""

    def __init__(self, broker: Mosquitto, cfg: AgentConfig) -> None:
        super().__init__()
        self.broker = broker
        self.topics = (cfg.batch_topic, cfg.status_topic)
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.broker.port,
                    identifier="central-test",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                ) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        self.messages.append((str(m.topic), m.payload))
                        self.changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # the broker is down: try again

    def of(self, topic: str) -> list[bytes]:
        return [p for t, p in self.messages if t == topic]

    def __str__(self) -> str:
        return f"central got {self.messages}"


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_batches_go_out_in_order_and_each_puback_is_reported(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = config(tmp_path, broker)
    central = Central(broker, cfg)
    b1, b2, b3, b4 = batches(4)
    committer, times = Committer(), []
    # b1 and b2: sealed before a restart and never acknowledged
    uplink = Uplink(
        cfg, unacked=[b2, b1], committer=committer, on_delivered=committer.on_delivered, observe_delivery=times.append
    )
    assert uplink.counters.inflight == 2 and uplink.counters.inflight_oldest_ms == 1_700_000_000_000
    async with running(central.run()):
        await asyncio.wait_for(central.subscribed.wait(), 15)
        async with running(uplink.run()):
            await asyncio.wait_for(uplink.connected.wait(), 15)
            uplink.publish(b3, 1_700_000_000_002)
            uplink.publish(b4, 1_700_000_000_003)
            await central.until("four batches", lambda: len(central.of(cfg.batch_topic)) == 4)
            assert central.of(cfg.batch_topic) == [b.blob for b in (b1, b2, b3, b4)], "the old ones first, in order"
            await committer.until("four PUBACKs", lambda: len(committer.delivered) == 4)
            assert sorted(committer.acks) == [1, 2, 3, 4] and sorted(committer.delivered) == [1, 2, 3, 4]
            c = uplink.counters
            assert (c.inflight, c.inflight_oldest_ms, c.batches_acked, c.delivered) == (0, None, 4, 4)
            assert len(times) == 4 and uplink.inflight == {}
            await central.until("online", lambda: central.of(cfg.status_topic)[-1:] == [b"online"])
            await uplink.announce_offline()
            await central.until("offline", lambda: central.of(cfg.status_topic)[-1:] == [b"offline"])
            assert committer.links == [True], "the committer seals once the link is up"
        assert committer.links == [True, False] and not uplink.counters.connected


async def test_a_reconnect_sends_the_unacknowledged_batches_again_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "central", name="central", persistence=True)
    broker.start()
    try:
        cfg = config(tmp_path, broker)
        central = Central(broker, cfg)
        b1, b2, b3 = batches(3)
        committer = Committer()
        uplink = Uplink(cfg, unacked=[], committer=committer, on_delivered=committer.on_delivered)
        async with running(central.run()):
            await asyncio.wait_for(central.subscribed.wait(), 15)
            task = asyncio.create_task(uplink.run())
            await asyncio.wait_for(uplink.connected.wait(), 15)
            uplink.publish(b1, 1)
            await committer.until("b1 acknowledged", lambda: committer.acks == [1])
            await central.until("online", lambda: central.of(cfg.status_topic)[-1:] == [b"online"])
            broker.stop()  # graceful: central's session and subscription are saved
            await committer.until("link down", lambda: committer.links[-1:] == [False])
            uplink.publish(b2, 2)  # sealed while the link is down: held, in order
            uplink.publish(b3, 3)
            assert sorted(uplink.inflight) == [2, 3] and uplink.counters.inflight == 2
            broker.start()
            await committer.until("link up again", lambda: committer.links[-1:] == [True])
            # central may get b1 twice (its own session resumes too; it drops duplicates by seq)
            blobs = {b.blob: b.seq for b in (b1, b2, b3)}
            await central.until("b2 and b3", lambda: {blobs[x] for x in central.of(cfg.batch_topic)} == {1, 2, 3})
            seqs = [blobs[x] for x in central.of(cfg.batch_topic)]
            assert seqs[0] == 1 and [s for s in seqs if s != 1] == [2, 3], seqs
            await committer.until("PUBACKs", lambda: sorted(committer.acks) == [1, 2, 3])
            assert committer.delivered[:1] == [1] and sorted(committer.delivered) == [1, 2, 3]
            assert committer.links == [True, False, True]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        broker.kill()


async def test_a_command_is_acknowledged_only_once_settled(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = config(tmp_path, broker)
    central = Central(broker, cfg)

    async def send(payload: bytes) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
            await c.publish(cfg.command_topic, payload, qos=1)

    @contextlib.asynccontextmanager
    async def gateway(commands: Commands) -> AsyncIterator[None]:
        """A run of the uplink on the gateway's session; ready once central hears it is online
        (it has subscribed to its commands by then)."""
        online = len(central.of(cfg.status_topic))
        uplink = Uplink(cfg, unacked=[], committer=Committer(), on_delivered=lambda b: None, commands=commands)
        async with running(uplink.run()):
            await central.until("online", lambda: len(central.of(cfg.status_topic)) > online)
            yield

    async with running(central.run()):
        await asyncio.wait_for(central.subscribed.wait(), 15)
        first = Commands()
        async with gateway(first):
            await send(cbor2.dumps("first"))
            await first.until("the command", lambda: len(first.got) == 1)
        # not settled: the broker delivers it again on the next connection of the session
        again = Commands()
        async with gateway(again):
            await again.until("the command again", lambda: len(again.got) == 1)
            assert again.got[0][0] == cbor2.dumps("first")
            again.got[0][1]()  # settled: its PUBACK goes out before the DISCONNECT
        later = Commands()
        async with gateway(later):
            await send(cbor2.dumps("second"))
            await later.until("the next command", lambda: bool(later.got))
            assert [d for d, _ in later.got] == [cbor2.dumps("second")], "a settled command is not delivered again"


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    """One MQTT packet: fixed header, remaining length, body."""
    head = await reader.readexactly(1)
    n, shift = 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return head + await reader.readexactly(n)


async def test_a_connection_lost_right_after_connack_is_noticed_at_once(tmp_path: Path) -> None:
    # central answers CONNECT and then drops the connection at the gateway's first request
    # (its SUBSCRIBE or UNSUBSCRIBE), before any answer: the link is down, and the uplink says
    # so and tries again without waiting out the request's 30 s timeout
    connects = 0

    async def central(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connects
        connects += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await _read_packet(reader)  # CONNECT
            writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK (MQTT 5): accepted, no properties
            await writer.drain()
            await _read_packet(reader)  # the first request: left without an answer
        writer.close()

    server = await asyncio.start_server(central, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (tmp_path / "agent.toml").write_text(
        "[gateway]\nid = 'GW-T'\nvenue = 'v1'\ndata_dir = 'data'\ndevices_file = 'devices.toml'\n"
        f"[local]\nhost = '127.0.0.1'\n[central]\nhost = '127.0.0.1'\nport = {port}\n"
    )
    committer = Committer()
    uplink = Uplink(
        load_config(tmp_path / "agent.toml"), unacked=[], committer=committer, on_delivered=committer.on_delivered
    )
    async with server, running(uplink.run()):
        await committer.until("the link up and down", lambda: committer.links[:2] == [True, False], within=5)
        await committer.until("a second attempt", lambda: connects >= 2 and len(committer.links) >= 3, within=10)
