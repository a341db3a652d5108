# CBOR (RFC 8949) subset codec for device code.
# Written here rather than imported: boards cannot pip install, and micropython-lib's cbor2
# is installed with mip from the internet, which neither CI nor a technician in the field
# can rely on. Proven against CPython cbor2 (byte-identical for the subset) and the RFC 8949
# examples; see tests/firmware/fw_cbor.py.
#
# Subset: integers up to 64 bits, byte and text strings, arrays, maps, tags, false, true,
# null, floats (half/single/double). Definite lengths only.
# Encoding is canonical, matching cbor2.dumps(canonical=True): shortest integer heads,
# the shortest float that keeps the value (NaN as f97e00), map keys sorted by the length
# of their encoding, then by its bytes.
# Half-precision floats are converted by hand in both directions (_half, _from_half):
# MicroPython's struct "e" packs the subnormals from 2^-15 up wrongly (0x0200 becomes 0x0000)
# and is missing on some ports.
# Text is checked to be well-formed UTF-8 (lib/utf8.py) both ways, as CPython's strict codec
# does: MicroPython's decode() lets overlongs, surrogates and code points above U+10FFFF
# through, and its str can hold surrogates.
# Decoding checks every length against the bytes that remain before allocating, bounds
# nesting depth, rejects duplicate map keys, and raises CBORError naming the offset.
# Encoding raises CBORError for anything it cannot write (never TypeError, OverflowError or
# UnicodeError), and refuses a map whose keys encode alike (two NaN keys), which every
# decoder here would reject as duplicate keys.
import struct

import utf8
from clock import const

_MAX_DEPTH = const(16)
# str counts code points (not so on ports built without unicode strings): a text's length
# equal to its byte length then means plain ASCII, which needs no UTF-8 check
_CP_LEN = len("\u00e9") == 1


class CBORError(ValueError):
    pass


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


def _head(buf, major, n):
    # the shortest head: the value in the initial byte below 24, else 1, 2, 4 or 8 bytes
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
        return
    for ai in range(24, 28):
        size = 1 << (ai - 24)
        if not n >> (size << 3):
            buf.append(mt | ai)
            buf.extend(n.to_bytes(size, "big"))
            return
    raise CBORError("integer too large for CBOR without bignums")


def _half(f):
    # The binary16 bits of the binary32 value in f (4 bytes, big-endian) when it is exactly
    # representable, else -1. NaN is handled by the caller.
    sign = (f[0] & 0x80) << 8
    e = (f[0] & 0x7F) << 1 | f[1] >> 7
    m = (f[1] & 0x7F) << 16 | f[2] << 8 | f[3]
    if e == 0xFF:
        return sign | 0x7C00  # infinity
    if e == 0:
        return sign if m == 0 else -1  # zero; binary32 subnormals are below binary16's range
    e -= 127
    if e > 15 or e < -24:
        return -1
    if e >= -14:
        # normal: the 13 low mantissa bits must be zero
        return -1 if m & 0x1FFF else sign | (e + 15) << 10 | m >> 13
    # subnormal k * 2^-24, k = 1.m * 2^(e + 24): needs the bits shifted out to be zero
    m |= 0x800000
    shift = -1 - e  # 14 .. 23
    return -1 if m & ((1 << shift) - 1) else sign | m >> shift


def _from_half(h):
    # the float of binary16 bits h, through the binary32 bits (exact; NaN payloads kept)
    e = h >> 10 & 0x1F
    m = h & 0x3FF
    if e == 0x1F:
        e = 0xFF
    elif e:
        e += 112  # rebias 15 -> 127
    elif m:
        e = 113  # subnormal: normalise
        while not m & 0x400:
            m <<= 1
            e -= 1
        m &= 0x3FF
    return struct.unpack(">f", bytes((h >> 8 & 0x80 | e >> 1, (e & 1) << 7 | m >> 3, (m & 7) << 5, 0)))[0]


def _enc_float(buf, v):
    if v != v:
        buf.extend(b"\xf9\x7e\x00")
        return
    try:
        f = struct.pack(">f", v)
    except OverflowError:  # CPython, beyond binary32's range (MicroPython gives infinity)
        f = None
    if f is None or struct.unpack(">f", f)[0] != v:
        buf.append(0xFB)
        buf.extend(struct.pack(">d", v))
        return
    h = _half(f)
    if h < 0:
        buf.append(0xFA)
        buf.extend(f)
    else:
        buf.append(0xF9)
        buf.append(h >> 8)
        buf.append(h & 0xFF)


def _enc(buf, obj, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("nesting deeper than %d" % _MAX_DEPTH)
    if obj is None:
        buf.append(0xF6)
    elif obj is False:
        buf.append(0xF4)
    elif obj is True:
        buf.append(0xF5)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(buf, 0, obj)
        else:
            _head(buf, 1, -1 - obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, str):
        try:
            b = obj.encode("utf-8")
        except UnicodeError:  # CPython: a lone surrogate
            b = None
        # MicroPython writes surrogates out as they are: check what is not plain ASCII
        if b is None or ((len(b) != len(obj) or not _CP_LEN) and utf8.bad(b) >= 0):
            raise CBORError("text string is not valid Unicode (a lone surrogate)")
        _head(buf, 3, len(b))
        buf.extend(b)
    elif isinstance(obj, (list, tuple)):
        _head(buf, 4, len(obj))
        for item in obj:
            _enc(buf, item, depth + 1)
    elif isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            kb = bytearray()
            _enc(kb, k, depth + 1)
            items.append((len(kb), bytes(kb), v))
        items.sort(key=_map_order)
        _head(buf, 5, len(items))
        last = None
        for _, kb, v in items:
            if kb == last:
                raise CBORError("two map keys have the same encoding %s" % kb.hex())
            last = kb
            buf.extend(kb)
            _enc(buf, v, depth + 1)
    elif isinstance(obj, float):
        _enc_float(buf, obj)
    elif isinstance(obj, Tag):
        if not isinstance(obj.tag, int) or isinstance(obj.tag, bool) or obj.tag < 0:
            raise CBORError("tag number must be a non-negative integer")
        _head(buf, 6, obj.tag)
        _enc(buf, obj.value, depth + 1)
    else:
        raise CBORError("cannot encode type %s" % type(obj).__name__)


def _map_order(item):
    return (item[0], item[1])


def dumps(obj):
    buf = bytearray()
    _enc(buf, obj, 0)
    return bytes(buf)


class _Decoder:
    def __init__(self, data, max_depth):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.start = 0

    def need(self, n, what):
        if self.pos + n > len(self.data):
            raise CBORError(
                "truncated %s at offset %d: needs %d bytes, %d left" % (what, self.start, n, len(self.data) - self.pos)
            )

    def uint(self, ai, what):
        # the argument of a head: in ai below 24, else in the next 1, 2, 4 or 8 bytes
        if ai < 24:
            return ai
        if ai > 27:
            if ai == 31:
                raise CBORError("indefinite length at offset %d is not supported" % self.start)
            raise CBORError("reserved additional info %d at offset %d" % (ai, self.start))
        n = 1 << (ai - 24)
        self.need(n, what)
        pos = self.pos
        self.pos = pos + n
        return int.from_bytes(self.data[pos : pos + n], "big")

    def item(self, depth):
        if depth > self.max_depth:
            raise CBORError("nesting deeper than %d at offset %d" % (self.max_depth, self.pos))
        start = self.start = self.pos
        self.need(1, "item")
        ib = self.data[start]
        self.pos += 1
        major = ib >> 5
        ai = ib & 0x1F
        if major < 2:
            v = self.uint(ai, "integer")
            return v if major == 0 else -1 - v
        if major == 2 or major == 3:
            n = self.uint(ai, "string length")
            self.need(n, "string")
            pos = self.pos
            raw = bytes(self.data[pos : pos + n])
            self.pos += n
            if major == 2:
                return raw
            try:
                s = raw.decode("utf-8")
            except (UnicodeError, ValueError):
                s = None
            # a decoded length equal to the byte length means plain ASCII: nothing to check
            bad = -1 if s is not None and len(s) == n and _CP_LEN else utf8.bad(raw)
            if s is None or bad >= 0:
                raise CBORError("invalid UTF-8 in text string at offset %d (byte %d)" % (start, pos + max(bad, 0)))
            return s
        if major == 4:
            n = self.uint(ai, "array length")
            # every item takes at least one byte: reject impossible counts before allocating
            self.need(n, "array")
            out = []
            for _ in range(n):
                out.append(self.item(depth + 1))
            return out
        if major == 5:
            n = self.uint(ai, "map length")
            self.need(2 * n, "map")
            out = {}
            for _ in range(n):
                kpos = self.pos
                k = self.item(depth + 1)
                if not isinstance(k, (int, str, bytes)) or isinstance(k, bool):
                    raise CBORError("unsupported map key type at offset %d" % kpos)
                if k in out:
                    raise CBORError("duplicate map key at offset %d" % kpos)
                out[k] = self.item(depth + 1)
            return out
        if major == 6:
            tag = self.uint(ai, "tag")
            return Tag(tag, self.item(depth + 1))
        # major 7: simple values and floats
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if 25 <= ai <= 27:
            n = 1 << (ai - 24)
            self.need(n, "float")
            pos = self.pos
            self.pos = pos + n
            if ai == 25:
                return _from_half(self.data[pos] << 8 | self.data[pos + 1])
            return struct.unpack_from(">f" if ai == 26 else ">d", self.data, pos)[0]
        raise CBORError("unsupported simple value %d at offset %d" % (ai, start))


def loads(data, max_depth=_MAX_DEPTH):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("expected bytes, got %s" % type(data).__name__)
    dec = _Decoder(data, max_depth)
    obj = dec.item(0)
    if dec.pos != len(data):
        raise CBORError("%d trailing bytes after item at offset %d" % (len(data) - dec.pos, dec.pos))
    return obj
