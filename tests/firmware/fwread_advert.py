# Reading the band's adverts back on the band's own primitives (lib/advert.py), for the firmware
# tests: the structure checks, the window's EID and the AES-CCM open, with the rejection reasons
# of docs/protocol.md section 10.4. A band never reads an advert, so this is not in lib/ (the
# gateway has its own reader, agent/ble/resolver.py). Runs on MicroPython and CPython.
import struct

from advert import ADVERT_LEN, BATTERY_UNKNOWN, FRAME_STATUS, VERSION, AdvertError, nonce
from aesccm import CCMError, _aes

# the advert's layout (docs/protocol.md section 10; lib/advert.py keeps these private)
_ECB = 1
_AD_LEN = 30
_AD_MFR = 0xFF
_AAD_END = 17
_FLAGS_RESERVED = 0x80
_U32 = 0xFFFFFFFF


def eid(ik, k, ts):
    # Eddystone-EID for identity key ik, rotation exponent k, time counter ts
    tk = _aes(bytes(ik), _ECB).encrypt(bytes(11) + b"\xff\x00\x00" + struct.pack(">H", ts >> 16))
    ts &= ~((1 << k) - 1) & _U32
    return _aes(tk, _ECB).encrypt(bytes(11) + struct.pack(">BI", k, ts))[:8]


def parse(data, company_id):
    # structure only: (header, eid, masked counter); checks 1-3 of section 10.4
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != ADVERT_LEN:
        raise AdvertError("malformed", "advert must be %d bytes" % ADVERT_LEN)
    if data[0] != _AD_LEN or data[1] != _AD_MFR:
        raise AdvertError("malformed", "not one manufacturer data structure of 30 bytes")
    company = data[2] | (data[3] << 8)
    if company != company_id:
        raise AdvertError("other_company", "company 0x%04x" % company)
    hdr = data[4]
    if hdr >> 6 != VERSION or (hdr >> 4) & 3 != FRAME_STATUS:
        raise AdvertError("unsupported", "header 0x%02x" % hdr)
    return hdr, bytes(data[5:13]), struct.unpack_from(">I", data, 13)[0]


def open_(keys, data, near):
    # (counter, flags, battery, event_id, event_age) of an advert from this band sent in the
    # window that holds counter value near; AdvertError otherwise. The caller checks the
    # counter for replay. (The gateway resolves EIDs itself: agent/ble/resolver.py.)
    hdr, e, masked = parse(data, keys.company)
    if hdr & 0x0F != keys.epoch or keys.window(near) != e:
        raise AdvertError("unknown_eid", "not this band's EID for the window")
    counter = masked ^ keys.mask
    start = keys._win
    if not start <= counter < start + (1 << keys.k):
        raise AdvertError("bad_counter", "counter outside the EID's window")
    try:
        status = keys.ccm.decrypt(nonce(e, counter, hdr), bytes(data[_AAD_END:]), bytes(data[:_AAD_END]))
    except CCMError:
        raise AdvertError("bad_mic", "MIC check failed")
    flags, battery, event_id, age = struct.unpack(">BBHH", status)
    if flags & _FLAGS_RESERVED or (battery > 100 and battery != BATTERY_UNKNOWN):
        raise AdvertError("bad_status", "flags 0x%02x battery %d" % (flags, battery))
    return counter, flags, battery, event_id, age
