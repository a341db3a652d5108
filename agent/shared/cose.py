"""COSE_Mac0 (HMAC 256/64) and COSE_Sign1 (EdDSA) for the agent, on cbor2 and cryptography.

The layouts are fixed by docs/protocol.md; the encoders build the canonical bytes directly
(the structures are small and fixed) so the hot path does no generic encoding. pycose is
the interop oracle in the tests.
"""

from __future__ import annotations

import hmac
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.shared.errors import WireError

TAG_MAC0 = 17
TAG_SIGN1 = 18
ALG_HMAC_256_64 = 4
ALG_EDDSA = -8
MAC_LEN = 8
SIG_LEN = 64
# cbor2 is told not to build anything expensive from untrusted input.
_LOADS_LIMITS: dict[str, Any] = {"max_depth": 16, "allow_indefinite": False, "allow_duplicate_keys": False}


def head(major: int, n: int) -> bytes:
    """The canonical CBOR head for major type `major` and argument `n`."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    return bytes((mt | 27,)) + n.to_bytes(8, "big")


def bstr(b: bytes) -> bytes:
    return head(2, len(b)) + b


def loads(data: bytes) -> Any:
    """cbor2.loads with the limits every untrusted input gets."""
    return cbor2.loads(data, **_LOADS_LIMITS)


def protected_header(alg: int, kid: bytes) -> bytes:
    """Canonical `{1: alg, 4: kid}`."""
    return b"\xa2\x01" + cbor2.dumps(alg) + b"\x04" + bstr(kid)


_MAC0_CONTEXT = b"\x84\x64MAC0"
_SIGN1_CONTEXT = b"\x84\x6aSignature1"


def mac_structure(protected: bytes, aad: bytes, payload: bytes) -> bytes:
    return _MAC0_CONTEXT + bstr(protected) + bstr(aad) + bstr(payload)


def mac0_tag(key: bytes, protected: bytes, aad: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, mac_structure(protected, aad, payload), "sha256")[:MAC_LEN]


def mac0_encode(key: bytes, kid: bytes, payload: bytes, aad: bytes) -> bytes:
    protected = protected_header(ALG_HMAC_256_64, kid)
    tag = mac0_tag(key, protected, aad, payload)
    return b"\xd1\x84" + bstr(protected) + b"\xa0" + bstr(payload) + bstr(tag)


class Mac0:
    """A parsed COSE_Mac0 of the profile: structure checked, MAC not yet verified."""

    __slots__ = ("kid", "payload", "protected", "tag")

    def __init__(self, kid: bytes, protected: bytes, payload: bytes, tag: bytes) -> None:
        self.kid = kid
        self.protected = protected
        self.payload = payload
        self.tag = tag

    def verify(self, key: bytes, aad: bytes) -> bool:
        return hmac.compare_digest(mac0_tag(key, self.protected, aad, self.payload), self.tag)


def _header(protected: bytes, want_alg: int, what: str) -> bytes:
    try:
        hdr = loads(protected)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise WireError("malformed", f"{what} protected header is not CBOR: {exc}") from exc
    # type() and not ==: a float 4.0 (f9 4400) equals 4 in Python but is not a COSE alg
    if not isinstance(hdr, dict) or type(hdr.get(1)) is not int or hdr.get(1) != want_alg or len(hdr) != 2:
        raise WireError("malformed", f"{what} protected header must be {{1: {want_alg}, 4: kid}}")
    kid = hdr.get(4)
    if not isinstance(kid, bytes) or not kid:
        raise WireError("malformed", f"{what} protected header has no kid")
    return kid


def _parts(data: bytes, tag_number: int, what: str) -> tuple[bytes, bytes, bytes]:
    try:
        obj = loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise WireError("malformed", f"{what} is not CBOR: {exc}") from exc
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != tag_number:
        raise WireError("malformed", f"{what} must be CBOR tag {tag_number}")
    parts = obj.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise WireError("malformed", f"{what} must be an array of 4")
    protected, unprotected, payload, last = parts
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise WireError("malformed", f"{what} protected header and payload must be byte strings")
    if not hasattr(unprotected, "keys") or len(unprotected) != 0:
        raise WireError("malformed", f"{what} unprotected header must be the empty map")
    if not isinstance(last, bytes):
        raise WireError("malformed", f"{what} tag/signature must be a byte string")
    # cbor2 ignores bytes after the first item; requiring the canonical envelope (its length
    # follows from the parts) rejects trailing bytes and odd encodings in one comparison.
    canonical_len = 3 + len(bstr(protected)) + len(bstr(payload)) + len(bstr(last))
    if len(data) != canonical_len:
        raise WireError("malformed", f"{what} is not canonically encoded or has trailing bytes")
    return protected, payload, last


def mac0_parse(data: bytes) -> Mac0:
    protected, payload, tag = _parts(data, TAG_MAC0, "COSE_Mac0")
    if len(tag) != MAC_LEN:
        raise WireError("malformed", f"COSE_Mac0 tag must be {MAC_LEN} bytes, got {len(tag)}")
    kid = _header(protected, ALG_HMAC_256_64, "COSE_Mac0")
    return Mac0(kid, protected, payload, tag)


def sig_structure(protected: bytes, aad: bytes, payload: bytes) -> bytes:
    return _SIGN1_CONTEXT + bstr(protected) + bstr(aad) + bstr(payload)


def sign1_encode(key: Ed25519PrivateKey, protected: bytes, payload: bytes, aad: bytes) -> bytes:
    """COSE_Sign1 with a precomputed protected header (see protected_header)."""
    sig = key.sign(sig_structure(protected, aad, payload))
    return b"\xd2\x84" + bstr(protected) + b"\xa0" + bstr(payload) + bstr(sig)


def sign1_verify(data: bytes, keys: dict[bytes, Ed25519PublicKey], aad: bytes) -> tuple[bytes, bytes]:
    """Returns (kid, payload) of a COSE_Sign1 whose signature verifies under keys[kid].

    Raises WireError("malformed" | "unknown_signer" | "bad_signature", ...).
    """
    protected, payload, sig = _parts(data, TAG_SIGN1, "COSE_Sign1")
    if len(sig) != SIG_LEN:
        raise WireError("malformed", f"COSE_Sign1 signature must be {SIG_LEN} bytes")
    kid = _header(protected, ALG_EDDSA, "COSE_Sign1")
    key = keys.get(kid)
    if key is None:
        raise WireError("unknown_signer", f"no public key for kid {kid!r}")
    try:
        key.verify(sig, sig_structure(protected, aad, payload))
    except InvalidSignature as exc:
        raise WireError("bad_signature", f"signature of {kid!r} does not verify") from exc
    return kid, payload
