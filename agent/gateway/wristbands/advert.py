"""The wristband advert at the gateway (docs/protocol.md §10): layout, keys, EIDs.

Written independently of firmware/lib/advert.py, on the `cryptography` package (AES-ECB for
the key derivation and the Eddystone-EID, AESCCM for the status); both are held to
tests/vectors/wristband.json.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from agent.shared.errors import WireError

ADVERT_LEN = 31
MFR_DATA_LEN = 27  # after the company id, as bleak's AdvertisementData.manufacturer_data gives it
COMPANY_TEST = 0xFFFF  # Bluetooth SIG: tests and development only
VERSION = 1
FRAME_STATUS = 0
K_DEFAULT = 10
K_MIN = 8
K_MAX = 15
AAD_END = 17
MIC_LEN = 8

SOS = 0x01
FALL = 0x02
STRAP_OPEN = 0x04
WORN = 0x08
LOW_BATTERY = 0x10
CHARGING = 0x20
CLOCK_RESTORED = 0x40
FLAGS_RESERVED = 0x80
BATTERY_UNKNOWN = 0xFF

PURPOSE_EID = 1
PURPOSE_CCM = 2
PURPOSE_PRIVACY = 3
_LABEL = b"GE wristband\x00\x01"
_AD_HEAD = b"\x1e\xff"

# the counted rejection reasons, in the order the checks run (docs/protocol.md §10.4)
REASONS = (
    "malformed",
    "other_company",
    "unsupported",
    "unknown_eid",
    "bad_counter",
    "bad_mic",
    "bad_status",
    "replay",
    "stale",
)


class AdvertError(WireError):
    """An advert that is rejected; `reason` is one of REASONS."""


@dataclass(frozen=True, slots=True)
class Status:
    """The decrypted status of an advert."""

    flags: int
    battery: int  # 0-100 %, 255 unknown
    event_id: int
    event_age: int  # seconds


def ecb(key: bytes) -> CipherContext:
    """An AES-ECB encryptor for key; update() takes any number of whole blocks."""
    # single AES blocks as a pseudorandom function (key derivation, EID), never bulk data
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305


def derive(root: bytes, purpose: int, epoch: int) -> bytes:
    """A working key of a band: AES-128(root, "GE wristband" 00 01 purpose epoch)."""
    if len(root) != 16:
        raise ValueError("a band's root key is 16 bytes")
    if not 0 <= epoch <= 15:
        raise ValueError("key epoch must be 0 to 15")
    return ecb(root).update(_LABEL + bytes((purpose, epoch)))


ROOT_LABEL = b"GE wristband root\x00"


def band_root(device_key: bytes) -> bytes:
    """A band's 16-byte root key from its 32-byte registry key: SHA-256("GE wristband root" 00 key)[0:16].

    The band derives it the same way (firmware/apps/wristband/app.py), so a wristband is
    provisioned and registered like every other device (docs/protocol.md §10.1).
    """
    if len(device_key) != 32:
        raise ValueError("a device key is 32 bytes")
    return hashlib.sha256(ROOT_LABEL + device_key).digest()[:16]


def window_start(counter: int, k: int) -> int:
    return counter >> k << k


class EpochKeys:
    """One band's keys for one key epoch, with the per-window values cached by the caller."""

    __slots__ = ("_ik", "_priv", "_tk", "_tk_hi", "ccm", "epoch", "header", "k")

    def __init__(self, root: bytes, epoch: int, k: int) -> None:
        if not K_MIN <= k <= K_MAX:
            raise ValueError(f"rotation exponent K must be {K_MIN} to {K_MAX}")
        self.epoch = epoch
        self.k = k
        self.header = (VERSION << 6) | (FRAME_STATUS << 4) | epoch
        self._ik = ecb(derive(root, PURPOSE_EID, epoch))
        self.ccm = AESCCM(derive(root, PURPOSE_CCM, epoch), tag_length=MIC_LEN)
        self._priv = ecb(derive(root, PURPOSE_PRIVACY, epoch))
        self._tk_hi = -1
        self._tk: CipherContext | None = None

    def eid(self, start: int) -> bytes:
        """The EID of the window beginning at `start` (a multiple of 2^K)."""
        hi = start >> 16
        if hi != self._tk_hi or self._tk is None:
            self._tk = ecb(self._ik.update(bytes(11) + b"\xff\x00\x00" + struct.pack(">H", hi)))
            self._tk_hi = hi
        return self._tk.update(bytes(11) + struct.pack(">BI", self.k, start))[:8]

    def privacy(self, eid: bytes) -> tuple[int, bytes]:
        """(counter mask, non-resolvable private address) of the window with this EID."""
        blk = self._priv.update(eid + bytes(8))
        addr = bytearray(blk[4:10])
        addr[0] &= 0x3F
        if addr in (bytes(6), b"\x3f" + b"\xff" * 5):
            addr[5] ^= 1
        return struct.unpack(">I", blk[:4])[0], bytes(addr)


def from_manufacturer_data(company: int, data: bytes) -> bytes:
    """The 31 advert bytes from one entry of bleak's manufacturer_data (company id -> bytes).

    The advert is exactly one manufacturer-data structure, so the bytes on air are known.
    """
    if len(data) != MFR_DATA_LEN or not 0 <= company <= 0xFFFF:
        raise AdvertError("malformed", f"manufacturer data of {len(data)} bytes")
    return _AD_HEAD + struct.pack("<H", company) + data


def parse(data: bytes, company: int) -> None:
    """Structure checks 1-3 of §10.4; AdvertError when one fails."""
    if len(data) != ADVERT_LEN or data[0] != 0x1E or data[1] != 0xFF:
        raise AdvertError("malformed", f"not one 30-byte manufacturer data structure ({len(data)} bytes)")
    if data[2] | (data[3] << 8) != company:
        raise AdvertError("other_company", f"company 0x{data[2] | (data[3] << 8):04x}")
    if data[4] >> 4 != (VERSION << 2) | FRAME_STATUS:
        raise AdvertError("unsupported", f"header 0x{data[4]:02x}")
