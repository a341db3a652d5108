"""The firmware's COSE_Mac0 (firmware/lib/cose.py) against pycose, and against the gateway.

pycose builds and checks the messages. The firmware must take exactly what the profile
allows (docs/protocol.md §1) and what the gateway's agent/cose.py takes: valid COSE with other
header parameters, a crit, or a non-canonical envelope is refused by both, on structure alone
(the MAC is correct). tests/firmware/fw_cose.py runs the vectors on MicroPython too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import HMAC256, HMAC25664
from pycose.headers import IV, KID, Algorithm, ContentType, Critical
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

from agent.shared import cose as agent_cose
from agent.shared.errors import WireError
from hil_tests.sim.tools import FIRMWARE_DIR
from tests import oracle

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import cose as fwcose

KEY = bytes(range(32))
AAD = b"ge/1/frame"
KID_BYTES = b"AP-0001"


def _pycose(phdr: dict[Any, Any], uhdr: dict[Any, Any], payload: bytes = b"\xa0") -> bytes:
    msg = Mac0Message(phdr=phdr, uhdr=uhdr, payload=payload, external_aad=AAD)
    msg.key = SymmetricKey(k=KEY)
    return bytes(msg.encode())


def _firmware_takes(msg: bytes) -> bool:
    try:
        fwcose.mac0_verify(KEY, msg, AAD)
    except fwcose.COSEError:
        return False
    return True


def _agent_takes(msg: bytes) -> bool:
    try:
        parsed = agent_cose.mac0_parse(msg)
    except WireError as exc:
        assert exc.reason == "malformed"
        return False
    return parsed.verify(KEY, AAD)


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),  # pycose's sizes
    kid=st.binary(min_size=1, max_size=40),
    payload=st.binary(max_size=600),
    aad=st.binary(max_size=20),
)
def test_firmware_and_pycose_agree(key: bytes, kid: bytes, payload: bytes, aad: bytes) -> None:
    built = fwcose.mac0_encode(key, kid, payload, aad)
    assert built == oracle.mac0(key, kid, payload, aad)
    assert oracle.verify_mac0(key, built, aad)
    assert fwcose.mac0_verify(key, built, aad) == (kid, payload)


HEADERS = [
    # (why, protected, unprotected, accepted by the profile)
    ("the profile", {Algorithm: HMAC25664, KID: KID_BYTES}, {}, True),
    ("kid first", {KID: KID_BYTES, Algorithm: HMAC25664}, {}, True),
    ("unknown crit", {Algorithm: HMAC25664, KID: KID_BYTES, Critical: [99], 99: 1}, {}, False),
    ("crit naming kid", {Algorithm: HMAC25664, KID: KID_BYTES, Critical: [4]}, {}, False),
    ("content type", {Algorithm: HMAC25664, KID: KID_BYTES, ContentType: 60}, {}, False),
    ("IV unprotected", {Algorithm: HMAC25664, KID: KID_BYTES}, {IV: bytes(12)}, False),
    ("kid unprotected", {Algorithm: HMAC25664}, {KID: KID_BYTES}, False),
    ("alg unprotected", {KID: KID_BYTES}, {Algorithm: HMAC25664}, False),
    ("no kid", {Algorithm: HMAC25664}, {}, False),
    ("other alg", {Algorithm: HMAC256, KID: KID_BYTES}, {}, False),
]


@pytest.mark.parametrize(("why", "phdr", "uhdr", "ok"), HEADERS, ids=[h[0] for h in HEADERS])
def test_header_profile_same_as_the_gateway(why: str, phdr: dict[Any, Any], uhdr: dict[Any, Any], ok: bool) -> None:
    msg = _pycose(phdr, uhdr)
    if why != "other alg":
        assert oracle.verify_mac0(KEY, msg, AAD), "pycose does not verify its own message"
    assert _firmware_takes(msg) is ok, why
    assert _agent_takes(msg) is ok, why


def test_cose_vectors_same_as_the_gateway() -> None:
    vectors = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "cose.json").read_text())
    for vec in vectors["frames"]:
        assert _firmware_takes(bytes.fromhex(vec["hex"]))
        assert _agent_takes(bytes.fromhex(vec["hex"]))
    for vec in vectors["bad_frames"]:
        msg = bytes.fromhex(vec["hex"])
        assert not _firmware_takes(msg), vec["why"]
        assert not _agent_takes(msg), vec["why"]
        if vec.get("profile_only"):
            # refused for its structure alone: the MAC is right
            body = cbor2.loads(msg).value
            assert agent_cose.mac0_tag(KEY, body[0], AAD, body[2]) == body[3], vec["why"]
