"""The local broker source (agent/gateway/sources/mqtt.py) against a real Mosquitto, with the pipeline as
a small fake that holds each frame's acknowledgement: a frame is acknowledged to the broker
only once the pipeline settles it (durable or rejected), so the broker hands an unsettled one
over again on the next connection; receipts queued while disconnected go out on connect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt

from agent.gateway.config import BrokerConfig, load_config
from agent.gateway.receipts import ReceiptRouter
from agent.gateway.sources.mqtt import SOURCE, LocalBroker
from agent.shared.protocol import RECEIPT_STORED
from agent.shared.registry import Device, Registry
from hil_tests.sim.mosquitto import Mosquitto

REGISTRY = Registry([Device("AP-0001", "alarm_post", bytes(range(32)), "v", "hall")])
UP, DOWN = "ge/dev/AP-0001/up", "ge/dev/AP-0001/down"


def local_config(tmp_path: Path, broker: Mosquitto) -> BrokerConfig:
    (tmp_path / "agent.toml").write_text(
        "[gateway]\nid = 'GW-T'\nvenue = 'v1'\ndata_dir = 'data'\ndevices_file = 'devices.toml'\n"
        f"[local]\nhost = '127.0.0.1'\nport = {broker.port}\n[central]\nhost = '127.0.0.1'\n"
    )
    return load_config(tmp_path / "agent.toml").local


class Pipeline:
    """Pipeline.ingest as the source calls it; frames recorded, acks held until the test settles them."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, str | None, str]] = []
        self.acks: list[Callable[[], None]] = []
        self.changed = asyncio.Event()

    def ingest(self, data: bytes, device: str | None, ack: Callable[[], None], source: str) -> bool:
        self.frames.append((data, device, source))
        self.acks.append(ack)
        self.changed.set()
        return True

    async def wait(self, n: int, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while len(self.frames) < n:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def source(cfg: BrokerConfig, pipeline: Pipeline) -> AsyncIterator[tuple[LocalBroker, ReceiptRouter]]:
    """One run of the source (one connection of the agent's persistent session)."""
    receipts = ReceiptRouter("GW-T", REGISTRY)
    local = LocalBroker(cfg, ingest=pipeline.ingest, receipts=receipts)
    task = asyncio.create_task(local.run())
    try:
        yield local, receipts
    finally:
        task.cancel()  # DISCONNECT after whatever was queued, PUBACKs included
        await asyncio.gather(task, return_exceptions=True)


async def publish(broker: Mosquitto, payload: bytes, topic: str = UP) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="AP-0001") as c:
        await c.publish(topic, payload, qos=1)


async def test_a_frame_is_acknowledged_only_once_the_pipeline_settles_it(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = local_config(tmp_path, broker)
    first = Pipeline()
    async with source(cfg, first) as (local, _):
        await asyncio.wait_for(local.connected.wait(), 15)
        assert local.counters.connected
        await publish(broker, b"frame-1")
        await first.wait(1)
        assert first.frames == [(b"frame-1", "AP-0001", SOURCE)]
        await publish(broker, b"stray", "ge/dev/AP-0001/other")  # not ge/dev/+/up: not subscribed
    assert not local.counters.connected
    # not settled: the broker hands it over again on the session's next connection
    again = Pipeline()
    async with source(cfg, again) as (local, _):
        await again.wait(1)
        assert again.frames == [(b"frame-1", "AP-0001", SOURCE)]
        again.acks[0]()  # durable now: PUBACK
    later = Pipeline()
    async with source(cfg, later) as (local, _):
        await asyncio.wait_for(local.connected.wait(), 15)
        await publish(broker, b"frame-2")
        await later.wait(1)
        assert later.frames == [(b"frame-2", "AP-0001", SOURCE)], "a settled frame is not handed over again"


async def test_receipts_wait_for_the_connection_and_go_to_the_device(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = local_config(tmp_path, broker)
    got: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="AP-0001") as device:
        await device.subscribe(DOWN, qos=1)
        receipts = ReceiptRouter("GW-T", REGISTRY)
        local = LocalBroker(cfg, ingest=Pipeline().ingest, receipts=receipts)
        receipts.send("AP-0001", 1, 7, RECEIPT_STORED)  # before any connection: queued
        task = asyncio.create_task(local.run())
        try:
            async with asyncio.timeout(15):
                async for m in device.messages:
                    assert isinstance(m.payload, bytes)
                    got.append(m.payload)
                    break
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert receipts.counters.sent == 1 and local.counters.receipts_dropped == 0
    assert len(got) == 1 and got[0].startswith(b"\xd1\x84"), "a COSE_Mac0 receipt"
