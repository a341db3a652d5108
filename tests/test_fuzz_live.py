"""Bad input through the live pipeline: 100,000 mutated and random frames, with good frames
interleaved, published on the local broker to a running agent. No crash, memory bounded,
every good frame delivered at central, every bad one rejected and counted.
"""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import cbor2

from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above
from mqtt import MQTTClient

KEY = bytes(range(32))
DEVICES = [Device("AP-0001", "alarm_post", KEY, "venue-1", "hall")]
UP = "ge/dev/AP-0001/up"
BAD = 100_000
EVERY = 100  # one good frame after every EVERY bad ones


def good(seq: int) -> bytes:
    return fwframe.build(KEY, "AP-0001", 1, seq, fwframe.T_HEARTBEAT if seq % 10 else fwframe.T_ALARM, seq, {}, 0)


def mutators(rng: random.Random, template: bytes) -> list[Callable[[], bytes]]:
    def flip() -> bytes:
        b = bytearray(template)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)

    def truncate() -> bytes:
        return template[: rng.randrange(len(template))]

    def extend() -> bytes:
        return template + rng.randbytes(rng.randint(1, 40))

    def splice() -> bytes:
        i = rng.randrange(len(template))
        return template[:i] + rng.randbytes(rng.randint(1, 8)) + template[i + rng.randint(0, 8) :]

    def noise() -> bytes:
        return rng.randbytes(rng.choice((0, 1, 2, 9, 40, 200, 511, 513, 2000)))

    nested: object = 1
    for _ in range(40):
        nested = [nested]  # deeper than the gateway's payload limit

    def cbor_shapes() -> bytes:
        shapes: list[object] = [
            cbor2.CBORTag(17, [b"", {}, b"", b""]),
            cbor2.CBORTag(17, [cbor2.dumps({1: 4, 4: b"AP-0001"}), {}, cbor2.dumps({1: 1}), bytes(8)]),
            cbor2.CBORTag(18, [b"", {}, b"", b""]),
            cbor2.CBORTag(17, [cbor2.dumps({1: 4, 4: b"AP-0001"}), {1: 2}, b"\xa0", bytes(8)]),
            nested,
            {"a": 1.5, 2: None, 3: True},
            2**64 - 1,
            -(2**63),
        ]
        return cbor2.dumps(rng.choice(shapes))

    def length_bomb() -> bytes:
        # a CBOR head announcing a huge byte string or array that is not there
        return rng.choice((b"\xd1\x84\x5b\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd1\x9b" + b"\xff" * 8, b"\xd1\x84\x9f"))

    return [flip, flip, flip, truncate, extend, splice, noise, cbor_shapes, length_bomb]


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def publish_all(port: int, rng: random.Random, on_progress: Callable[[int], None]) -> int:
    # the firmware's own MQTT client (on CPython): one send per QoS 0 packet, so the agent,
    # not the publisher, is what limits the pace
    template = good(10**6)
    muts = mutators(rng, template)
    seq = 0
    client = MQTTClient("fuzz", "127.0.0.1", port, keepalive=60)
    client.connect()
    # no Nagle: a QoS 1 publish after a run of QoS 0 ones would otherwise wait for the broker's
    # delayed ACK (~40 ms each, 1,000 times), and the publisher, not the agent, would set the pace
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(1, BAD + 1):
            topic = UP if rng.random() < 0.9 else rng.choice(("ge/dev/AP-9999/up", "ge/dev/AP-0001x/up"))
            bad = rng.choice(muts)()
            while bad == template:  # two flips of the same bit give the frame back
                bad = rng.choice(muts)()
            client.publish(topic, bad, qos=0)
            if i % EVERY == 0:
                seq += 1
                client.publish(UP, good(seq), qos=1)  # waits for the broker's PUBACK
            if i % 20_000 == 0:
                on_progress(i)
    finally:
        client.disconnect()
    return seq


def test_100k_bad_frames_through_the_live_agent(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], seed: int
) -> None:
    rng = random.Random(seed)
    local, central = broker_pair
    agent = AgentProcess(tmp_path / "gw", local.address, central.address, DEVICES)
    verifier = CentralVerifier(central.address, [agent.public_key_file], agent.devices_file)
    verifier.start()
    try:
        agent.start()
        agent.wait_log("uplink_up")
        assert agent.pid is not None
        rss: list[int] = []
        n_good = publish_all(local.port, rng, lambda _: rss.append(vm_rss_kb(agent.pid or 0)))
        got = verifier.wait_events(n_good, 60, device="AP-0001")
        assert sorted(e["seq"] for e in got) == list(range(1, n_good + 1)), f"seed {seed}"
        rss.append(vm_rss_kb(agent.pid))
        # memory stays flat: what the agent holds after the first 20,000 bad frames is what
        # it holds at the end, give or take allocator noise
        assert rss[-1] - rss[0] < 20_000, f"seed {seed}: RSS grew {rss} kB"
        agent.stop()
        stats = agent.stats()
        assert int(stats["accepted"]) == n_good, f"seed {seed}: {stats}"
        rejected = {k: int(v) for k, v in (kv.split(":") for kv in stats["rejected"].strip("{}").split(","))}
        assert sum(rejected.values()) == BAD, f"seed {seed}: {rejected}"
        assert {k.strip("'") for k in rejected} <= {
            "oversize",
            "malformed",
            "unknown_device",
            "topic_mismatch",
            "bad_mac",
            "bad_payload",
            "replay",
            "bad_topic",
        }, rejected
        assert [p for p in verifier.problems() if p["kind"] != "new_epoch"] == [], f"seed {seed}"
    finally:
        verifier.stop()
        agent.kill()
