"""Writes the test vectors in tests/vectors/ from independent oracles.

The vectors are committed and the tests compare against them literally; this script shows
where each byte came from and checks every vector against an implementation that is not the
project's own: CBOR against cbor2 (canonical mode) and RFC 8949 Appendix A, COSE against
pycose and the standard library's hmac, Ed25519 against cryptography (RFC 8032 signatures
are deterministic, so the bytes are stable).

    python -m tests.vectors.generate          # rewrites the JSON files
    python -m tests.vectors.generate --check  # fails if a committed file differs
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import cbor2

from tests.vectors.wristband import wristband_vectors

HERE = Path(__file__).resolve().parent


def to_json(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return {"$float": "nan"}
        if math.isinf(v):
            return {"$float": "inf" if v > 0 else "-inf"}
        if v == 0.0 and math.copysign(1.0, v) < 0:
            return {"$float": "-0.0"}
        return v
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {"$map": [[to_json(k), to_json(x)] for k, x in v.items()]}
    if isinstance(v, cbor2.CBORTag):
        return {"$tag": [v.tag, to_json(v.value)]}
    raise TypeError(type(v))


# RFC 8949 Appendix A, the subset the firmware codec supports, plus a few edge cases.
CBOR_CANONICAL: list[tuple[Any, str]] = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (255, "18ff"),
    (256, "190100"),
    (65535, "19ffff"),
    (65536, "1a00010000"),
    (4294967295, "1affffffff"),
    (4294967296, "1b0000000100000000"),
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.0, "f93c00"),
    (1.1, "fb3ff199999999999a"),
    (1.5, "f93e00"),
    (65504.0, "f97bff"),
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.0e300, "fb7e37e43c8800759c"),
    (5.960464477539063e-8, "f90001"),
    (0.00006103515625, "f90400"),
    (-4.0, "f9c400"),
    (-4.1, "fbc010666666666666"),
    (math.inf, "f97c00"),
    (math.nan, "f97e00"),
    (-math.inf, "f9fc00"),
    (0.1, "fb3fb999999999999a"),
    (3.0, "f94200"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        "a56161614161626142616361436164614461656145",
    ),
    (cbor2.CBORTag(1, 1363896240), "c11a514b67b0"),
    (cbor2.CBORTag(23, b"\x01\x02\x03\x04"), "d74401020304"),
    (cbor2.CBORTag(24, b"\x64IETF"), "d818456449455446"),
    # canonical key order is by encoded length first: 24 (1818) after -1 (20), text after ints
    ({24: 0, -1: 1, 1: 2, "z": 3, b"k": 4}, "a501022001181800416b04617a03"),
    ({3: 1, 1: 2, 10: 1, -1: 0}, "a4010203010a012000"),
]

# Floats at the edges of each width: binary16 subnormals (which MicroPython's struct "e"
# packs wrongly from 2^-15 up), one bit more than a width holds, binary32 subnormals and
# overflow. Given as the bits of a double, so no decimal conversion (MicroPython's float
# parser is not correctly rounded) stands between the vector and its value.
CBOR_FLOAT_EDGES: list[tuple[str, str]] = [
    ("3e70000000000000", "f90001"),  # 2^-24, the smallest binary16 subnormal
    ("3e60000000000000", "fa33000000"),  # 2^-25
    ("3e78000000000000", "fa33c00000"),  # 1.5 * 2^-24
    ("3e88000000000000", "f90003"),  # 3 * 2^-24
    ("3f00000000000000", "f90200"),  # 2^-15
    ("3f00080000000000", "f90201"),  # 513 * 2^-24
    ("3f0ff80000000000", "f903ff"),  # 1023 * 2^-24, the largest binary16 subnormal
    ("3f0ffc0000000000", "fa387fe000"),  # 1023.5 * 2^-24
    ("3f10000000000000", "f90400"),  # 2^-14, the smallest binary16 normal
    ("be70000000000000", "f98001"),  # -2^-24
    ("bf0ff80000000000", "f983ff"),  # -1023 * 2^-24
    ("3ff0040000000000", "f93c01"),  # 1 + 2^-10
    ("3ff0020000000000", "fa3f801000"),  # 1 + 2^-11
    ("40e0000000000000", "f97800"),  # 2^15
    ("c0e0000000000000", "f9f800"),  # -2^15
    ("40effc2000000000", "fa477fe100"),  # 65505
    ("40effe0000000000", "fa477ff000"),  # 65520, which rounds to binary16 infinity
    ("40f0000000000000", "fa47800000"),  # 2^16
    ("36a0000000000000", "fa00000001"),  # 2^-149, the smallest binary32 subnormal
    ("3690000000000000", "fb3690000000000000"),  # 2^-150
    ("380fffffc0000000", "fa007fffff"),  # the largest binary32 subnormal
    ("3810000000000000", "fa00800000"),  # 2^-126, the smallest binary32 normal
    ("3ff0000020000000", "fa3f800001"),  # 1 + 2^-23
    ("3ff0000010000000", "fb3ff0000010000000"),  # 1 + 2^-24
    ("47efffffe0000001", "fb47efffffe0000001"),  # just above the largest binary32
    ("47f0000000000000", "fb47f0000000000000"),  # 2^128
    ("0000000000000001", "fb0000000000000001"),  # the smallest binary64 subnormal
    ("7fefffffffffffff", "fb7fefffffffffffff"),  # the largest binary64
]

# Valid but not canonical: the decoder accepts them; the encoder never produces them.
CBOR_DECODE_ONLY: list[tuple[Any, str]] = [
    (0, "1800"),
    (1, "190001"),
    (10, "1b000000000000000a"),
    (1.5, "fa3fc00000"),
    (1.5, "fb3ff8000000000000"),
    (math.inf, "fa7f800000"),
    (math.inf, "fb7ff0000000000000"),
    (math.nan, "fa7fc00000"),
    ({3: 4, 1: 2}, "a203040102"),
]

CBOR_INVALID: list[tuple[str, str]] = [
    ("", "empty input"),
    ("18", "truncated 1-byte integer"),
    ("1900", "truncated 2-byte integer"),
    ("1b00000000000000", "truncated 8-byte integer"),
    ("1c", "reserved additional info 28"),
    ("5f", "indefinite byte string"),
    ("9f01ff", "indefinite array"),
    ("bfff", "indefinite map"),
    ("6261", "truncated text string"),
    ("44010203", "truncated byte string"),
    ("5bffffffffffffffff00", "byte string longer than the input"),
    ("9affffffff00", "array count larger than the input"),
    ("baffffffff00", "map count larger than the input"),
    ("8301", "array missing items"),
    ("a201020100", "map missing a value"),
    ("a2010201030400", "trailing bytes after a map"),
    ("a201020103", "duplicate map key"),
    ("a1800000", "array as map key"),
    ("a1f90000", "float as map key"),
    ("62c328", "invalid UTF-8"),
    ("0000", "trailing bytes"),
    ("f7", "undefined"),
    ("f820", "one-byte simple value"),
    ("fc", "reserved simple value"),
    ("f9", "truncated half float"),
    ("fa0000", "truncated float"),
    ("c1", "tag without a value"),
    ("81" * 20 + "00", "nesting deeper than 16"),
    ("a1" * 17 + "00", "maps nested deeper than 16"),
]


def cbor_vectors() -> dict[str, Any]:
    valid = []
    for value, hx in CBOR_CANONICAL:
        oracle = cbor2.dumps(value, canonical=True).hex()
        if oracle != hx:
            raise SystemExit(f"cbor2 disagrees for {value!r}: {oracle} != {hx}")
        valid.append({"value": to_json(value), "hex": hx, "canonical": True})
    for bits, hx in CBOR_FLOAT_EDGES:
        value = struct.unpack(">d", bytes.fromhex(bits))[0]
        oracle = cbor2.dumps(value, canonical=True).hex()
        if oracle != hx:
            raise SystemExit(f"cbor2 disagrees for the double {bits}: {oracle} != {hx}")
        valid.append({"value": {"$f64": bits}, "hex": hx, "canonical": True})
    for value, hx in CBOR_DECODE_ONLY:
        decoded = cbor2.loads(bytes.fromhex(hx))
        if not (decoded == value or (isinstance(value, float) and math.isnan(value))):
            raise SystemExit(f"cbor2 decodes {hx} as {decoded!r}, not {value!r}")
        valid.append({"value": to_json(value), "hex": hx, "canonical": False})
    invalid = [{"hex": hx, "why": why} for hx, why in CBOR_INVALID]
    return {
        "about": "RFC 8949 Appendix A subset and edge cases; canonical = cbor2 canonical=True",
        "valid": valid,
        "invalid": invalid,
    }


def hmac_256_64(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()[:8]


# RFC 8032 section 7.1, test 1: a well-known Ed25519 key pair for the gateway vectors.
GW_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
GW_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
DEVICE_KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
DEVICE_ID = "AP-0001"
GATEWAY_ID = "GW-TEST"
AAD_FRAME, AAD_RECEIPT, AAD_BATCH = b"ge/1/frame", b"ge/1/receipt", b"ge/1/batch"


def _canon(v: Any) -> bytes:
    return cbor2.dumps(v, canonical=True)


def _mac0_raw(key: bytes, protected: bytes, payload: bytes, aad: bytes, tag_number: int = 17) -> bytes:
    tag = hmac_256_64(key, _canon(["MAC0", protected, aad, payload]))
    return _canon(cbor2.CBORTag(tag_number, [protected, {}, payload, tag]))


def cose_vectors() -> dict[str, Any]:
    from tests import oracle

    kid = DEVICE_ID.encode()
    frames = []
    payloads = [
        ("alarm with receipts", {1: 3, 2: 1, 3: 1, 4: 123456, 5: {}, 6: 1}),
        ("alarm held 3 s", {1: 3, 2: 2, 3: 2, 4: 126456, 5: {1: 3000}, 6: 1}),
        ("heartbeat", {1: 3, 2: 3, 3: 128, 4: 183456, 5: {1: 183, 2: 0}}),
        ("large counters", {1: 4294967295, 2: 4294967295, 3: 255, 4: 2**40, 5: {1: 2**32}}),
    ]
    for name, payload in payloads:
        blob = _canon(payload)
        msg = oracle.mac0(DEVICE_KEY, kid, blob, AAD_FRAME)
        if msg != _mac0_raw(DEVICE_KEY, _canon({1: 4, 4: kid}), blob, AAD_FRAME):
            raise SystemExit(f"pycose and the hand-built frame differ for {name}")
        if not oracle.verify_mac0(DEVICE_KEY, msg, AAD_FRAME):
            raise SystemExit(f"pycose does not verify {name}")
        frames.append({"name": name, "payload": to_json(payload), "hex": msg.hex()})

    receipts = []
    for boot, seq, kind in ((3, 1, 1), (3, 1, 2), (3, 1, 3), (7, 65536, 2)):
        blob = _canon({1: boot, 2: seq, 3: kind})
        msg = oracle.mac0(DEVICE_KEY, GATEWAY_ID.encode(), blob, AAD_RECEIPT)
        receipts.append({"boot": boot, "seq": seq, "kind": kind, "hex": msg.hex()})

    good = bytes.fromhex(frames[0]["hex"])
    good_payload = _canon(payloads[0][1])
    prot = _canon({1: 4, 4: kid})

    def flip(blob: bytes, i: int) -> str:
        b = bytearray(blob)
        b[i] ^= 0x01
        return b.hex()

    bad = [
        {"why": "payload byte flipped", "hex": flip(good, len(good) - 12)},
        {"why": "tag byte flipped", "hex": flip(good, len(good) - 1)},
        {"why": "kid byte flipped", "hex": flip(good, 9)},
        {
            "why": "MAC under another key",
            "hex": _mac0_raw(OTHER_KEY, prot, good_payload, AAD_FRAME).hex(),
        },
        {
            "why": "receipt AAD (a receipt replayed as a frame)",
            "hex": _mac0_raw(DEVICE_KEY, prot, good_payload, AAD_RECEIPT).hex(),
        },
        {"why": "untagged", "hex": _canon([prot, {}, good_payload, good[-8:]]).hex()},
        {
            "why": "tag 18 instead of 17",
            "hex": _mac0_raw(DEVICE_KEY, prot, good_payload, AAD_FRAME, 18).hex(),
        },
        {
            "why": "alg 5 (HMAC 256/256)",
            "hex": _mac0_raw(DEVICE_KEY, _canon({1: 5, 4: kid}), good_payload, AAD_FRAME).hex(),
        },
        {
            "why": "no kid",
            "profile_only": True,
            "hex": _mac0_raw(DEVICE_KEY, _canon({1: 4}), good_payload, AAD_FRAME).hex(),
        },
        {"why": "truncated", "hex": good[:-3].hex()},
        {"why": "trailing byte", "profile_only": True, "hex": (good + b"\x00").hex()},
        {
            "why": "short tag",
            "hex": _canon(cbor2.CBORTag(17, [prot, {}, good_payload, good[-8:-2]])).hex(),
        },
        {"why": "empty", "hex": ""},
    ]

    # Valid COSE with a correct MAC that the profile (docs/protocol.md §1) refuses: other header
    # parameters, an unknown crit, a float alg, a non-canonical envelope. Receivers must refuse
    # them on structure alone.
    def mac0_with(protected: Any, unprotected: Any) -> str:
        prot_bytes = _canon(protected)
        tag = hmac_256_64(DEVICE_KEY, _canon(["MAC0", prot_bytes, AAD_FRAME, good_payload]))
        return _canon(cbor2.CBORTag(17, [prot_bytes, unprotected, good_payload, tag])).hex()

    def long_heads(msg: bytes) -> str:
        # the same parts, the payload's length in a 1-byte head instead of in its first byte
        obj = cbor2.loads(msg)
        prot_b, _, pay, tag = obj.value
        return (b"\xd1\x84" + cbor2.dumps(prot_b) + b"\xa0\x58" + bytes((len(pay),)) + pay + cbor2.dumps(tag)).hex()

    bad += [
        {
            "why": "unknown crit in the protected header",
            "profile_only": True,
            "hex": mac0_with({1: 4, 2: [99], 4: kid, 99: 0}, {}),
        },
        {"why": "crit naming alg", "profile_only": True, "hex": mac0_with({1: 4, 2: [1], 4: kid}, {})},
        {
            "why": "another protected parameter (content type)",
            "profile_only": True,
            "hex": mac0_with({1: 4, 3: 0, 4: kid}, {}),
        },
        {
            "why": "a text label in the protected header",
            "profile_only": True,
            "hex": mac0_with({1: 4, 4: kid, "x": 1}, {}),
        },
        {"why": "alg 4.0, a float", "profile_only": True, "hex": mac0_with({1: 4.0, 4: kid}, {})},
        {"why": "alg only in the unprotected header", "profile_only": True, "hex": mac0_with({4: kid}, {1: 4})},
        {
            "why": "kid repeated in the unprotected header",
            "profile_only": True,
            "hex": mac0_with({1: 4, 4: kid}, {4: kid}),
        },
        {"why": "crit in the unprotected header", "profile_only": True, "hex": mac0_with({1: 4, 4: kid}, {2: [4]})},
        {"why": "payload length in a longer head than needed", "profile_only": True, "hex": long_heads(good)},
    ]
    for entry in bad:
        if entry.get("profile_only"):
            # valid COSE that our profile refuses (docs/protocol.md): pycose may accept it
            continue
        try:
            ok = oracle.verify_mac0(DEVICE_KEY, bytes.fromhex(entry["hex"]), AAD_FRAME)
        except Exception:
            ok = False
        if ok:
            raise SystemExit(f"pycose accepts the bad frame: {entry['why']}")

    return {
        "about": "COSE_Mac0 HMAC 256/64 device frames and receipts; built and checked with pycose",
        "key": DEVICE_KEY.hex(),
        "other_key": OTHER_KEY.hex(),
        "device_id": DEVICE_ID,
        "gateway_id": GATEWAY_ID,
        "aad_frame": AAD_FRAME.decode(),
        "aad_receipt": AAD_RECEIPT.decode(),
        "frames": frames,
        "receipts": receipts,
        "bad_frames": bad,
    }


def batch_vectors() -> dict[str, Any]:
    import hashlib as _hashlib

    from tests import oracle

    frames = cose_vectors()["frames"]
    events = []
    for i, f in enumerate(frames[:3]):
        frame = cbor2.loads(bytes.fromhex(f["hex"]))
        payload = cbor2.loads(frame.value[2])
        tag = frame.value[3]
        typ = payload[3]
        prio = 0 if typ < 64 else 1 if typ < 128 else 2
        ev = {
            1: DEVICE_ID,
            2: payload[1],
            3: payload[2],
            4: typ,
            5: prio,
            6: payload[4],
            7: 1700000000100 + i,
            8: dict(payload[5]),
            9: tag,
        }
        if payload.get(6):
            ev[10] = payload[6]
        events.append(ev)
    batches = []
    prev = bytes(32)
    for seq, evs in ((1, events[:2]), (2, events[2:])):
        body = {1: GATEWAY_ID, 2: 1700000000, 3: seq, 4: prev, 5: evs, 6: 1700000000200 + seq}
        payload = _canon(body)
        msg = oracle.sign1(GW_SEED, GW_PUB, GATEWAY_ID.encode(), payload, AAD_BATCH)
        if not oracle.verify_sign1(GW_PUB, msg, AAD_BATCH):
            raise SystemExit("pycose does not verify its own batch")
        batches.append(
            {
                "seq": seq,
                "payload": to_json(body),
                "hex": msg.hex(),
                "sha256": _hashlib.sha256(msg).hexdigest(),
            }
        )
        prev = _hashlib.sha256(msg).digest()
    return {
        "about": "COSE_Sign1 EdDSA gateway batches chained by SHA-256; key: RFC 8032 test 1",
        "seed": GW_SEED.hex(),
        "public": GW_PUB.hex(),
        "gateway_id": GATEWAY_ID,
        "aad_batch": AAD_BATCH.decode(),
        "device_key": DEVICE_KEY.hex(),
        "batches": batches,
    }


# RFC 8032 section 7.1, test 2: central's command key in the vectors.
CENTRAL_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
CENTRAL_PUB = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
CENTRAL_KID = "central"
AAD_COMMAND = b"ge/1/command"
COMMAND_NOW = 1700000100  # the gateway's clock for the bad vectors


def command_vectors() -> dict[str, Any]:
    from tests import oracle

    def payload(seq: int, op: int, args: dict[int, Any], gw: str = GATEWAY_ID, issued: int = 1700000000) -> bytes:
        return _canon({1: gw, 2: seq, 3: issued, 4: issued + 300, 5: op, 6: args})

    def signed(body: bytes, kid: str = CENTRAL_KID, seed: bytes = CENTRAL_SEED, pub: bytes = CENTRAL_PUB) -> bytes:
        return oracle.sign1(seed, pub, kid.encode(), body, AAD_COMMAND)

    good = [
        ("ack", 1, {1: DEVICE_ID, 2: 3, 3: 2, 4: "help is coming"}),
        ("revoke", 2, {1: "AP-0002"}),
        ("config", 3, {1: 50, 2: 500, 3: "debug"}),
    ]
    commands = []
    for seq, (name, op, args) in enumerate(good, 1):
        body = payload(seq, op, args)
        msg = signed(body)
        if not oracle.verify_sign1(CENTRAL_PUB, msg, AAD_COMMAND):
            raise SystemExit(f"pycose does not verify its own {name} command")
        commands.append({"name": name, "payload": to_json(cbor2.loads(body)), "hex": msg.hex()})

    ack = payload(1, 1, {1: DEVICE_ID, 2: 3, 3: 2})
    bad: list[dict[str, Any]] = []

    def add(why: str, msg: bytes, reason: str, last_seq: int = 0) -> None:
        bad.append({"why": why, "hex": msg.hex(), "reason": reason, "now": COMMAND_NOW, "last_seq": last_seq})

    add("replayed: seq not above the last accepted", signed(ack), "replay", last_seq=1)
    add("signed by another key under central's kid", signed(ack, seed=GW_SEED, pub=GW_PUB), "bad_signature")
    add("unknown kid", signed(ack, kid="central-2"), "unknown_kid")
    add(
        "batch external_aad (a batch signature replayed as a command)",
        oracle.sign1(CENTRAL_SEED, CENTRAL_PUB, CENTRAL_KID.encode(), ack, AAD_BATCH),
        "bad_signature",
    )
    add("for another gateway", signed(payload(1, 1, {1: DEVICE_ID, 2: 3, 3: 2}, gw="GW-OTHER")), "wrong_gateway")
    add("expired", signed(payload(1, 1, {1: DEVICE_ID, 2: 3, 3: 2}, issued=1699999000)), "expired")
    add(
        "unsigned: a COSE_Mac0 under a guessed key",
        _mac0_raw(bytes(32), _canon({1: 4, 4: CENTRAL_KID.encode()}), ack, AAD_COMMAND),
        "malformed",
    )
    add("signature cut short", signed(ack)[:-1], "malformed")
    add("trailing byte", signed(ack) + b"\x00", "malformed")
    add("seq 0", signed(payload(0, 1, {1: DEVICE_ID, 2: 3, 3: 2})), "malformed")
    shuffled = cbor2.dumps({2: 1, 1: GATEWAY_ID, 3: 1700000000, 4: 1700000300, 5: 1, 6: {1: DEVICE_ID, 2: 3, 3: 2}})
    add("payload not canonical (keys out of order)", signed(shuffled), "malformed")
    add(
        "lifetime over 24 h",
        signed(_canon({1: GATEWAY_ID, 2: 1, 3: 1700000000, 4: 1700086401, 5: 1, 6: {1: DEVICE_ID, 2: 3, 3: 2}})),
        "malformed",
    )
    add("unknown op", signed(payload(1, 9, {})), "unknown_op")
    add("ack without seq", signed(payload(1, 1, {1: DEVICE_ID, 2: 3})), "bad_args")
    add("config: unknown setting", signed(payload(1, 3, {9: 1})), "bad_args")
    add("config: linger_ms out of range", signed(payload(1, 3, {1: 10001})), "bad_args")
    add("config: unknown log level", signed(payload(1, 3, {3: "loud"})), "bad_args")
    for entry in bad:
        if entry["reason"] in ("bad_signature", "unknown_kid"):
            try:
                ok = oracle.verify_sign1(CENTRAL_PUB, bytes.fromhex(entry["hex"]), AAD_COMMAND)
            except Exception:
                ok = False
            if ok and entry["reason"] == "bad_signature":
                raise SystemExit(f"pycose accepts the bad command: {entry['why']}")
    return {
        "about": "COSE_Sign1 EdDSA commands from central; key: RFC 8032 test 2; built and checked with pycose",
        "seed": CENTRAL_SEED.hex(),
        "public": CENTRAL_PUB.hex(),
        "kid": CENTRAL_KID,
        "gateway_id": GATEWAY_ID,
        "aad_command": AAD_COMMAND.decode(),
        "device_key": DEVICE_KEY.hex(),
        "commands": commands,
        "bad_commands": bad,
    }


SERIAL_MAX_PAYLOAD = 512
SERIAL_MAX_ENCODED = 519  # 512 + 4 (CRC) + 1 + (512 + 4) // 254: COBS overhead at most


def _serial_frame(payload: bytes, crc: int | None = None) -> bytes:
    """COBS(payload || CRC-32 little-endian) 0x00, with the `cobs` package and zlib."""
    from cobs import cobs

    value = zlib.crc32(payload) if crc is None else crc
    return bytes(cobs.encode(payload + value.to_bytes(4, "little"))) + b"\x00"


def _serial_unframe(body: bytes) -> tuple[bytes | None, str | None]:
    """The receiver's rules (docs/protocol.md §9) on the bytes between two delimiters."""
    from cobs import cobs

    if len(body) > SERIAL_MAX_ENCODED:
        return None, "oversize"
    try:
        raw = bytes(cobs.decode(body))
    except cobs.DecodeError:
        return None, "cobs"
    if len(raw) < 5:
        return None, "short"
    payload = raw[:-4]
    if len(payload) > SERIAL_MAX_PAYLOAD:
        return None, "oversize"
    if zlib.crc32(payload) != int.from_bytes(raw[-4:], "little"):
        return None, "crc"
    return payload, None


# Plain COBS, pinned: the examples of Cheshire & Baker's paper as Wikipedia lists them, and
# the edges of a 254-byte run. Each is checked against the `cobs` package below.
_RUN = bytes(range(1, 255))  # 01 02 .. fe: 254 non-zero bytes
COBS_CASES: list[tuple[str, bytes, bytes]] = [
    ("empty", b"", b"\x01"),
    ("one zero", b"\x00", b"\x01\x01"),
    ("two zeros", b"\x00\x00", b"\x01\x01\x01"),
    ("zero, data, zero", b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    ("zero inside", b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    ("no zero", b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    ("trailing zeros", b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    ("254 non-zero bytes", _RUN, b"\xff" + _RUN),
    ("zero then 254 non-zero", b"\x00" + _RUN, b"\x01\xff" + _RUN),
    ("255 non-zero bytes", _RUN + b"\xff", b"\xff" + _RUN + b"\x02\xff"),
    ("254 non-zero then zero", _RUN[1:] + b"\xff\x00", b"\xff" + _RUN[1:] + b"\xff\x01\x01"),
    ("253 non-zero, zero, one", _RUN[2:] + b"\xff\x00\x01", b"\xfe" + _RUN[2:] + b"\xff\x02\x01"),
]
CRC32_CASES: list[tuple[str, bytes, int]] = [
    ("empty", b"", 0x00000000),
    ("check value", b"123456789", 0xCBF43926),
    ("32 zero bytes", bytes(32), 0x190A55AD),
    ("fox", b"The quick brown fox jumps over the lazy dog", 0x414FA339),
]


def serial_vectors() -> dict[str, Any]:
    import binascii

    from cobs import cobs

    cobs_out = []
    for name, data, enc in COBS_CASES:
        if bytes(cobs.encode(data)) != enc or bytes(cobs.decode(enc)) != data:
            raise SystemExit(f"the cobs package disagrees on {name}")
        cobs_out.append({"name": name, "data": data.hex(), "encoded": enc.hex()})
    crc_out = []
    for name, data, crc in CRC32_CASES:
        if zlib.crc32(data) != crc or binascii.crc32(data) != crc:
            raise SystemExit(f"zlib disagrees on the CRC-32 of {name}")
        crc_out.append({"name": name, "data": data.hex(), "crc32": crc})

    cose = cose_vectors()
    frame0 = bytes.fromhex(cose["frames"][0]["hex"])
    receipt0 = bytes.fromhex(cose["receipts"][0]["hex"])
    no_zero = bytes((i % 255) + 1 for i in range(SERIAL_MAX_PAYLOAD))
    payloads = [
        ("device frame (cose.json frames[0])", frame0),
        ("receipt (cose.json receipts[0])", receipt0),
        ("one zero byte", b"\x00"),
        ("largest payload, no zero byte", no_zero),
        ("largest payload, all zero", bytes(SERIAL_MAX_PAYLOAD)),
    ]
    frames = []
    for name, payload in payloads:
        wire = _serial_frame(payload)
        if b"\x00" in wire[:-1] or _serial_unframe(wire[:-1]) != (payload, None):
            raise SystemExit(f"serial frame {name} does not round-trip")
        frames.append({"name": name, "payload": payload.hex(), "frame": wire.hex()})
    if max(len(f["frame"]) // 2 - 1 for f in frames) > SERIAL_MAX_ENCODED:
        raise SystemExit("a frame is longer than SERIAL_MAX_ENCODED")

    good = _serial_frame(frame0)[:-1]
    bad: list[tuple[str, bytes, str]] = [
        ("CRC of another payload", _serial_frame(frame0, zlib.crc32(frame0) ^ 1)[:-1], "crc"),
        ("a payload byte changed", good[:5] + bytes([good[5] ^ 0x40 or 1]) + good[6:], "crc"),
        ("last byte lost", good[:-1], "cobs"),
        ("code byte runs past the end", b"\x05\x11\x22", "cobs"),
        ("254-byte run cut short", b"\xff\x01\x02\x03", "cobs"),
        ("three bytes: no room for a CRC", bytes(cobs.encode(b"\x01\x02\x03")), "short"),
        ("empty payload with the CRC of nothing", bytes(cobs.encode(bytes(4))), "short"),
        ("520 bytes between delimiters", b"\x01" * (SERIAL_MAX_ENCODED + 1), "oversize"),
        ("513-byte payload", _serial_frame(bytes(SERIAL_MAX_PAYLOAD + 1))[:-1], "oversize"),
    ]
    bad_out = []
    for name, body, reason in bad:
        if b"\x00" in body or _serial_unframe(body) != (None, reason):
            raise SystemExit(f"bad serial frame {name}: not rejected as {reason}")
        bad_out.append({"name": name, "body": body.hex(), "reason": reason})

    # A stream as a receiver sees it right after opening the port: the tail of a frame it
    # missed, frames (each sent as 00 frame), garbage between them, a run that never ends.
    stream = (
        b"\x17\x42"  # partial: before the first delimiter
        + b"\x00"
        + _serial_frame(frame0)
        + b"\xff\x01\x02\x03"  # garbage (bad COBS), ended by the next frame's leading 0x00
        + b"\x00"
        + _serial_frame(receipt0)
        + b"\x00\x00\x00"  # idle: empty frames
        + b"\x01" * 600  # oversize
        + b"\x00"
        + _serial_frame(frame0[:-1] + b"\x00", zlib.crc32(frame0))  # crc
        + b"\x00"
        + _serial_frame(b"\x00")
        + b"\x05\x11"  # the start of a frame still open at the end
    )
    got, rejected = [], dict.fromkeys(("partial", "oversize", "cobs", "crc", "short"), 0)
    parts = stream.split(b"\x00")
    rejected["partial"] += 1 if parts[0] else 0
    for body in parts[1:-1]:
        if body:
            payload, reason = _serial_unframe(body)
            if reason is None:
                got.append(payload)
            else:
                rejected[str(reason)] += 1
    want = {"partial": 1, "oversize": 1, "cobs": 1, "crc": 1, "short": 0}
    if got != [frame0, receipt0, b"\x00"] or rejected != want:
        raise SystemExit(f"stream vector: got {got} {rejected}")
    return {
        "about": "serial link framing (docs/protocol.md §9): COBS (the cobs package) of payload || CRC-32 "
        "(zlib, little-endian), then 0x00",
        "max_payload": SERIAL_MAX_PAYLOAD,
        "max_encoded": SERIAL_MAX_ENCODED,
        "cobs": cobs_out,
        "crc32": crc_out,
        "frames": frames,
        "bad": bad_out,
        "stream": {
            "hex": stream.hex(),
            "payloads": [p.hex() for p in got],
            "rejected": rejected,
            "pending": 2,
        },
    }


GENERATORS = {
    "cbor.json": cbor_vectors,
    "cose.json": cose_vectors,
    "batch.json": batch_vectors,
    "command.json": command_vectors,
    "serial.json": serial_vectors,
    "wristband.json": wristband_vectors,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    status = 0
    for name, gen in GENERATORS.items():
        text = json.dumps(gen(), indent=1, ensure_ascii=False) + "\n"
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print(f"{path}: differs from what the generator produces", file=sys.stderr)
                status = 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
