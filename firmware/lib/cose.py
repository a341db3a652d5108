# COSE_Mac0 (RFC 9052 section 6.2) with HMAC 256/64 (COSE alg 4), for device frames and
# the gateway's receipts. Written here because MicroPython has no hmac module and no COSE
# library that installs without mip; HMAC-SHA256 (RFC 2104) is built on hashlib.sha256.
# Proven against pycose and CPython's hmac in tests/firmware/fw_cose.py and the vectors.
#
# Message: tag 17 [protected bstr, unprotected map, payload bstr, tag bstr(8)]
#   protected   = canonical CBOR {1: 4, 4: kid}      (alg, kid; both covered by the MAC)
#   unprotected = {}
#   tag         = first 8 bytes of HMAC-SHA256(key, MAC_structure)
#   MAC_structure = ["MAC0", protected, external_aad, payload]   (canonical CBOR)
# external_aad separates message classes sharing a key (frames vs receipts), see
# docs/protocol.md.
# Parsing takes only this profile, as the gateway does (agent/cose.py): the envelope encoded
# canonically with nothing after it, a protected header of exactly alg (an integer, 4) and a
# non-empty kid, the empty unprotected map. Any other header parameter is refused; so is crit
# (label 2), since a recipient must refuse a message whose critical parameters it does not
# understand (RFC 9052 section 3.1) and this profile understands none.
import hashlib

import cbor
from clock import const

ALG_HMAC_256_64 = const(4)
_TAG_MAC0 = const(17)
_TAG_LEN = const(8)
_BLOCK = const(64)


class COSEError(ValueError):
    pass


class MacKey:
    # An HMAC-SHA256 key with its inner and outer pads computed once.
    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)):
            raise COSEError("MAC key must be bytes")
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = bytes(key) + bytes(_BLOCK - len(key))
        self._ipad = bytes(b ^ 0x36 for b in key)
        self._opad = bytes(b ^ 0x5C for b in key)

    def hmac(self, msg):
        inner = hashlib.sha256(self._ipad)
        inner.update(msg)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()


def hmac_sha256(key, msg):
    return MacKey(key).hmac(msg)


def _equal(a, b):
    # constant-time comparison of two byte strings of the same length
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _tag(key, protected, aad, payload):
    # the tag: HMAC-SHA256 (key: bytes or a MacKey) of the MAC_structure, cut to 8 bytes
    if not isinstance(key, MacKey):
        key = MacKey(key)
    return key.hmac(cbor.dumps(["MAC0", protected, aad, payload]))[:_TAG_LEN]


def mac0_encode(key, kid, payload, aad=b""):
    protected = cbor.dumps({1: ALG_HMAC_256_64, 4: kid})
    tag = _tag(key, protected, aad, payload)
    return cbor.dumps(cbor.Tag(_TAG_MAC0, [protected, {}, payload, tag]))


def _bstr_len(b):
    # bytes of a byte string with its shortest head
    n = len(b)
    return n + (1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5)


def mac0_parse(msg):
    # Structure only, no MAC check: returns (kid, protected, payload, tag).
    try:
        obj = cbor.loads(msg)
    except cbor.CBORError as exc:
        raise COSEError("not CBOR: %s" % exc)
    if not isinstance(obj, cbor.Tag) or obj.tag != _TAG_MAC0:
        raise COSEError("not a tagged COSE_Mac0 (tag 17)")
    parts = obj.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise COSEError("COSE_Mac0 must be an array of 4")
    protected, unprotected, payload, tag = parts
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise COSEError("protected header and payload must be byte strings")
    if not isinstance(unprotected, dict) or unprotected:
        raise COSEError("unprotected header must be the empty map")
    if not isinstance(tag, bytes) or len(tag) != _TAG_LEN:
        raise COSEError("tag must be 8 bytes")
    # d1 84 bstr {} bstr bstr(8): any longer head makes the message longer than this
    if len(msg) != 3 + _bstr_len(protected) + _bstr_len(payload) + 1 + _TAG_LEN:
        raise COSEError("COSE_Mac0 envelope is not canonically encoded")
    try:
        hdr = cbor.loads(protected)
    except cbor.CBORError as exc:
        raise COSEError("protected header not CBOR: %s" % exc)
    if not isinstance(hdr, dict):
        raise COSEError("protected header must be a map")
    if 2 in hdr:
        raise COSEError("protected header has crit (2): no critical parameters are understood")
    if len(hdr) != 2 or 1 not in hdr or 4 not in hdr:
        raise COSEError("protected header must be exactly {1: alg, 4: kid}")
    alg = hdr[1]
    if not isinstance(alg, int) or isinstance(alg, bool) or alg != ALG_HMAC_256_64:
        raise COSEError("protected header alg must be 4 (HMAC 256/64)")
    kid = hdr[4]
    if not isinstance(kid, bytes) or not kid:
        raise COSEError("protected header kid must be a non-empty byte string")
    return kid, protected, payload, tag


def mac0_verify(key, msg, aad=b""):
    # Returns (kid, payload) when the tag verifies under key; raises COSEError otherwise.
    kid, protected, payload, tag = mac0_parse(msg)
    if not _equal(_tag(key, protected, aad, payload), tag):
        raise COSEError("MAC check failed")
    return kid, payload
