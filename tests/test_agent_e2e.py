"""The agent as a real process between two real Mosquitto brokers.

The "device" here is the test itself publishing frames built by the firmware's frame module
(on CPython); tests/test_alarm_post_e2e.py does the same with virtual boards running the
firmware under MicroPython.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

KEY = bytes(range(32))
OTHER = bytes(range(50, 82))
DEVICES = [
    Device("AP-0001", "alarm_post", KEY, "venue-1", "hall"),
    Device("AP-0002", "alarm_post", OTHER, "venue-1", "bar"),
]


@pytest.fixture
def rig(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]
) -> Iterator[tuple[AgentProcess, CentralVerifier, Mosquitto, Mosquitto]]:
    local, central = broker_pair
    agent = AgentProcess(tmp_path / "gw", local.address, central.address, DEVICES)
    verifier = CentralVerifier(central.address, [agent.public_key_file])
    verifier.start()
    agent.start()
    agent.wait_log("uplink_up")
    try:
        yield agent, verifier, local, central
    finally:
        verifier.stop()
        agent.kill()


def frame(seq: int, typ: int = 1, key: bytes = KEY, device: str = "AP-0001", boot: int = 1, flags: int = 0) -> bytes:
    return fwframe.build(key, device, boot, seq, typ, seq * 100, {}, flags)


async def publish(port: int, frames: list[tuple[str, bytes]], client_id: str = "test-device") -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id) as c:
        for topic, data in frames:
            await c.publish(topic, data, qos=1)


UP = "ge/dev/AP-0001/up"


def test_bad_frames_rejected_counted_and_next_good_delivered(
    rig: tuple[AgentProcess, CentralVerifier, Mosquitto, Mosquitto],
) -> None:
    agent, verifier, local, _ = rig
    good1 = frame(1)
    flipped = bytearray(frame(2))
    flipped[-4] ^= 0x40
    unknown = fwframe.build(KEY, "AP-9999", 1, 1, 1, 0, {}, 0)
    asyncio.run(
        publish(
            local.port,
            [
                (UP, good1),
                (UP, bytes(flipped)),
                (UP, frame(2)),
                (UP, good1),  # replayed
                (UP, frame(3)),
                ("ge/dev/AP-9999/up", unknown),
                (UP, frame(4)),
                (UP, frame(5, device="AP-0002", key=OTHER)),  # right key, wrong topic
                (UP, b"\x00" * 2000),
                (UP, frame(6)),
            ],
        )
    )
    events = verifier.wait_events(5, 15, device="AP-0001")
    assert sorted((e["device"], e["seq"]) for e in events) == [("AP-0001", s) for s in (1, 2, 3, 4, 6)]
    agent.stop()
    rejected = agent.stats()["rejected"]
    for reason in ("bad_mac", "replay", "unknown_device", "topic_mismatch", "oversize"):
        assert f"'{reason}':1" in rejected, rejected
    assert "replay" in agent.log_text() and KEY.hex() not in agent.log_text()
    assert verifier.problems() == []


def test_receipts_in_order_and_alarm_once_when_central_is_down(
    rig: tuple[AgentProcess, CentralVerifier, Mosquitto, Mosquitto],
) -> None:
    _, verifier, local, central = rig
    central.wait_saved()  # the verifier's session is on disk, as on a broker that has run a while
    central.kill()

    async def device() -> list[tuple[int, int, int]]:
        receipts: list[tuple[int, int, int]] = []
        async with aiomqtt.Client("127.0.0.1", local.port, identifier="AP-0001") as c:
            await c.subscribe("ge/dev/AP-0001/down", qos=1)
            await c.publish(UP, frame(1, flags=fwframe.FLAG_RECEIPTS), qos=1)
            async with asyncio.timeout(20):
                async for m in c.messages:
                    receipts.append(fwframe.parse_receipt(KEY, m.payload))
                    if len(receipts) == 1:
                        central.start()  # central comes back after the alarm is stored
                    if receipts[-1][2] == fwframe.R_DELIVERED:
                        return receipts
        return receipts

    receipts = asyncio.run(device())
    assert receipts == [(1, 1, fwframe.R_STORED), (1, 1, fwframe.R_DELIVERED)]
    events = verifier.wait_events(1, 15, device="AP-0001")
    assert [(e["seq"], e["type_name"]) for e in events] == [(1, "ALARM")]


def test_kill9_mid_stream_loses_nothing(rig: tuple[AgentProcess, CentralVerifier, Mosquitto, Mosquitto]) -> None:
    agent, verifier, local, _ = rig
    n = 400

    async def stream() -> None:
        async with aiomqtt.Client("127.0.0.1", local.port, identifier="AP-0001") as c:
            for seq in range(1, n + 1):
                await c.publish(UP, frame(seq, typ=1 if seq % 50 == 0 else 128), qos=1)
                if seq == n // 2:
                    agent.kill()
                    agent.start(wait=False)

    asyncio.run(stream())
    agent.wait_log("uplink_up")
    events = verifier.wait_events(n, 30, device="AP-0001")
    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(1, n + 1)), f"missing {sorted(set(range(1, n + 1)) - set(seqs))[:10]}"
    assert [p for p in verifier.problems() if p["kind"] != "new_epoch"] == []
