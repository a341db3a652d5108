# COSE_Mac0, HMAC-SHA256, device frames and receipts. Runs on MicroPython and CPython.
import cbor
import cose
import frame
from fwsupport import from_json, load_vectors, raises, same, unhex

V = load_vectors("cose.json")
KEY = unhex(V["key"])
OTHER = unhex(V["other_key"])
AAD = V["aad_frame"].encode()


def test_hmac_sha256_rfc4231():
    cases = [
        (
            b"\x0b" * 20,
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            b"\xaa" * 131,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ]
    for key, msg, want in cases:
        assert cose.hmac_sha256(key, msg).hex() == want


def test_frames_built_by_firmware_equal_vectors():
    for vec in V["frames"]:
        p = from_json(vec["payload"])
        got = frame.build(KEY, V["device_id"], p[1], p[2], p[3], p[4], p[5], p.get(6, 0))
        assert got.hex() == vec["hex"], vec["name"]


def test_vector_frames_verify():
    for vec in V["frames"]:
        kid, payload = cose.mac0_verify(KEY, unhex(vec["hex"]), AAD)
        assert kid == V["device_id"].encode()
        assert same(cbor.loads(payload), from_json(vec["payload"])), vec["name"]


def test_bad_frames_rejected():
    for vec in V["bad_frames"]:
        raises(cose.COSEError, cose.mac0_verify, KEY, unhex(vec["hex"]), AAD)


def test_wrong_key_and_wrong_aad_rejected():
    good = unhex(V["frames"][0]["hex"])
    raises(cose.COSEError, cose.mac0_verify, OTHER, good, AAD)
    raises(cose.COSEError, cose.mac0_verify, KEY, good, V["aad_receipt"].encode())


def test_every_single_bit_flip_is_rejected():
    good = unhex(V["frames"][0]["hex"])
    for i in range(len(good)):
        for bit in (0x01, 0x80):
            b = bytearray(good)
            b[i] ^= bit
            raises(cose.COSEError, cose.mac0_verify, KEY, bytes(b), AAD)


def test_receipts_parse():
    for vec in V["receipts"]:
        got = frame.parse_receipt(KEY, unhex(vec["hex"]))
        assert got == (vec["boot"], vec["seq"], vec["kind"])


def test_receipt_forgeries_rejected():
    rec = unhex(V["receipts"][0]["hex"])
    raises(frame.FrameError, frame.parse_receipt, OTHER, rec)
    b = bytearray(rec)
    b[-1] ^= 0xFF
    raises(frame.FrameError, frame.parse_receipt, KEY, bytes(b))
    # a device frame replayed towards the device as a receipt
    raises(frame.FrameError, frame.parse_receipt, KEY, unhex(V["frames"][0]["hex"]))
    # receipt with a non-uint field, correctly MAC'd
    bogus = cose.mac0_encode(KEY, b"GW", cbor.dumps({1: 3, 2: -1, 3: 1}), frame.AAD_RECEIPT)
    raises(frame.FrameError, frame.parse_receipt, KEY, bogus)
    bogus = cose.mac0_encode(KEY, b"GW", cbor.dumps([1, 2, 3]), frame.AAD_RECEIPT)
    raises(frame.FrameError, frame.parse_receipt, KEY, bogus)
    raises(frame.FrameError, frame.parse_receipt, KEY, b"\xff\x00")


def _mac0_with(protected, unprotected, payload=b"\xa0"):
    # a COSE_Mac0 with a correct tag whatever its headers, built from parts
    tag = cose.hmac_sha256(KEY, cbor.dumps(["MAC0", protected, AAD, payload]))[:8]
    return cbor.dumps(cbor.Tag(17, [protected, unprotected, payload, tag]))


def test_only_the_profile_header_is_accepted():
    kid = b"AP-0001"
    cases = (
        ({1: 4, 2: [99], 4: kid, 99: 0}, {}, "crit (2)"),
        ({1: 4, 2: [1], 4: kid}, {}, "crit (2)"),
        ({1: 4, 3: 0, 4: kid}, {}, "exactly {1: alg, 4: kid}"),
        ({1: 4, 4: kid, "x": 1}, {}, "exactly {1: alg, 4: kid}"),
        ({4: kid}, {1: 4}, "unprotected header must be the empty map"),
        ({1: 4, 4: kid}, {4: kid}, "unprotected header must be the empty map"),
        ({1: 4.0, 4: kid}, {}, "alg must be 4"),
        ({1: 5, 4: kid}, {}, "alg must be 4"),
        ({1: 4, 4: "AP-0001"}, {}, "kid must be a non-empty byte string"),
        ({1: 4, 4: b""}, {}, "kid must be a non-empty byte string"),
        ([4, kid], {}, "protected header must be a map"),
    )
    for hdr, unprotected, want in cases:
        msg = _mac0_with(cbor.dumps(hdr), unprotected)
        exc = raises(cose.COSEError, cose.mac0_verify, KEY, msg, AAD)
        assert want in str(exc), (hdr, str(exc))


def test_envelope_must_be_canonical():
    good = unhex(V["frames"][0]["hex"])
    obj = cbor.loads(good)
    protected, _, payload, tag = obj.value
    # the same parts with a longer head somewhere: tag, array, protected, unprotected, payload
    for msg in (
        b"\xd8\x11\x84" + good[2:],
        b"\xd1\x98\x04" + good[2:],
        b"\xd1\x84\x58" + bytes((len(protected),)) + protected + good[3 + len(protected) :],
        b"\xd1\x84" + cbor.dumps(protected) + b"\xb8\x00" + cbor.dumps(payload) + cbor.dumps(tag),
        b"\xd1\x84" + cbor.dumps(protected) + b"\xa0\x58" + bytes((len(payload),)) + payload + cbor.dumps(tag),
        b"\xd1\x84" + cbor.dumps(protected) + b"\xa0" + cbor.dumps(payload) + b"\x58\x08" + tag,
    ):
        assert cbor.loads(msg).value[2] == payload  # valid CBOR, the same message
        exc = raises(cose.COSEError, cose.mac0_verify, KEY, msg, AAD)
        assert "canonically" in str(exc), str(exc)
    assert cose.mac0_verify(KEY, good, AAD)[0] == b"AP-0001"


def test_protected_header_bytes_are_taken_as_sent():
    # the MAC covers the protected header's bytes, whatever their order: the gateway accepts
    # {4: kid, 1: 4} and so does the device
    protected = b"\xa2\x04\x47AP-0001\x01\x04"
    kid, payload = cose.mac0_verify(KEY, _mac0_with(protected, {}), AAD)
    assert kid == b"AP-0001" and payload == b"\xa0"
