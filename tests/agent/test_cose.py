"""Agent COSE against the vectors and pycose, in both directions."""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gateway.signer import Signer
from agent.shared import cose
from agent.shared.errors import WireError
from agent.shared.frames import receipt
from agent.shared.protocol import AAD_BATCH, AAD_FRAME, AAD_RECEIPT, ZERO_HASH
from tests import oracle


def test_mac0_encode_matches_vectors(cose_vectors: Any) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    for vec in cose_vectors["frames"]:
        frame = cbor2.loads(bytes.fromhex(vec["hex"]))
        built = cose.mac0_encode(key, cose_vectors["device_id"].encode(), frame.value[2], AAD_FRAME)
        assert built.hex() == vec["hex"], vec["name"]


def test_vector_frames_parse_and_verify(cose_vectors: Any) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    for vec in cose_vectors["frames"]:
        mac0 = cose.mac0_parse(bytes.fromhex(vec["hex"]))
        assert mac0.kid == b"AP-0001"
        assert mac0.verify(key, AAD_FRAME)
        assert not mac0.verify(bytes.fromhex(cose_vectors["other_key"]), AAD_FRAME)
        assert not mac0.verify(key, AAD_RECEIPT)


def test_bad_frames_are_malformed_or_fail_the_mac(cose_vectors: Any) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    for vec in cose_vectors["bad_frames"]:
        try:
            mac0 = cose.mac0_parse(bytes.fromhex(vec["hex"]))
        except WireError as exc:
            assert exc.reason == "malformed", vec["why"]
            continue
        assert not mac0.verify(key, AAD_FRAME), vec["why"]


def test_receipts_match_vectors(cose_vectors: Any) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    for vec in cose_vectors["receipts"]:
        built = receipt(key, cose_vectors["gateway_id"], vec["boot"], vec["seq"], vec["kind"])
        assert built.hex() == vec["hex"]


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    kid=st.text(alphabet="ABCXYZ0123456789-._", min_size=1, max_size=32),
    payload=st.binary(max_size=300),
)
def test_agent_and_pycose_agree_on_mac0(key: bytes, kid: str, payload: bytes) -> None:
    ours = cose.mac0_encode(key, kid.encode(), payload, AAD_FRAME)
    assert oracle.verify_mac0(key, ours, AAD_FRAME)
    theirs = oracle.mac0(key, kid.encode(), payload, AAD_FRAME)
    assert theirs == ours
    parsed = cose.mac0_parse(theirs)
    assert parsed.verify(key, AAD_FRAME) and parsed.kid == kid.encode()


def test_sealer_reproduces_batch_vectors(batch_vectors: Any, gateway_key: Any) -> None:
    signer = Signer(gateway_key, batch_vectors["gateway_id"], 1700000000, 0, ZERO_HASH)
    for vec in batch_vectors["batches"]:
        body = cbor2.loads(bytes.fromhex(vec["hex"]))
        payload = cbor2.loads(body.value[2])
        blobs = [cbor2.dumps(dict(e), canonical=True) for e in payload[5]]
        prio = min(e[5] for e in payload[5])
        batch = signer.seal(blobs, payload[6], prio)
        assert batch.blob.hex() == vec["hex"]
        assert batch.hash.hex() == vec["sha256"]
        assert batch.seq == vec["seq"]
        assert oracle.verify_sign1(gateway_key.public_key().public_bytes_raw(), batch.blob, AAD_BATCH)


def test_batch_payload_is_canonical_cbor(gateway_key: Any) -> None:
    rng = random.Random(7)
    signer = Signer(gateway_key, "GW-X", 1234567890, 41, bytes(range(32)))
    events = [
        {1: f"D{i}", 2: rng.randrange(2**32), 3: i + 1, 4: 128, 5: 2, 6: i, 7: 5, 8: {}, 9: b"12345678"}
        for i in range(30)
    ]
    blobs = [cbor2.dumps(e, canonical=True) for e in events]
    payload = signer.payload(42, bytes(range(32)), blobs, 2**40)
    assert cbor2.dumps(cbor2.loads(payload), canonical=True) == payload


def test_sign1_verify_rejections(batch_vectors: Any, gateway_key: Any) -> None:
    blob = bytes.fromhex(batch_vectors["batches"][0]["hex"])
    keys = {b"GW-TEST": gateway_key.public_key()}
    assert cose.sign1_verify(blob, keys, AAD_BATCH)[0] == b"GW-TEST"
    flipped = bytearray(blob)
    flipped[40] ^= 1
    with pytest.raises(WireError) as exc:
        cose.sign1_verify(bytes(flipped), keys, AAD_BATCH)
    assert exc.value.reason == "bad_signature"
    with pytest.raises(WireError) as exc:
        cose.sign1_verify(blob, {}, AAD_BATCH)
    assert exc.value.reason == "unknown_signer"
    with pytest.raises(WireError) as exc:
        cose.sign1_verify(blob, keys, AAD_FRAME)
    assert exc.value.reason == "bad_signature"
    with pytest.raises(WireError) as exc:
        cose.sign1_verify(blob + b"\x00", keys, AAD_BATCH)
    assert exc.value.reason == "malformed"
