# Serial framing (lib/cobsframe.py): COBS, CRC-32, frames, the stream deframer. The vectors in
# serial.json come from the `cobs` package and zlib (tests/vectors/generate.py). Runs on
# MicroPython and CPython.
import cobsframe
from fwsupport import load_vectors, raises, unhex

V = load_vectors("serial.json")
MAX = V["max_payload"]


def _reason(fn, *args):
    return raises(cobsframe.FramingError, fn, *args).reason


def test_bounds_match_the_spec():
    assert cobsframe.MAX_PAYLOAD == MAX == 512
    assert cobsframe.max_encoded(MAX) == V["max_encoded"] == 519
    assert len(cobsframe.Deframer().buf) == 519


def test_cobs_vectors():
    for vec in V["cobs"]:
        data = unhex(vec["data"])
        enc = unhex(vec["encoded"])
        assert cobsframe.encode(data) == enc, vec["name"]
        assert cobsframe.decode(enc) == data, vec["name"]
        assert 0 not in enc, vec["name"]


def test_crc32_vectors_native_and_table():
    for vec in V["crc32"]:
        data = unhex(vec["data"])
        assert cobsframe.crc32(data) & 0xFFFFFFFF == vec["crc32"], vec["name"]
        assert cobsframe.crc32_py(data) == vec["crc32"], vec["name"]
    # incremental, as binascii.crc32(data, crc) is
    assert cobsframe.crc32_py(b"456789", cobsframe.crc32_py(b"123")) == 0xCBF43926


def test_frame_vectors():
    for vec in V["frames"]:
        payload = unhex(vec["payload"])
        wire = unhex(vec["frame"])
        assert cobsframe.frame(payload) == wire, vec["name"]
        assert wire[-1] == 0 and 0 not in wire[:-1], vec["name"]
        assert cobsframe.unframe(wire[:-1]) == payload, vec["name"]
        d = cobsframe.Deframer()
        assert d.feed(b"\x00" + wire) == [payload], vec["name"]


def test_bad_frames_rejected_with_their_reason():
    for vec in V["bad"]:
        body = unhex(vec["body"])
        assert _reason(cobsframe.unframe, body) == vec["reason"], vec["name"]
        d = cobsframe.Deframer()
        assert d.feed(b"\x00" + body + b"\x00") == [], vec["name"]
        assert d.rejected[vec["reason"]] == 1, (vec["name"], d.rejected)
        assert sum(d.rejected.values()) == 1, (vec["name"], d.rejected)
        assert d.last_error.reason == vec["reason"]


def test_sender_refuses_empty_and_oversize_payloads():
    assert _reason(cobsframe.frame, b"") == "short"
    assert _reason(cobsframe.frame, bytes(MAX + 1)) == "oversize"
    assert cobsframe.frame(bytes(MAX))[-1] == 0


def test_decode_rejects_a_zero_byte_and_a_run_past_the_end():
    assert _reason(cobsframe.decode, b"\x02\x00") == "cobs"
    assert _reason(cobsframe.decode, b"\x03\x11") == "cobs"


def _stream_result(chunks):
    d = cobsframe.Deframer()
    out = []
    for chunk in chunks:
        out += d.feed(chunk)
    return out, d


def test_stream_vector_in_one_piece_and_byte_by_byte():
    s = V["stream"]
    data = unhex(s["hex"])
    want = [unhex(p) for p in s["payloads"]]
    for chunks in (
        [data],
        [data[i : i + 1] for i in range(len(data))],
        [data[i : i + 7] for i in range(0, len(data), 7)],
    ):
        out, d = _stream_result(chunks)
        assert out == want
        for reason, n in s["rejected"].items():
            assert d.rejected[reason] == n, (reason, d.rejected)
        assert d.n == s["pending"]  # the open frame at the end stays buffered
        assert len(d.buf) == V["max_encoded"]  # the buffer never grew


def test_feed_takes_a_length_and_a_bytearray():
    wire = unhex(V["frames"][0]["frame"])
    buf = bytearray(200)
    buf[0] = 0
    buf[1 : 1 + len(wire)] = wire
    d = cobsframe.Deframer()
    assert d.feed(buf, 1 + len(wire)) == [unhex(V["frames"][0]["payload"])]
    assert d.n == 0


def test_truncated_frames_then_a_good_one():
    good = unhex(V["frames"][0]["frame"])
    payload = unhex(V["frames"][0]["payload"])
    d = cobsframe.Deframer()
    d.feed(b"\x00")
    for cut in range(1, len(good) - 1):
        # the frame loses its tail; the next frame's leading 0x00 ends what was received
        assert d.feed(good[:cut] + b"\x00" + good) == [payload], cut
    assert sum(d.rejected.values()) == len(good) - 2, d.rejected
    assert d.rejected["partial"] == 0 and d.rejected["oversize"] == 0


def test_garbage_between_frames_and_zero_length_frames():
    good = unhex(V["frames"][1]["frame"])
    payload = unhex(V["frames"][1]["payload"])
    d = cobsframe.Deframer()
    stream = b"\x00" * 5 + good + b"\x00\x00" + b"\x01\x02\x03\x00" + b"\x00" + good + b"\xff" * 1000 + b"\x00" + good
    assert d.feed(stream) == [payload, payload, payload]
    assert d.rejected == {"partial": 0, "oversize": 1, "cobs": 0, "crc": 0, "short": 1}, d.rejected


def test_oversize_run_is_dropped_up_to_the_next_delimiter_and_counted_once():
    payload = unhex(V["frames"][0]["payload"])
    d = cobsframe.Deframer()
    d.feed(b"\x00")
    for _ in range(50):
        assert d.feed(b"\x01" * 100) == []
    assert d.rejected["oversize"] == 1
    assert d.feed(b"\x00" + cobsframe.frame(payload)) == [payload]
    assert len(d.buf) == V["max_encoded"]


def test_bytes_before_the_first_delimiter_are_a_partial_frame():
    wire = unhex(V["frames"][0]["frame"])
    payload = unhex(V["frames"][0]["payload"])
    d = cobsframe.Deframer()
    # the receiver started in the middle of a frame: its tail is dropped, the next one taken
    assert d.feed(wire[10:]) == []
    assert d.rejected["partial"] == 1
    assert d.feed(wire) == [payload]
    # without a 0x00 in between, line noise at the start takes the first frame with it:
    # that is why a sender writes a 0x00 before every frame
    d2 = cobsframe.Deframer()
    assert d2.feed(b"\x01\x02" + wire) == []
    assert d2.feed(b"\x01\x02\x00" + wire) == [payload]
    assert d2.rejected["partial"] == 1 and d2.rejected["cobs"] + d2.rejected["crc"] == 1


def test_reset_counts_a_frame_cut_off_and_hunts_again():
    wire = unhex(V["frames"][0]["frame"])
    payload = unhex(V["frames"][0]["payload"])
    d = cobsframe.Deframer()
    assert d.feed(b"\x00" + wire[:20]) == []
    d.reset()
    assert d.rejected["partial"] == 1
    assert d.feed(wire[20:]) == []  # the rest of the old frame: dropped while hunting
    assert d.rejected["partial"] == 2
    assert d.feed(b"\x00" + wire) == [payload]


def test_smaller_bound():
    d = cobsframe.Deframer(32)
    assert len(d.buf) == cobsframe.max_encoded(32)
    big = cobsframe.frame(bytes(range(1, 41)), 64)
    small = cobsframe.frame(b"hello")
    assert d.feed(b"\x00" + big + small) == [b"hello"]
    assert d.rejected["oversize"] == 1
    assert _reason(cobsframe.unframe, big[:-1], 32) == "oversize"
