# CBOR subset codec: vectors, malformed input, limits. Runs on MicroPython and CPython.
import time

import cbor
from fwsupport import from_json, load_vectors, raises, same, unhex

V = load_vectors("cbor.json")


def test_encode_canonical_vectors():
    n = 0
    for vec in V["valid"]:
        if not vec["canonical"]:
            continue
        got = cbor.dumps(from_json(vec["value"])).hex()
        assert got == vec["hex"], "%r -> %s, want %s" % (vec["value"], got, vec["hex"])
        n += 1
    assert n > 50


def test_decode_all_valid_vectors():
    for vec in V["valid"]:
        got = cbor.loads(unhex(vec["hex"]))
        want = from_json(vec["value"])
        assert same(got, want), "%s -> %r, want %r" % (vec["hex"], got, want)


def test_noncanonical_input_reencodes_canonically():
    for vec in V["valid"]:
        if vec["canonical"]:
            continue
        value = cbor.loads(unhex(vec["hex"]))
        again = cbor.dumps(value)
        assert len(again) <= len(unhex(vec["hex"]))
        assert same(cbor.loads(again), value)


def test_invalid_vectors_raise_cbor_error():
    for vec in V["invalid"]:
        exc = raises(cbor.CBORError, cbor.loads, unhex(vec["hex"]))
        assert str(exc), vec["why"]


def test_errors_name_the_offset():
    exc = raises(cbor.CBORError, cbor.loads, unhex("83010262"))
    assert "offset 3" in str(exc), str(exc)
    exc = raises(cbor.CBORError, cbor.loads, unhex("a201020103"))
    assert "duplicate" in str(exc) and "offset 3" in str(exc), str(exc)


def test_oversize_lengths_rejected_without_allocating():
    # 2^64-1 byte string, 2^32-1 element array and map: rejected from the header alone.
    for hx in ("5bffffffffffffffff", "9bffffffffffffffff", "bbffffffffffffffff", "7a7fffffff"):
        t0 = time.time()
        raises(cbor.CBORError, cbor.loads, unhex(hx + "00"))
        assert time.time() - t0 < 0.5


def test_deep_nesting_rejected_quickly():
    t0 = time.time()
    raises(cbor.CBORError, cbor.loads, b"\x81" * 5000 + b"\x00")
    assert time.time() - t0 < 0.5
    # exactly at the limit is fine
    assert cbor.loads(b"\x81" * 16 + b"\x00") is not None


def test_truncation_of_every_prefix_raises():
    data = cbor.dumps({1: 7, 2: [1, 2.5, "x", b"yz"], 3: {4: None, 5: True}, 6: -300000})
    for i in range(len(data)):
        raises(cbor.CBORError, cbor.loads, data[:i])
    assert cbor.loads(data)[2][1] == 2.5


def test_encoder_rejects_unsupported():
    raises(cbor.CBORError, cbor.dumps, 2**64)
    raises(cbor.CBORError, cbor.dumps, -(2**64) - 1)
    raises(cbor.CBORError, cbor.dumps, object())
    raises(cbor.CBORError, cbor.dumps, {1, 2})
    nested = [0]
    for _ in range(20):
        nested = [nested]
    raises(cbor.CBORError, cbor.dumps, nested)


def test_bytes_like_inputs():
    blob = cbor.dumps([b"ab", "c"])
    assert cbor.loads(bytearray(blob)) == [b"ab", "c"]
    assert cbor.loads(memoryview(blob)) == [b"ab", "c"]
    assert cbor.dumps(bytearray(b"ab")) == cbor.dumps(b"ab")
    assert cbor.dumps((1, 2)) == cbor.dumps([1, 2])
    raises(cbor.CBORError, cbor.loads, "a string")


def test_tag_roundtrip():
    t = cbor.Tag(17, [b"\xa1\x01\x04", {}, b"", b"12345678"])
    assert cbor.loads(cbor.dumps(t)) == t
    assert cbor.dumps(t)[0] == 0xD1
