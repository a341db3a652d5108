# Written by hand because boards cannot pip install: the gateway uses the `cobs` package from
# PyPI, and tests/firmware/ proves this module byte-identical to it (and the CRC to zlib's).
#
# The serial link's framing (docs/protocol.md §9):
#   serial frame = COBS(payload || CRC-32(payload), 4 bytes little-endian) 0x00
# A sender writes one 0x00 before every frame too, so a frame never sticks to line noise
# that came before it; a receiver ignores empty frames (two 0x00 in a row).
# encode()/decode() are plain COBS; frame()/unframe() add and check the CRC; Deframer cuts a
# byte stream into payloads in one buffer allocated up front. No I/O here.
from clock import const

try:
    from binascii import crc32 as _crc32_native
except ImportError:  # ports built without it use crc32_py below
    _crc32_native = None

MAX_PAYLOAD = const(512)  # a device frame's maximum (docs/protocol.md §2)
CRC_LEN = const(4)
_HUNT = const(0)  # before the first 0x00: the start of the frame was missed
_IN = const(1)  # collecting a frame
_SKIP = const(2)  # the frame grew past the bound: dropping it up to the next 0x00

# CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) four bits at a time: 16 entries
# instead of 256 keep the table small in RAM.
_NIBBLE = (
    0x00000000,
    0x1DB71064,
    0x3B6E20C8,
    0x26D930AC,
    0x76DC4190,
    0x6B6B51F4,
    0x4DB26158,
    0x5005713C,
    0xEDB88320,
    0xF00F9344,
    0xD6D6A3E8,
    0xCB61B38C,
    0x9B64C2B0,
    0x86D3D2D4,
    0xA00AE278,
    0xBDBDF21C,
)


class FramingError(ValueError):
    # reason: "partial", "oversize", "cobs", "crc" or "short" (the counters a receiver keeps);
    # str(exc) says what was wrong.
    def __init__(self, reason, msg):
        super().__init__(msg)
        self.reason = reason


def crc32_py(data, crc=0):
    # the same value as binascii.crc32 / zlib.crc32, for ports that lack them
    crc ^= 0xFFFFFFFF
    t = _NIBBLE
    for b in data:
        crc = (crc >> 4) ^ t[(crc ^ b) & 15]
        crc = (crc >> 4) ^ t[(crc ^ (b >> 4)) & 15]
    return crc ^ 0xFFFFFFFF


crc32 = _crc32_native if _crc32_native is not None else crc32_py


def max_encoded(payload_len):
    # bytes between the delimiters for a payload of payload_len bytes, at most
    n = payload_len + CRC_LEN
    return n + 1 + n // 254


def encode(data):
    # COBS: no 0x00 in the result; one code byte per run of up to 254 non-zero bytes. Like
    # the `cobs` package, a run of 254 that ends the input is not followed by a code byte.
    n = len(data)
    out = bytearray(n + 1 + n // 254)
    code_at = 0
    w = 1
    code = 1
    last_zero = True  # the input so far ended with a 0x00 (or is empty)
    for b in data:
        if b:
            out[w] = b
            w += 1
            code += 1
            if code == 0xFF:
                out[code_at] = 0xFF
                code_at = w
                w += 1
                code = 1
                last_zero = False
        else:
            out[code_at] = code
            code_at = w
            w += 1
            code = 1
            last_zero = True
    if code > 1 or last_zero:
        out[code_at] = code
    else:
        w -= 1  # the slot kept for a next code byte is not needed
    return bytes(out[:w])


def _unstuff(buf, n):
    # decodes buf[:n] in place (the output is never longer than the input); returns its length
    mv = memoryview(buf)
    r = 0
    w = 0
    while r < n:
        code = buf[r]
        if code == 0:  # callers keep zeros out; a code byte of 0 would never end
            raise FramingError("cobs", "0x00 inside a frame at byte %d" % r)
        r += 1
        end = r + code - 1
        if end > n:
            raise FramingError(
                "cobs", "code byte 0x%02x at byte %d runs past the frame end (%d bytes)" % (code, r - 1, n)
            )
        k = end - r
        if k:
            mv[w : w + k] = mv[r:end]
            w += k
        r = end
        if code != 0xFF and r < n:
            buf[w] = 0
            w += 1
    return w


def _no_zero(data):
    i = data.find(b"\x00")
    if i >= 0:
        raise FramingError("cobs", "0x00 inside a frame at byte %d" % i)


def decode(data):
    # the inverse of encode(); FramingError("cobs") when data is not a COBS encoding
    _no_zero(data)
    buf = bytearray(data)
    return bytes(buf[: _unstuff(buf, len(buf))])


def _check(buf, m, max_payload):
    # buf[:m] is payload || CRC; returns the payload length
    if m < CRC_LEN + 1:
        raise FramingError("short", "%d bytes after COBS decoding; a frame holds a payload and a 4-byte CRC" % m)
    n = m - CRC_LEN
    if n > max_payload:
        raise FramingError("oversize", "payload of %d bytes > %d" % (n, max_payload))
    got = buf[n] | buf[n + 1] << 8 | buf[n + 2] << 16 | buf[n + 3] << 24
    want = crc32(memoryview(buf)[:n]) & 0xFFFFFFFF
    if got != want:
        raise FramingError("crc", "CRC-32 %08x, computed %08x over %d bytes" % (got, want, n))
    return n


def frame(payload, max_payload=MAX_PAYLOAD):
    # payload -> COBS(payload || CRC) 0x00; the sender puts a 0x00 in front when it writes it
    n = len(payload)
    if n == 0:
        raise FramingError("short", "empty payload")
    if n > max_payload:
        raise FramingError("oversize", "payload of %d bytes > %d" % (n, max_payload))
    c = crc32(payload) & 0xFFFFFFFF
    body = bytearray(n + CRC_LEN)
    body[:n] = payload
    body[n] = c & 0xFF
    body[n + 1] = (c >> 8) & 0xFF
    body[n + 2] = (c >> 16) & 0xFF
    body[n + 3] = c >> 24
    return encode(body) + b"\x00"


def unframe(data, max_payload=MAX_PAYLOAD):
    # the bytes between two delimiters (without them) -> payload; FramingError otherwise
    if len(data) > max_encoded(max_payload):
        raise FramingError("oversize", "%d bytes between delimiters > %d" % (len(data), max_encoded(max_payload)))
    _no_zero(data)
    buf = bytearray(data)
    return bytes(buf[: _check(buf, _unstuff(buf, len(buf)), max_payload)])


class Deframer:
    # Cuts a byte stream into payloads. Memory: one buffer of max_encoded(max_payload) bytes,
    # allocated here; feed() allocates only the payloads it returns (and an exception per
    # rejected frame). Bytes before the first 0x00 are the tail of a frame whose start was
    # missed ("partial"); a frame longer than the bound is dropped up to the next 0x00
    # ("oversize"); bad COBS, a bad CRC and a frame too short for a CRC are "cobs", "crc",
    # "short". Each rejection is counted in rejected[reason]; last_error holds the latest.

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max_payload = max_payload
        self.buf = bytearray(max_encoded(max_payload))
        self.n = 0
        self.state = _HUNT
        self.rejected = {"partial": 0, "oversize": 0, "cobs": 0, "crc": 0, "short": 0}
        self.last_error = None

    def reset(self):
        # the line was interrupted (link reopened): a frame begun is counted as partial, and
        # bytes up to the next 0x00 are dropped
        self._end(None)
        self.state = _HUNT

    def feed(self, data, length=-1):
        # data[:length] (all of it when length < 0; bytes or bytearray) -> list of payloads,
        # oldest first
        out = []
        end = len(data) if length < 0 else length
        mv = memoryview(data)
        i = 0
        while i < end:
            j = data.find(b"\x00", i, end)
            stop = end if j < 0 else j
            if stop > i:
                self._take(mv, i, stop)
            if j < 0:
                break
            self._end(out)
            i = j + 1
        return out

    def _take(self, mv, i, stop):
        k = stop - i
        if self.state == _IN:
            if self.n + k > len(self.buf):
                self._reject(
                    FramingError("oversize", "more than %d bytes without a delimiter; dropped" % len(self.buf))
                )
                self.state = _SKIP
                self.n = 0
                return
            self.buf[self.n : self.n + k] = mv[i:stop]
            self.n += k
        elif self.state == _HUNT:
            self.n += k  # only counted: the bytes are dropped
            self.n = min(self.n, len(self.buf))

    def _end(self, out):
        state = self.state
        n = self.n
        self.state = _IN
        self.n = 0
        if state == _SKIP or n == 0:
            return
        if state == _HUNT:
            self._reject(FramingError("partial", "%d or more bytes before the first delimiter" % n))
            return
        if out is None:
            self._reject(FramingError("partial", "%d bytes of a frame cut off" % n))
            return
        try:
            m = _check(self.buf, _unstuff(self.buf, n), self.max_payload)
        except FramingError as e:
            self._reject(e)
            return
        out.append(bytes(self.buf[:m]))

    def _reject(self, e):
        self.rejected[e.reason] += 1
        self.last_error = e
