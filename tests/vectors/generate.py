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
import sys
from pathlib import Path
from typing import Any

import cbor2

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


GENERATORS = {"cbor.json": cbor_vectors, "cose.json": cose_vectors, "batch.json": batch_vectors}


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
