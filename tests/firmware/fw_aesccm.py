# AES-CCM on AES-ECB (lib/aesccm.py) against the RFC 3610 packet vectors, the NIST SP 800-38C
# examples and cases generated with cryptography's AESCCM (tests/vectors/wristband.json).
# Runs on MicroPython (cryptolib) and CPython (tests/firmware/aes_ecb_shim.py).
import aesccm
from fwsupport import load_vectors, raises, unhex

V = load_vectors("wristband.json")


def test_aes_ecb_fips197():
    # FIPS-197 appendix C.1 (AES-128), through the same primitive aesccm uses, in place too
    key = unhex("000102030405060708090a0b0c0d0e0f")
    pt = unhex("00112233445566778899aabbccddeeff")
    ecb = aesccm._aes(key, 1)
    assert ecb.encrypt(pt).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    buf = bytearray(pt)
    ecb.encrypt(buf, buf)
    assert buf.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_vectors_encrypt():
    assert len(V["ccm"]) >= 55
    for vec in V["ccm"]:
        c = aesccm.CCM(unhex(vec["key"]), vec["tag_len"])
        got = c.encrypt(unhex(vec["nonce"]), unhex(vec["msg"]), unhex(vec["aad"]))
        assert got.hex() == vec["out"], vec["name"]


def test_vectors_decrypt():
    for vec in V["ccm"]:
        c = aesccm.CCM(unhex(vec["key"]), vec["tag_len"])
        got = c.decrypt(unhex(vec["nonce"]), unhex(vec["out"]), unhex(vec["aad"]))
        assert got.hex() == vec["msg"], vec["name"]


def test_rfc3610_packet_vector_1_literal():
    # pinned here too, so a wrong vector file cannot pass silently
    c = aesccm.CCM(unhex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"), 8)
    out = c.encrypt(unhex("00000003020100a0a1a2a3a4a5"), bytes(range(8, 31)), bytes(range(8)))
    assert out.hex() == "588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0"


def test_every_bit_flip_is_rejected():
    vec = V["ccm"][0]
    c = aesccm.CCM(unhex(vec["key"]), vec["tag_len"])
    nonce, aad, out = unhex(vec["nonce"]), unhex(vec["aad"]), unhex(vec["out"])
    for i in range(len(out)):
        b = bytearray(out)
        b[i] ^= 0x01
        raises(aesccm.CCMError, c.decrypt, nonce, bytes(b), aad)
    for i in range(len(aad)):
        b = bytearray(aad)
        b[i] ^= 0x80
        raises(aesccm.CCMError, c.decrypt, nonce, out, bytes(b))
    b = bytearray(nonce)
    b[-1] ^= 1
    raises(aesccm.CCMError, c.decrypt, bytes(b), out, aad)


def test_bad_parameters_rejected():
    raises(aesccm.CCMError, aesccm.CCM, bytes(15))
    raises(aesccm.CCMError, aesccm.CCM, "0123456789abcdef")
    raises(aesccm.CCMError, aesccm.CCM, bytes(16), 5)
    raises(aesccm.CCMError, aesccm.CCM, bytes(16), 18)
    c = aesccm.CCM(bytes(16), 8)
    raises(aesccm.CCMError, c.encrypt, bytes(6), b"x", b"")
    raises(aesccm.CCMError, c.encrypt, bytes(14), b"x", b"")
    raises(aesccm.CCMError, c.decrypt, bytes(13), bytes(7), b"")
    # L = 2 (13-byte nonce): at most 65535 bytes of message
    raises(aesccm.CCMError, c.encrypt, bytes(13), bytes(65536), b"")
    raises(aesccm.CCMError, c.encrypt, bytes(13), b"", bytes(0xFF00))
