"""Property tests for the firmware CBOR codec, with cbor2 (canonical mode) as the oracle.

Under CPython the codec is imported directly and driven by hypothesis. Under the MicroPython
unix port, seeded random values are generated here, encoded by cbor2, and checked by
cases_cbor.py running on the device interpreter. Every test prints its seed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil_tests.sim.tools import FIRMWARE_DIR, find_micropython

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import cbor as fwcbor

HERE = Path(__file__).resolve().parent

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
        return "".join(rng.choice('aZ09 é水\U00010151"\\') for _ in range(rng.randrange(12)))
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
    micropython = find_micropython()
    if micropython is None:
        pytest.skip("NO MICROPYTHON: property cases ran under CPython only")
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
    path = tmp_path / "cases.json"
    path.write_text(
        json.dumps({"seed": seed, "cases": cases, "garbage": garbage}, ensure_ascii=False),
        encoding="utf-8",
    )
    env = dict(
        os.environ,
        GE_CASES=str(path),
        GE_VECTORS=str(HERE.parent / "vectors"),
        MICROPYPATH=f"{HERE}:{FIRMWARE_DIR / 'lib'}",
    )
    proc = subprocess.run(
        [micropython, "-X", "heapsize=16M", str(HERE / "fwtest.py"), "cases_cbor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"seed={seed}\n{proc.stdout}\n{proc.stderr}"
    assert "ok test_cases" in proc.stdout
