"""Property tests for the serial framing: the firmware's cobsframe (device side) and the agent's
deframer (agent/gateway/sources/serial.py, on the `cobs` package), against the `cobs` package and zlib.

Under CPython both are driven by hypothesis; under the MicroPython unix port seeded random
streams are checked by cases_cobs.py on the device interpreter. Every test runs from the
session's seed (tests/seeds.py: a failure names GE_SEED=<n>, which replays it).
"""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path
from typing import Any

from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gateway.sources import serial as agent_serial
from agent.shared.errors import WireError
from hil_tests.sim.tools import FIRMWARE_DIR
from tests.seeds import seeded

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import cobsframe  # firmware module, found through the path above
from micropython_cases import run_cases

MAX = cobsframe.MAX_PAYLOAD
REASONS = ("partial", "oversize", "cobs", "crc", "short")


def _wire(payload: bytes) -> bytes:
    """What a sender writes: 0x00, COBS(payload || CRC-32 LE), 0x00 (the oracle's bytes)."""
    return b"\x00" + bytes(cobs.encode(payload + zlib.crc32(payload).to_bytes(4, "little"))) + b"\x00"


payloads = st.binary(min_size=1, max_size=MAX)
garbage = st.binary(max_size=700)


def test_encode_decode_match_the_cobs_package() -> None:
    @seeded
    @settings(max_examples=1500, deadline=None)
    @given(st.binary(max_size=1200))
    def check(data: bytes) -> None:
        enc = cobsframe.encode(data)
        assert enc == bytes(cobs.encode(data))
        assert cobsframe.decode(enc) == data
        assert len(enc) <= len(data) + 1 + len(data) // 254

    check()


def test_decode_agrees_with_the_cobs_package_on_any_bytes() -> None:
    @seeded
    @settings(max_examples=2000, deadline=None)
    @given(st.binary(max_size=600))
    def check(data: bytes) -> None:
        try:
            want: bytes | None = bytes(cobs.decode(data))
        except cobs.DecodeError:
            want = None
        try:
            got: bytes | None = cobsframe.decode(data)
        except cobsframe.FramingError as exc:
            assert exc.reason == "cobs"
            got = None
        assert got == want

    check()


def test_crc32_table_matches_zlib() -> None:
    @seeded
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=600), st.integers(min_value=0, max_value=2**32 - 1))
    def check(data: bytes, start: int) -> None:
        assert cobsframe.crc32_py(data) == zlib.crc32(data)
        assert cobsframe.crc32_py(data, start) == zlib.crc32(data, start)

    check()


def test_frame_is_the_oracles_frame_and_both_sides_unframe_it() -> None:
    @seeded
    @settings(max_examples=800, deadline=None)
    @given(payloads)
    def check(payload: bytes) -> None:
        wire = _wire(payload)
        assert cobsframe.frame(payload) == wire[1:]
        assert agent_serial.encode_frame(payload) == wire
        assert cobsframe.unframe(wire[1:-1]) == payload
        assert agent_serial.unframe(wire[1:-1], MAX) == payload

    check()


def _fw_reason(body: bytes) -> str | None:
    try:
        cobsframe.unframe(body)
    except cobsframe.FramingError as exc:
        return str(exc.reason)
    return None


def _agent_reason(body: bytes) -> str | None:
    try:
        agent_serial.unframe(body, MAX)
    except WireError as exc:
        return exc.reason
    return None


def test_device_and_gateway_reject_the_same_bodies_for_the_same_reason() -> None:
    @seeded
    @settings(max_examples=1500, deadline=None)
    @given(st.one_of(st.binary(min_size=1, max_size=700), payloads.map(lambda p: _wire(p)[1:-1])), st.data())
    def check(body: bytes, data: st.DataObject) -> None:
        body = body.replace(b"\x00", b"\x01")
        if body and data.draw(st.booleans()):
            # one byte changed, as line noise does
            i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
            body = body[:i] + bytes([data.draw(st.integers(min_value=1, max_value=255))]) + body[i + 1 :]
        assert _fw_reason(body) == _agent_reason(body)

    check()


def _run_fw(chunks: list[bytes]) -> tuple[list[bytes], dict[str, int]]:
    d = cobsframe.Deframer()
    out: list[bytes] = []
    for chunk in chunks:
        out += d.feed(chunk)
    assert len(d.buf) == cobsframe.max_encoded(MAX)  # one buffer, allocated once
    return out, dict(d.rejected)


def _run_agent(chunks: list[bytes]) -> tuple[list[bytes], dict[str, int]]:
    d = agent_serial.Deframer(MAX)
    out: list[bytes] = []
    counts = dict.fromkeys(REASONS, 0)
    for chunk in chunks:
        for item in d.feed(chunk):
            if isinstance(item, bytes):
                out.append(item)
            else:
                counts[item.reason] += 1
        assert len(d._buf) <= d.max_encoded
    return out, counts


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def test_deframers_recover_every_good_frame_around_garbage() -> None:
    @seeded
    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(st.tuples(garbage, payloads), max_size=8),
        garbage,
        st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    )
    def check(items: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int]) -> None:
        stream = b"".join(junk + _wire(p) for junk, p in items) + tail
        goods = [p for _, p in items]
        whole = _run_fw([stream])
        # garbage cannot pass the CRC by chance at these sizes: exactly the good frames come out
        assert whole[0] == goods
        # the same in any chunking, and the same on the gateway side
        assert _run_fw(_split(stream, cuts)) == whole
        assert _run_agent([stream]) == whole
        assert _run_agent(_split(stream, cuts)) == whole

    check()


def test_deframers_agree_on_mutated_streams() -> None:
    @seeded
    @settings(max_examples=400, deadline=None)
    @given(st.lists(payloads, min_size=1, max_size=6), st.data())
    def check(items: list[bytes], data: st.DataObject) -> None:
        stream = bytearray(b"".join(_wire(p) for p in items))
        for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
            op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
            i = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
            if op == "flip":
                stream[i] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
            elif op == "drop":
                del stream[i]
            else:
                stream.insert(i, data.draw(st.integers(min_value=0, max_value=255)))
            if not stream:
                return
        fw = _run_fw([bytes(stream)])
        assert _run_agent([bytes(stream)]) == fw
        # what comes out is a subsequence of what was sent (mutations are caught, nothing invented)
        it = iter(items)
        assert all(any(p == q for q in it) for p in fw[0])

    check()


# --- MicroPython side: seeded random streams ----------------------------------------------


def _case(rng: random.Random) -> dict[str, Any]:
    parts: list[bytes] = []
    for _ in range(rng.randrange(1, 6)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(rng.randbytes(rng.randrange(0, 40)))
        elif kind == 1:
            parts.append(b"\x01" * rng.randrange(500, 700))
        parts.append(_wire(rng.randbytes(rng.choice([1, 2, 50, 253, 254, 255, rng.randrange(1, MAX + 1)]))))
    stream = bytearray(b"".join(parts))
    for _ in range(rng.randrange(3)):
        stream[rng.randrange(len(stream))] = rng.randrange(256)
    out, counts = _run_agent([bytes(stream)])
    return {"hex": bytes(stream).hex(), "payloads": [p.hex() for p in out], "rejected": counts}


def test_micropython_deframer_matches_the_gateways_on_random_streams(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    doc = {"seed": seed, "cases": [_case(rng) for _ in range(300)]}
    run_cases("cases_cobs", doc, tmp_path, note=f"seed={seed}")
