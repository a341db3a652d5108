# CBOR subset codec: vectors, malformed input, limits. Runs on MicroPython and CPython.
import struct
import time

import cases_utf8
import cbor
import utf8
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
    # always the codec's own error, never TypeError, OverflowError or UnicodeError
    nested = [0]
    for _ in range(20):
        nested = [nested]
    cyclic = []
    cyclic.append(cyclic)
    for bad in (
        2**64,
        -(2**64) - 1,
        [1, {2: 2**70}],
        object(),
        {1, 2},
        nested,
        cyclic,
        cbor.Tag(-1, 0),
        cbor.Tag(2**64, 0),
        cbor.Tag(True, 0),
        cbor.Tag("1", 0),
        chr(0xD800),  # a lone surrogate: CPython cannot encode it, MicroPython would write ED A0 80
        "ok" + chr(0xDFFF),
        {"k" + chr(0xDC00): 1},
        {float("nan"): 1, float("nan"): 2},  # two keys, one encoding f97e00
    ):
        exc = raises(Exception, cbor.dumps, bad)
        assert type(exc) is cbor.CBORError, "%s from %r" % (type(exc).__name__, bad)


def test_text_utf8_stress_cases():
    # Markus Kuhn's UTF-8 stress test, section by section (tests/firmware/cases_utf8.py)
    cases = cases_utf8.STRESS
    cases = [(sec, unhex(hx), cps) for sec, hx, cps in cases]
    cases += cases_utf8.lone_continuations() + cases_utf8.lonely_starts()
    for sec, raw, cps in cases:
        blob = cbor.dumps(raw)
        blob = bytes((blob[0] + 0x20,)) + blob[1:]  # the same bytes as a text string
        if cps is None:
            exc = raises(cbor.CBORError, cbor.loads, blob)
            assert "invalid UTF-8" in str(exc), (sec, str(exc))
            continue
        got = cbor.loads(blob)
        assert [ord(c) for c in got] == cps, (sec, raw, got)
        assert cbor.dumps(got) == blob, sec  # and back to the same bytes


def test_text_utf8_error_names_the_byte():
    exc = raises(cbor.CBORError, cbor.loads, unhex("a1016641c3a9eda080"))
    assert "offset 2 (byte 6)" in str(exc), str(exc)
    # inside an array, a truncated sequence at the very end of the string
    exc = raises(cbor.CBORError, cbor.loads, unhex("82016341e282"))
    assert "offset 2 (byte 4)" in str(exc), str(exc)


def test_half_floats_all_65536_round_trip():
    # Every binary16 value decodes to its float and encodes back to the same 3 bytes (NaNs:
    # to the one canonical NaN). tests/firmware/test_cbor_property.py proves on CPython that
    # cbor2 canonical does exactly this, so this is byte-identity with cbor2 on MicroPython.
    bad = []
    for h in range(65536):
        blob = bytes((0xF9, h >> 8, h & 0xFF))
        v = cbor.loads(blob)
        if v != v:
            if h & 0x7C00 != 0x7C00 or not h & 0x3FF or cbor.dumps(v) != b"\xf9\x7e\x00":
                bad.append(h)
            continue
        if cbor.dumps(v) != blob:
            bad.append(h)
    assert not bad, "%d halves do not round-trip, first %s" % (len(bad), [hex(h) for h in bad[:5]])


def test_half_float_values():
    # values computed without the codec: sign * mantissa * 2^exponent
    for h, want in (
        (0x0001, 2.0**-24),  # smallest subnormal
        (0x0200, 2.0**-15),  # MicroPython's struct "e" packs this one as 0x0000
        (0x03FF, 1023 * 2.0**-24),  # largest subnormal
        (0x0400, 2.0**-14),  # smallest normal
        (0x3C01, 1 + 2.0**-10),
        (0x7BFF, 65504.0),
        (0x8001, -(2.0**-24)),
        (0xC400, -4.0),
    ):
        assert cbor.loads(bytes((0xF9, h >> 8, h & 0xFF))) == want, hex(h)
        assert cbor.dumps(want) == bytes((0xF9, h >> 8, h & 0xFF)), hex(h)
    # one bit more than a half holds: single precision, then double
    assert cbor.dumps(2.0**-25) == unhex("fa33000000")
    assert cbor.dumps(1 + 2.0**-11) == unhex("fa3f801000")
    assert cbor.dumps(65505.0) == unhex("fa477fe100")
    assert cbor.dumps(struct.unpack(">d", unhex("3ff0000000000001"))[0]) == unhex("fb3ff0000000000001")


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


def test_utf8_check_allocates_nothing():
    # MicroPython: with the heap locked any allocation raises MemoryError
    text = ("ge/dev/AP-0001/up \u00e9\u6c34\U00010151 " * 8).encode()
    bad = b"ok" + bytes.fromhex("eda080")
    try:
        import micropython
    except ImportError:
        micropython = None
    if micropython is not None:
        micropython.heap_lock()
    try:
        a = utf8.bad(text)
        b = utf8.bad(text, 0, -1, True)
        c = utf8.bad(bad)
        d = utf8.bad(text, 3, 40)
    finally:
        if micropython is not None:
            micropython.heap_unlock()
    assert (a, b, c, d) == (-1, -1, 2, -1), (a, b, c, d)
