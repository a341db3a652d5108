"""Property tests for the firmware CBOR codec, with cbor2 (canonical mode) as the oracle.

Under CPython the codec is imported directly and driven by hypothesis. Under the MicroPython
unix port, seeded random values are generated here, encoded by cbor2, and checked by
cases_cbor.py running on the device interpreter. Every test prints its seed.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases_utf8  # the firmware tests' UTF-8 cases, shared with MicroPython
import cbor as fwcbor
from micropython_cases import run_cases

scalars = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
)
keys = st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=600, deadline=None)
@given(values)
def test_encoding_is_byte_identical_to_cbor2_canonical(value: Any) -> None:
    assert fwcbor.dumps(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=600, deadline=None)
@given(values)
def test_roundtrip(value: Any) -> None:
    assert _same(fwcbor.loads(fwcbor.dumps(value)), value)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_only_cbor_error(data: bytes) -> None:
    with contextlib.suppress(fwcbor.CBORError):  # any other exception fails the property
        fwcbor.loads(data)


@settings(max_examples=1000, deadline=None)
@given(values, st.data())
def test_mutated_encodings_raise_only_cbor_error(value: Any, data: st.DataObject) -> None:
    blob = bytearray(cbor2.dumps(value, canonical=True))
    i = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    blob[i] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = fwcbor.loads(bytes(blob))
    except fwcbor.CBORError:
        return
    # Whatever decodes must agree with cbor2 on the same bytes. Tags are left out of the
    # comparison: cbor2 gives semantic tags (datetimes, bignums, ...) a meaning of their own.
    if not _has_tag(decoded):
        assert _same(decoded, cbor2.loads(bytes(blob)))


@settings(max_examples=600, deadline=None)
@given(
    st.recursive(
        scalars
        | st.integers()
        | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=4)
        | st.just(math.nan),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(keys | st.just(math.nan) | st.floats(allow_nan=True), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_encoder_raises_only_cbor_error(value: Any) -> None:
    # big integers, lone surrogates, NaN keys: whatever fails, fails with the codec's error
    try:
        blob = fwcbor.dumps(value)
    except fwcbor.CBORError:
        return
    assert blob == cbor2.dumps(value, canonical=True)


def test_half_floats_all_65536_match_cbor2() -> None:
    # cbor2 canonical re-encodes every binary16 value (NaNs: as f97e00) to its own 3 bytes,
    # which makes the firmware test of the same round trip (fw_cbor.py, run on MicroPython)
    # a proof of byte-identity with cbor2; the firmware decodes each to cbor2's value.
    for h in range(65536):
        blob = bytes((0xF9, h >> 8, h & 0xFF))
        want = cbor2.loads(blob)
        got = fwcbor.loads(blob)
        assert _same(got, want), f"{blob.hex()}: {got!r} != {want!r}"
        canonical = b"\xf9\x7e\x00" if math.isnan(want) else blob
        assert cbor2.dumps(want, canonical=True) == canonical, blob.hex()
        assert fwcbor.dumps(got) == canonical, blob.hex()


@settings(max_examples=3000, deadline=None)
@given(
    st.floats(width=16)
    | st.floats(width=32)
    | st.floats()
    | st.integers(min_value=0, max_value=2**64 - 1).map(lambda b: struct.unpack(">d", b.to_bytes(8, "big"))[0])
)
def test_floats_byte_identical_to_cbor2(value: float) -> None:
    assert fwcbor.dumps(value) == cbor2.dumps(value, canonical=True)


def _cbor2_text_ok(raw: bytes) -> bool:
    # raw (at most 23 bytes) as a CBOR text string: does cbor2 take it?
    try:
        cbor2.loads(bytes((0x60 + len(raw),)) + raw)
    except cbor2.CBORDecodeError:
        return False
    return True


def test_utf8_stress_expectations_are_cbor2s() -> None:
    # the literal expectations in cases_utf8.py are what cbor2 and CPython's decoder say
    cases = [(sec, bytes.fromhex(hx), cps) for sec, hx, cps in cases_utf8.STRESS]
    for sec, raw, cps in cases + cases_utf8.lone_continuations() + cases_utf8.lonely_starts():
        blob = cbor2.dumps(raw)
        blob = bytes((blob[0] + 0x20,)) + blob[1:]
        try:
            text = cbor2.loads(blob)
        except cbor2.CBORDecodeError:
            assert cps is None, sec
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
            continue
        assert [ord(c) for c in text] == cps, sec


def _utf8_bitmap() -> tuple[bytes, int]:
    bits = bytearray()
    n = 0
    for seq in cases_utf8.sequences():
        if n % 8 == 0:
            bits.append(0)
        if _cbor2_text_ok(seq):
            bits[-1] |= 0x80 >> (n % 8)
        n += 1
    return bytes(bits), n


def test_utf8_short_sequences_match_cbor2_on_cpython() -> None:
    bad = []
    for seq in cases_utf8.sequences():
        try:
            fwcbor.loads(bytes((0x60 + len(seq),)) + seq)
            ok = True
        except fwcbor.CBORError:
            ok = False
        if ok != _cbor2_text_ok(seq):
            bad.append(seq.hex())
    assert not bad, f"{len(bad)} disagree with cbor2, first {bad[:5]}"


def test_utf8_short_sequences_match_cbor2_on_micropython(tmp_path: Path) -> None:
    bitmap, n = _utf8_bitmap()
    assert n > 150_000  # every 1- and 2-byte string and the 3- and 4-byte edges
    run_cases("cases_utf8", {"valid": bitmap.hex()}, tmp_path)


def _has_tag(v: Any) -> bool:
    if isinstance(v, fwcbor.Tag):
        return True
    if isinstance(v, list):
        return any(_has_tag(x) for x in v)
    if isinstance(v, dict):
        return any(_has_tag(x) for x in v.values())
    return False


# --- MicroPython side: seeded random values -------------------------------------------


def _rand_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 7)
    if kind == 0:
        return rng.choice([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
    if kind == 1:
        return -rng.randrange(1, 2 ** rng.choice([5, 8, 16, 31, 32, 63, 64]) + 1)
    if kind == 2:
        return rng.randbytes(rng.randrange(30))
    if kind == 3:
        return "".join(
            rng.choice('aZ09 é水\U00010151"\\\x00\x7f\u07ff\ud7ff\ue000\uffff\U0010ffff')
            for _ in range(rng.randrange(12))
        )
    if kind == 4:
        return rng.choice(
            [
                0.0,
                -0.0,
                1.5,
                65504.0,
                1e300,
                math.inf,
                -math.inf,
                math.nan,
                0.1,
                3.4e38,
                struct.unpack(">d", rng.randbytes(8))[0],
                rng.uniform(-1e6, 1e6),
                struct.unpack(">e", rng.randbytes(2))[0],  # binary16 values, subnormals included
                struct.unpack(">f", rng.randbytes(4))[0],
                struct.unpack(">f", bytes(2) + rng.randbytes(2))[0],  # binary32 subnormals
            ]
        )
    if kind == 5:
        return rng.choice([True, False, None])
    if kind == 6:
        return rng.randrange(2**64)
    if kind == 7:
        return [_rand_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    out: dict[Any, Any] = {}
    for _ in range(rng.randrange(5)):
        k = rng.choice([rng.randrange(-1000, 100000), rng.choice(["a", "bb", "z"]), rng.randbytes(2)])
        out[k] = _rand_value(rng, depth + 1)
    return out


def _to_json(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, (str, int)):
        return v
    if isinstance(v, float):
        return {"$f64": struct.pack(">d", v).hex()}
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, list):
        return [_to_json(x) for x in v]
    return {"$map": [[_to_json(k), _to_json(x)] for k, x in v.items()]}


def test_micropython_codec_matches_cbor2_on_random_values(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    cases, garbage = [], []
    for _ in range(1500):
        value = _rand_value(rng)
        blob = cbor2.dumps(value, canonical=True)
        cases.append({"value": _to_json(value), "hex": blob.hex()})
        mutated = bytearray(blob)
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        garbage.append(bytes(mutated[: rng.randrange(1, len(mutated) + 1)]).hex())
    for _ in range(1500):
        garbage.append(rng.randbytes(rng.randrange(1, 40)).hex())
    doc = {"seed": seed, "cases": cases, "garbage": garbage}
    run_cases("cases_cbor", doc, tmp_path, heap="16M", note=f"seed={seed}")
