# The wristband's BLE advert (docs/protocol.md section 10 has the exact bytes): key
# derivation, the Eddystone-EID style ephemeral id, the counter mask and random address,
# and the 31-byte advert with its status encrypted under AES-CCM (lib/aesccm.py).
#
#   0      1  0x1e            AD length (30)
#   1      1  0xff            AD type: manufacturer specific data
#   2      2  company id      little-endian
#   4      1  header          version (bits 7-6, = 1) | frame type (bits 5-4, 0 = status) | key epoch (bits 3-0)
#   5      8  EID
#   13     4  counter XOR mask, big-endian
#   17     6  status, encrypted
#   23     8  MIC
# Keys (AES-128 of the band's 16-byte root key on one block each):
#   "GE wristband" 00 01 <purpose> <epoch>   purpose 1: EID identity key, 2: CCM key,
#                                            3: privacy key (counter mask, address)
# EID (Eddystone-EID): tk = AES(IK, 00*11 ff 00 00 ts[0] ts[1]),
#   EID = AES(tk, 00*11 K ts')[:8], ts = counter, ts' = ts with its low K bits cleared.
# Privacy block: AES(privacy key, EID || 00*8): bytes 0-3 mask the counter, bytes 4-9 are the
#   non-resolvable private address (top two bits cleared) used for the EID's window.
# CCM: nonce = EID || counter (4, big-endian) || header; associated data = bytes 0-16.
# A band only builds adverts: reading them is the gateway's (agent/ble/resolver.py), and the
# firmware tests read them back with tests/firmware/fwread_advert.py (kept off the band's heap).
import struct

from aesccm import CCM, _aes
from clock import const

ADVERT_LEN = const(31)
COMPANY_TEST = const(0xFFFF)  # Bluetooth SIG: for tests only, never in a shipped product
VERSION = const(1)
FRAME_STATUS = const(0)
K_DEFAULT = const(10)
K_MIN = const(8)
K_MAX = const(15)

# status flags
SOS = const(0x01)
FALL = const(0x02)
STRAP_OPEN = const(0x04)
WORN = const(0x08)
LOW_BATTERY = const(0x10)
CHARGING = const(0x20)
CLOCK_RESTORED = const(0x40)
_FLAGS_RESERVED = const(0x80)
BATTERY_UNKNOWN = const(0xFF)

_ECB = const(1)
_AD_LEN = const(30)
_AD_MFR = const(0xFF)
_AAD_END = const(17)
_MIC = const(8)
_PURPOSE_EID = const(1)
_PURPOSE_CCM = const(2)
_PURPOSE_PRIV = const(3)
_LABEL = b"GE wristband\x00\x01"
_U32 = const(0xFFFFFFFF)


class AdvertError(ValueError):
    # reason: one of the counted rejection reasons of docs/protocol.md section 10.4
    def __init__(self, reason, detail):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason


def derive(root, purpose, epoch):
    if not isinstance(root, (bytes, bytearray)) or len(root) != 16:
        raise AdvertError("bad_key", "root key must be 16 bytes")
    if not 0 <= epoch <= 15:
        raise AdvertError("bad_key", "key epoch must be 0 to 15")
    return _aes(bytes(root), _ECB).encrypt(_LABEL + bytes((purpose, epoch)))


class BandKeys:
    # The keys of one band for one key epoch, and the per-window values (EID, mask,
    # address) for the window last asked for.
    def __init__(self, root, epoch=0, k=K_DEFAULT, company=COMPANY_TEST):
        if not K_MIN <= k <= K_MAX:
            raise AdvertError("bad_key", "rotation exponent K must be %d to %d" % (K_MIN, K_MAX))
        if not 0 <= company <= 0xFFFF:
            raise AdvertError("bad_key", "company id must be 16 bits")
        self.epoch = epoch
        self.k = k
        self.company = company
        self.ik = derive(root, _PURPOSE_EID, epoch)
        self.ccm = CCM(derive(root, _PURPOSE_CCM, epoch), _MIC)
        self._priv = _aes(derive(root, _PURPOSE_PRIV, epoch), _ECB)
        self._tk_hi = -1  # ts >> 16 of the cached temporary key
        self._tk = None
        self._win = -1  # window start of the cached values
        self.eid = None
        self.mask = 0
        self.addr = None

    def window(self, counter):
        # EID, mask and address of the window that holds counter, cached
        start = counter & ~((1 << self.k) - 1) & _U32
        if start != self._win:
            hi = counter >> 16
            if hi != self._tk_hi:
                blk = bytes(11) + b"\xff\x00\x00" + struct.pack(">H", hi)
                self._tk = _aes(_aes(bytes(self.ik), _ECB).encrypt(blk), _ECB)
                self._tk_hi = hi
            self.eid = self._tk.encrypt(bytes(11) + struct.pack(">BI", self.k, start))[:8]
            blk = self._priv.encrypt(self.eid + bytes(8))
            self.mask = struct.unpack(">I", blk[:4])[0]
            addr = bytearray(blk[4:10])
            addr[0] &= 0x3F
            # the random part may be neither all zeros nor all ones
            if addr == b"\x00" * 6 or addr == b"\x3f" + b"\xff" * 5:
                addr[5] ^= 1
            self.addr = bytes(addr)
            self._win = start
        return self.eid


def header(epoch, frame_type=FRAME_STATUS):
    return (VERSION << 6) | (frame_type << 4) | epoch


def nonce(eid_, counter, hdr):
    return eid_ + struct.pack(">IB", counter, hdr)


def status_bytes(flags, battery, event_id, event_age):
    if flags & _FLAGS_RESERVED or not 0 <= flags <= 0xFF:
        raise AdvertError("bad_status", "flags 0x%x use reserved bits" % flags)
    if not (0 <= battery <= 100 or battery == BATTERY_UNKNOWN):
        raise AdvertError("bad_status", "battery %d%% out of range" % battery)
    if not 0 <= event_id <= 0xFFFF:
        raise AdvertError("bad_status", "event id %d out of range" % event_id)
    return struct.pack(">BBHH", flags, battery, event_id, min(max(event_age, 0), 0xFFFF))


def encode(keys, counter, flags, battery, event_id, event_age, out=None):
    # the 31-byte advert for counter (the caller never uses a counter twice for different
    # status: docs/protocol.md section 10.2); written into out when given
    if not 0 <= counter <= _U32:
        raise AdvertError("bad_counter", "counter out of range")
    status = status_bytes(flags, battery, event_id, event_age)
    e = keys.window(counter)
    hdr = header(keys.epoch)
    buf = out if out is not None else bytearray(ADVERT_LEN)
    buf[0] = _AD_LEN
    buf[1] = _AD_MFR
    buf[2] = keys.company & 0xFF
    buf[3] = keys.company >> 8
    buf[4] = hdr
    buf[5:13] = e
    struct.pack_into(">I", buf, 13, counter ^ keys.mask)
    sealed = keys.ccm.encrypt(nonce(e, counter, hdr), status, memoryview(buf)[:_AAD_END])
    buf[_AAD_END:ADVERT_LEN] = sealed
    return buf
