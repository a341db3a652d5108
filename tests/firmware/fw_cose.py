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
