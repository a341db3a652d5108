"""Vectors for the wristband advert (docs/protocol.md §10), written by tests/vectors/generate.py.

Every byte comes from the `cryptography` package: AES-ECB for the key derivation, the
Eddystone-EID and the privacy block, AESCCM for the status and MIC. AES-CCM itself is pinned
by the RFC 3610 packet vectors and the NIST SP 800-38C examples (literals below, each checked
against AESCCM) and by generated cases covering every nonce and tag length.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

LABEL = b"GE wristband\x00\x01"
COMPANY_TEST = 0xFFFF
ROOT = bytes(range(0x10, 0x20))
OTHER_ROOT = bytes(range(0xA0, 0xB0))


def aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def derive(root: bytes, purpose: int, epoch: int) -> bytes:
    return aes_ecb(root, LABEL + bytes((purpose, epoch)))


def eid(ik: bytes, k: int, ts: int) -> bytes:
    tk = aes_ecb(ik, bytes(11) + b"\xff\x00\x00" + struct.pack(">H", ts >> 16))
    start = ts >> k << k
    return aes_ecb(tk, bytes(11) + struct.pack(">BI", k, start))[:8]


def privacy(root: bytes, epoch: int, e: bytes) -> tuple[int, bytes]:
    blk = aes_ecb(derive(root, 3, epoch), e + bytes(8))
    addr = bytearray(blk[4:10])
    addr[0] &= 0x3F
    if addr in (bytes(6), b"\x3f" + b"\xff" * 5):
        addr[5] ^= 1
    return struct.unpack(">I", blk[:4])[0], bytes(addr)


def advert(
    root: bytes,
    epoch: int,
    k: int,
    counter: int,
    status: bytes,
    company: int = COMPANY_TEST,
    header: int | None = None,
) -> bytes:
    hdr = (1 << 6) | epoch if header is None else header
    e = eid(derive(root, 1, epoch), k, counter)
    mask, _ = privacy(root, epoch, e)
    head = bytes((0x1E, 0xFF)) + struct.pack("<H", company) + bytes((hdr,)) + e + struct.pack(">I", counter ^ mask)
    nonce = e + struct.pack(">IB", counter, hdr)
    return head + AESCCM(derive(root, 2, epoch), tag_length=8).encrypt(nonce, status, head)


def open_reference(root: bytes, epoch: int, k: int, near: int, data: bytes, company: int = COMPANY_TEST) -> Any:
    """The reference decoder: the status fields, or the name of the first check that fails."""
    if len(data) != 31 or data[0] != 0x1E or data[1] != 0xFF:
        return "malformed"
    if struct.unpack("<H", data[2:4])[0] != company:
        return "other_company"
    hdr = data[4]
    if hdr >> 6 != 1 or (hdr >> 4) & 3 != 0:
        return "unsupported"
    e = eid(derive(root, 1, epoch), k, near)
    if hdr & 0x0F != epoch or data[5:13] != e:
        return "unknown_eid"
    mask, _ = privacy(root, epoch, e)
    counter = struct.unpack(">I", data[13:17])[0] ^ mask
    if counter >> k != near >> k:
        return "bad_counter"
    try:
        status = AESCCM(derive(root, 2, epoch), tag_length=8).decrypt(
            e + struct.pack(">IB", counter, hdr), data[17:], data[:17]
        )
    except InvalidTag:
        return "bad_mic"
    flags, battery, event_id, age = struct.unpack(">BBHH", status)
    if flags & 0x80 or (100 < battery < 255):
        return "bad_status"
    return {"counter": counter, "flags": flags, "battery": battery, "event_id": event_id, "event_age": age}


# RFC 3610 section 8, packet vectors #1-#3 (M = 8, L = 2, 8 bytes of header as associated
# data) and NIST SP 800-38C appendix C, examples 1-3: literal inputs and outputs.
RFC3610_KEY = bytes(range(0xC0, 0xD0))
LITERAL_CCM: list[tuple[str, bytes, bytes, bytes, bytes, int, str]] = [
    (
        "RFC 3610 packet vector #1",
        RFC3610_KEY,
        bytes.fromhex("00000003020100a0a1a2a3a4a5"),
        bytes(range(8)),
        bytes(range(8, 31)),
        8,
        "588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0",
    ),
    (
        "RFC 3610 packet vector #2",
        RFC3610_KEY,
        bytes.fromhex("00000004030201a0a1a2a3a4a5"),
        bytes(range(8)),
        bytes(range(8, 32)),
        8,
        "72c91a36e135f8cf291ca894085c87e3cc15c439c9e43a3ba091d56e10400916",
    ),
    (
        "RFC 3610 packet vector #3",
        RFC3610_KEY,
        bytes.fromhex("00000005040302a0a1a2a3a4a5"),
        bytes(range(8)),
        bytes(range(8, 33)),
        8,
        "51b1e5f44a197d1da46b0f8e2d282ae871e838bb64da8596574adaa76fbd9fb0c5",
    ),
    (
        "SP 800-38C example 1",
        bytes(range(0x40, 0x50)),
        bytes(range(0x10, 0x17)),
        bytes(range(8)),
        bytes(range(0x20, 0x24)),
        4,
        "7162015b4dac255d",
    ),
    (
        "SP 800-38C example 2",
        bytes(range(0x40, 0x50)),
        bytes(range(0x10, 0x18)),
        bytes(range(16)),
        bytes(range(0x20, 0x30)),
        6,
        "d2a1f0e051ea5f62081a7792073d593d1fc64fbfaccd",
    ),
    (
        "SP 800-38C example 3",
        bytes(range(0x40, 0x50)),
        bytes(range(0x10, 0x1C)),
        bytes(range(20)),
        bytes(range(0x20, 0x38)),
        8,
        "e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951",
    ),
]


def _det(seed: str, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    return out[:n]


def ccm_vectors() -> list[dict[str, Any]]:
    out = []
    for name, key, nonce, aad, msg, tag_len, want in LITERAL_CCM:
        got = AESCCM(key, tag_length=tag_len).encrypt(nonce, msg, aad)
        if got.hex() != want:
            raise AssertionError(f"{name}: cryptography gives {got.hex()}, the document {want}")
        out.append(
            {
                "name": name,
                "key": key.hex(),
                "nonce": nonce.hex(),
                "aad": aad.hex(),
                "msg": msg.hex(),
                "tag_len": tag_len,
                "out": want,
            }
        )
    # every nonce length (7..13) and tag length (4..16), messages and associated data of
    # 0, 1, 15, 16, 17 and 40 bytes, AES-128 and AES-256 keys
    sizes = (0, 1, 15, 16, 17, 40)
    i = 0
    for nonce_len in range(7, 14):
        for tag_len in (4, 6, 8, 10, 12, 14, 16):
            key = _det(f"key{i}", 32 if i % 5 == 4 else 16)
            nonce = _det(f"nonce{i}", nonce_len)
            aad = _det(f"aad{i}", sizes[i % len(sizes)])
            msg = _det(f"msg{i}", sizes[(i // 3) % len(sizes)])
            got = AESCCM(key, tag_length=tag_len).encrypt(nonce, msg, aad or None)
            out.append(
                {
                    "name": f"generated {i}: nonce {nonce_len}, tag {tag_len}",
                    "key": key.hex(),
                    "nonce": nonce.hex(),
                    "aad": aad.hex(),
                    "msg": msg.hex(),
                    "tag_len": tag_len,
                    "out": got.hex(),
                }
            )
            i += 1
    return out


def status(flags: int, battery: int, event_id: int, age: int) -> bytes:
    return struct.pack(">BBHH", flags, battery, event_id, age)


# (name, root, epoch, k, counter, flags, battery, event id, event age)
ADVERTS: list[tuple[str, bytes, int, int, int, int, int, int, int]] = [
    ("worn, nothing happening", ROOT, 0, 10, 1700000000, 0x08, 87, 0, 0),
    ("SOS just pressed", ROOT, 0, 10, 1700000001, 0x09, 86, 7, 0),
    ("SOS 42 s ago", ROOT, 0, 10, 1700000043, 0x09, 86, 7, 42),
    ("next window, same band", ROOT, 0, 10, 1700000256 + 1024, 0x08, 86, 7, 1299),
    ("fall, strap open, low battery", ROOT, 0, 10, 1700003000, 0x16, 9, 8, 3),
    ("charging, battery unknown", ROOT, 0, 10, 1700004000, 0x20, 255, 0, 0),
    ("clock restored after a power loss", ROOT, 0, 10, 1699990000, 0x48, 100, 8, 65535),
    ("key epoch 5", ROOT, 5, 10, 1700000000, 0x08, 50, 0, 0),
    ("K = 8", ROOT, 0, 8, 1700000000, 0x08, 50, 0, 0),
    ("K = 15", ROOT, 0, 15, 1700000000, 0x08, 50, 0, 0),
    ("counter 0", ROOT, 0, 10, 0, 0x00, 0, 0, 0),
    ("counter 2^32 - 1", ROOT, 0, 10, 0xFFFFFFFF, 0x3F, 100, 65535, 65535),
    ("another band", OTHER_ROOT, 0, 10, 1700000000, 0x08, 77, 0, 0),
]


def advert_vectors() -> dict[str, Any]:
    adverts: list[dict[str, Any]] = []
    for name, root, epoch, k, counter, flags, battery, event_id, age in ADVERTS:
        data = advert(root, epoch, k, counter, status(flags, battery, event_id, age))
        e = eid(derive(root, 1, epoch), k, counter)
        mask, addr = privacy(root, epoch, e)
        got = open_reference(root, epoch, k, counter, data)
        assert isinstance(got, dict) and got["counter"] == counter, name
        adverts.append(
            {
                "name": name,
                "root": root.hex(),
                "epoch": epoch,
                "k": k,
                "counter": counter,
                "flags": flags,
                "battery": battery,
                "event_id": event_id,
                "event_age": age,
                "eid": e.hex(),
                "mask": mask,
                "addr": addr.hex(),
                "hex": data.hex(),
            }
        )

    good = bytes.fromhex(adverts[0]["hex"])
    near = ADVERTS[0][4]
    bad: list[dict[str, Any]] = []

    def add(name: str, data: bytes, want: str, at: int = near) -> None:
        got = open_reference(ROOT, 0, 10, at, data)
        if got != want:
            raise AssertionError(f"bad advert {name!r}: reference says {got!r}, expected {want!r}")
        bad.append({"name": name, "hex": data.hex(), "near": at, "reason": want})

    def flip(i: int, bit: int = 0x01) -> bytes:
        b = bytearray(good)
        b[i] ^= bit
        return bytes(b)

    add("30 bytes", good[:30], "malformed")
    add("32 bytes", good + b"\x00", "malformed")
    add("empty", b"", "malformed")
    add("AD length 0x1d", flip(0, 0x03), "malformed")
    add("AD type 0x16 (service data)", bytes((0x1E, 0x16)) + good[2:], "malformed")
    add("Flags structure first", bytes.fromhex("020106") + good[:28], "malformed")
    add("version 0", bytes(good[:4]) + bytes((good[4] & 0x3F,)) + good[5:], "unsupported")
    add("version 2", bytes(good[:4]) + bytes((0x80 | (good[4] & 0x3F),)) + good[5:], "unsupported")
    add("frame type 1", flip(4, 0x10), "unsupported")
    add("company 0x0059", good[:2] + b"\x59\x00" + good[4:], "other_company")
    add("key epoch 1", flip(4, 0x01), "unknown_eid")
    add("EID bit flipped", flip(9), "unknown_eid")
    add("from the previous window", good, "unknown_eid", near - 1024)
    add("counter high bit flipped", flip(13, 0x80), "bad_counter")
    add("counter low bit flipped", flip(16), "bad_mic")
    add("status bit flipped", flip(20), "bad_mic")
    add("MIC bit flipped", flip(30, 0x80), "bad_mic")
    add("another band's MIC", good[:23] + bytes.fromhex(adverts[-1]["hex"])[23:], "bad_mic")
    add("reserved flag bit, sealed", advert(ROOT, 0, 10, near, status(0x88, 50, 0, 0)), "bad_status")
    add("battery 101 %, sealed", advert(ROOT, 0, 10, near, status(0x08, 101, 0, 0)), "bad_status")
    return {
        "about": "wristband adverts (docs/protocol.md section 10); built with cryptography's AES-ECB and AESCCM",
        "company": COMPANY_TEST,
        "kdf": [
            {"root": r.hex(), "epoch": ep, "purpose": p, "key": derive(r, p, ep).hex()}
            for r in (ROOT, OTHER_ROOT)
            for ep in (0, 5)
            for p in (1, 2, 3)
        ],
        "eid": [
            {"ik": derive(ROOT, 1, 0).hex(), "k": k, "ts": ts, "eid": eid(derive(ROOT, 1, 0), k, ts).hex()}
            for k, ts in ((10, 0), (10, 1023), (10, 1024), (10, 1700000000), (8, 65535), (8, 65536), (15, 0xFFFFFFFF))
        ],
        "adverts": adverts,
        "bad_adverts": bad,
    }


def wristband_vectors() -> dict[str, Any]:
    return {"ccm": ccm_vectors(), **advert_vectors()}
