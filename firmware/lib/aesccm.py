# AES-CCM (RFC 3610, NIST SP 800-38C) built on a single-block AES-ECB primitive, because that
# is what MicroPython's cryptolib offers (cryptolib.aes(key, 1)). Used by the wristband advert
# (lib/advert.py, docs/protocol.md section 10). Under CPython the firmware tests put a shim
# over the cryptography package's AES-ECB on the path (tests/firmware/aes_ecb_shim.py); this
# module is the same on both. Checked against cryptography's AESCCM and the RFC 3610 and
# SP 800-38C examples in tests/firmware/fw_aesccm.py.
#
#   B0   = flags || nonce || len(msg) as L bytes     flags = Adata<<6 | (M-2)/2<<3 | (L-1)
#   CBC-MAC over B0, then len(aad) as 2 bytes || aad, zero-padded to a block, then msg,
#   zero-padded; T = first M bytes
#   A_i  = (L-1) || nonce || i as L bytes;  S_i = E(A_i)
#   out  = (msg XOR S_1 S_2 ...) || (T XOR S_0[:M])
# L = 15 - len(nonce). Associated data is limited to 65279 bytes (the 2-byte length form).
from clock import const

try:
    from cryptolib import aes as _aes
except ImportError:
    from aes_ecb_shim import aes as _aes

_ECB = const(1)
_BLOCK = const(16)
_MAX_AAD = const(0xFEFF)


class CCMError(ValueError):
    pass


class CCM:
    def __init__(self, key, tag_len=8):
        if not isinstance(key, (bytes, bytearray)) or len(key) not in (16, 24, 32):
            raise CCMError("key must be 16, 24 or 32 bytes")
        if tag_len not in (4, 6, 8, 10, 12, 14, 16):
            raise CCMError("tag length must be even, 4 to 16")
        self.tag_len = tag_len
        self._ecb = _aes(bytes(key), _ECB)
        # working blocks, reused by every call
        self._x = bytearray(_BLOCK)  # CBC-MAC state
        self._a = bytearray(_BLOCK)  # counter block A_i
        self._s = bytearray(_BLOCK)  # key stream block S_i

    def _check(self, nonce, n, aad):
        if not isinstance(nonce, (bytes, bytearray)) or not 7 <= len(nonce) <= 13:
            raise CCMError("nonce must be 7 to 13 bytes")
        L = 15 - len(nonce)
        if L < 4 and n >= 1 << (8 * L):
            raise CCMError("message too long for a %d-byte nonce" % len(nonce))
        if len(aad) > _MAX_AAD:
            raise CCMError("associated data over %d bytes" % _MAX_AAD)
        return L

    def _absorb(self, data, pos):
        # xors data into the CBC-MAC state from byte pos on, encrypting at each full block
        x = self._x
        for b in data:
            x[pos] ^= b
            pos += 1
            if pos == _BLOCK:
                self._ecb.encrypt(x, x)
                pos = 0
        return pos

    def _pad(self, pos):
        if pos:
            self._ecb.encrypt(self._x, self._x)

    def _mac(self, nonce, L, aad, msg):
        x = self._x
        n = len(msg)
        x[0] = (0x40 if aad else 0) | (((self.tag_len - 2) // 2) << 3) | (L - 1)
        x[1 : 1 + len(nonce)] = nonce
        for i in range(L):
            x[15 - i] = (n >> (8 * i)) & 0xFF
        self._ecb.encrypt(x, x)
        if aad:
            x[0] ^= len(aad) >> 8
            x[1] ^= len(aad) & 0xFF
            self._pad(self._absorb(aad, 2))
        self._pad(self._absorb(msg, 0))

    def _stream(self, nonce, L, i):
        # S_i into self._s
        a = self._a
        a[0] = L - 1
        a[1 : 1 + len(nonce)] = nonce
        for j in range(L):
            a[15 - j] = (i >> (8 * j)) & 0xFF
        self._ecb.encrypt(a, self._s)
        return self._s

    def _ctr(self, nonce, L, src, dst):
        # dst = src XOR S_1 S_2 ...
        s = self._s
        for i in range(len(src)):
            if i % _BLOCK == 0:
                self._stream(nonce, L, i // _BLOCK + 1)
            dst[i] = src[i] ^ s[i % _BLOCK]

    def encrypt(self, nonce, msg, aad=b""):
        # ciphertext || tag as bytes
        L = self._check(nonce, len(msg), aad)
        out = bytearray(len(msg) + self.tag_len)
        self._mac(nonce, L, aad, msg)
        self._ctr(nonce, L, msg, out)
        s0 = self._stream(nonce, L, 0)
        x = self._x
        m = len(msg)
        for i in range(self.tag_len):
            out[m + i] = x[i] ^ s0[i]
        return bytes(out)

    def decrypt(self, nonce, data, aad=b""):
        # the plaintext, or CCMError when the tag does not verify (nothing of the plaintext
        # is returned then)
        m = len(data) - self.tag_len
        if m < 0:
            raise CCMError("shorter than the tag")
        L = self._check(nonce, m, aad)
        msg = bytearray(m)
        self._ctr(nonce, L, memoryview(data)[:m], msg)
        self._mac(nonce, L, aad, msg)
        s0 = self._stream(nonce, L, 0)
        x = self._x
        diff = 0
        for i in range(self.tag_len):
            diff |= (x[i] ^ s0[i]) ^ data[m + i]
        if diff:
            raise CCMError("MIC check failed")
        return bytes(msg)
