"""pycose as the COSE oracle in tests.

pycose 1.1.0 decodes with cbor2 and expects the tag's content as a list; cbor2 6 returns the
content of a tag as a tuple with frozendicts (hashable), so CoseMessage.decode refuses every
message. decode() below does the same decoding with the content thawed, then hands it to
pycose's own from_cose_obj; everything cryptographic stays pycose's.
"""

from __future__ import annotations

from typing import Any

import cbor2
from pycose.algorithms import HMAC25664, EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey, SymmetricKey
from pycose.keys.curves import Ed25519
from pycose.messages import CoseMessage, Mac0Message, Sign1Message

__all__ = [
    "HMAC25664",
    "EdDSA",
    "decode",
    "ed25519_key",
    "mac0",
    "sign1",
    "verify_mac0",
    "verify_sign1",
]


def _thaw(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_thaw(x) for x in v]
    if isinstance(v, dict) or type(v).__name__ == "frozendict":
        return {_thaw(k): _thaw(x) for k, x in v.items()}
    return v


def decode(msg: bytes) -> CoseMessage:
    obj = cbor2.loads(msg)
    if not isinstance(obj, cbor2.CBORTag):
        raise TypeError("not a tagged COSE message")
    cls = CoseMessage._COSE_MSG_ID[obj.tag]
    return cls.from_cose_obj(_thaw(obj.value), True)


def mac0(key: bytes, kid: bytes, payload: bytes, aad: bytes) -> bytes:
    msg = Mac0Message(phdr={Algorithm: HMAC25664, KID: kid}, payload=payload, external_aad=aad)
    msg.key = SymmetricKey(k=key)
    return bytes(msg.encode())


def verify_mac0(key: bytes, msg: bytes, aad: bytes) -> bool:
    decoded = decode(msg)
    decoded.key = SymmetricKey(k=key)
    decoded.external_aad = aad
    return bool(decoded.verify_tag())


def ed25519_key(seed: bytes, public: bytes) -> OKPKey:
    return OKPKey(crv=Ed25519, d=seed, x=public)


def sign1(seed: bytes, public: bytes, kid: bytes, payload: bytes, aad: bytes) -> bytes:
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid}, payload=payload, external_aad=aad)
    msg.key = ed25519_key(seed, public)
    return bytes(msg.encode())


def verify_sign1(public: bytes, msg: bytes, aad: bytes) -> bool:
    decoded = decode(msg)
    decoded.key = OKPKey(crv=Ed25519, x=public)
    decoded.external_aad = aad
    return bool(decoded.verify_signature())
