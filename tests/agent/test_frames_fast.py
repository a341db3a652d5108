"""The frame fast path (agent/gateway/frame_verifier.py) against the general path: same events, same reasons.

Frames come from the firmware's builder with values at every CBOR length boundary, data maps
of every shape, and random mutations of them; the seed is printed.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import cbor2
import pytest

from agent.gateway.frame_verifier import FrameVerifier
from agent.shared import cose
from agent.shared.errors import WireError
from agent.shared.frames import Event
from agent.shared.protocol import AAD_FRAME
from agent.shared.registry import Device, Registry
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

DEVICES = [
    Device("AP-0001", "alarm_post", bytes(range(32)), "venue-1", "hall"),
    Device("S" * 32, "sensor", bytes(range(32, 64)), "venue-1", "hall"),  # a kid of 32 bytes (bstr head 0x58)
    Device("x", "sensor", bytes(32), "venue-1", "hall"),
]
EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
TIME = 1_700_000_000_123


class _GeneralOnly:
    def verify(self, data: bytes, topic_device: str | None, received_ms: int) -> None:
        return None


def both(registry: Registry) -> tuple[FrameVerifier, FrameVerifier]:
    general = FrameVerifier(registry)
    general._fast = _GeneralOnly()  # type: ignore[assignment]
    return FrameVerifier(registry), general


def outcome(v: FrameVerifier, data: bytes, topic: str | None, received: int) -> Any:
    try:
        ev = v.verify(data, topic, received)
    except WireError as exc:
        return ("rejected", exc.reason)
    return (
        ev.device,
        ev.boot,
        ev.seq,
        ev.type,
        ev.prio,
        ev.time,
        ev.received,
        ev.data,
        ev.tag,
        ev.flags,
        ev.encoded,
    )


def random_data(rng: random.Random) -> dict[int, Any]:
    kind = rng.random()
    n = rng.choice((0, 0, 1, 2, 3, 24, 25))
    keys = rng.sample(range(0, 70000), n) if n else []
    if kind < 0.7:
        return {k: rng.choice(EDGES) for k in keys}
    values: list[Any] = [-1, -(2**40), "text", b"\x00\x01", [1, 2], {1: 2}, True, None, 1.5]
    return {k: rng.choice(values + EDGES) for k in keys}


def random_frame(rng: random.Random) -> tuple[Device, bytes]:
    d = rng.choice(DEVICES)
    boot = rng.choice([*EDGES[1:10], rng.randrange(1, 2**32)])
    seq = rng.choice([*EDGES[1:10], rng.randrange(1, 2**32)])
    typ = rng.choice((1, 2, 23, 24, 63, 64, 65, 127, 128, 200, 255, 256))
    dev_time = rng.choice([*EDGES, rng.randrange(2**64)])
    flags = rng.choice((0, 0, 1, 2, 255, 2**32 - 1))
    return d, fwframe.build(d.key, d.id, boot, seq, typ, dev_time, random_data(rng), flags)


def mutate(rng: random.Random, blob: bytes) -> bytes:
    b = bytearray(blob)
    how = rng.randrange(4)
    if how == 0:
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if how == 1:
        return blob[: rng.randrange(len(blob))]
    if how == 2:
        return blob + rng.randbytes(rng.randint(1, 4))
    i = rng.randrange(len(blob))
    return blob[:i] + rng.randbytes(rng.randint(1, 3)) + blob[i + rng.randint(0, 3) :]


def test_fast_and_general_paths_agree_on_random_and_mutated_frames(seed: int) -> None:
    rng = random.Random(seed)
    registry = Registry(DEVICES)
    fast, general = both(registry)
    taken = 0
    for _ in range(4000):
        d, blob = random_frame(rng)
        for data in (blob, mutate(rng, blob)):
            topic = rng.choice((d.id, d.id, None, "AP-0002"))
            received = rng.choice((1, 23, 24, TIME))
            expected = outcome(general, data, topic, received)
            assert outcome(fast, data, topic, received) == expected, f"seed {seed}: {data.hex()}"
            taken += fast._fast.verify(data, topic, received) is not None
    assert taken > 1000, f"seed {seed}: the fast path took only {taken} frames"


@pytest.mark.parametrize("flags", [0, 1])
def test_device_frames_take_the_fast_path_and_encode_like_cbor2(flags: int) -> None:
    registry = Registry(DEVICES)
    fast, _ = both(registry)
    d = DEVICES[0]
    for data in ({}, {1: 3600, 2: 0}, {1: 2**40}):
        blob = fwframe.build(d.key, d.id, 7, 300, fwframe.T_HEARTBEAT, 123456, data, flags)
        ev = fast._fast.verify(blob, d.id, TIME)
        assert ev is not None
        ref = Event(d.id, 7, 300, fwframe.T_HEARTBEAT, 123456, TIME, data, ev.tag, flags)
        assert ev.encoded == ref.encoded == cbor2.dumps(cbor2.loads(ref.encoded), canonical=True)


def test_non_canonical_protected_header_still_accepted_by_the_general_path() -> None:
    registry = Registry(DEVICES)
    fast, _ = both(registry)
    d = DEVICES[0]
    payload = cbor2.dumps({1: 1, 2: 1, 3: 1, 4: 0, 5: {}}, canonical=True)
    protected = b"\xa2\x04\x47" + d.id.encode() + b"\x01\x04"  # {4: kid, 1: 4}: keys out of order
    tag = cose.mac0_tag(d.key, protected, AAD_FRAME, payload)
    blob = b"\xd1\x84" + cose.bstr(protected) + b"\xa0" + cose.bstr(payload) + cose.bstr(tag)
    assert fast._fast.verify(blob, d.id, TIME) is None
    assert fast.verify(blob, d.id, TIME).seq == 1


def test_a_replaced_device_key_is_picked_up() -> None:
    old = DEVICES[0]
    registry = Registry([old])
    fast, _ = both(registry)
    blob = fwframe.build(old.key, old.id, 1, 1, 1, 0, {}, 0)
    assert fast.verify(blob, old.id, TIME).seq == 1
    new = Device(old.id, old.kind, bytes(32), old.venue, old.zone)
    fast.registry = registry = Registry([new])
    fast._fast.registry = registry
    with pytest.raises(WireError) as exc:
        fast.verify(blob, old.id, TIME)
    assert exc.value.reason == "bad_mac"


@pytest.mark.parametrize("cause", [0, 1, 3, 5, 255])
def test_a_first_heartbeat_with_the_reset_cause_passes_both_paths_unchanged(cause: int) -> None:
    # docs/protocol.md 2.1: HEARTBEAT key 4 is the reset cause of the boot (first heartbeat
    # only); the gateway forwards it like any data key, on the fast path and the general one
    registry = Registry(DEVICES)
    fast, general = both(registry)
    d = DEVICES[0]
    data = {1: 60, 2: 0, 4: cause}
    blob = fwframe.build(d.key, d.id, 2, 9, fwframe.T_HEARTBEAT, 60001, data)
    assert fast._fast.verify(blob, d.id, TIME) is not None
    got = outcome(fast, blob, d.id, TIME)
    assert got == outcome(general, blob, d.id, TIME)
    assert got[7] == data
    # a sensor's heartbeat keeps its readings map next to it
    data = {1: 60, 2: 1, 3: {0: 140, 1: 12}, 4: cause}
    blob = fwframe.build(d.key, d.id, 2, 10, fwframe.T_HEARTBEAT, 60002, data)
    assert outcome(fast, blob, d.id, TIME)[7] == outcome(general, blob, d.id, TIME)[7] == data
