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
# Decoding checks every length against the bytes that remain before allocating, bounds
# nesting depth, rejects duplicate map keys, and raises CBORError naming the offset.
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAX_DEPTH = const(16)


class CBORError(ValueError):
    pass


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


def _head(buf, major, n):
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(struct.pack(">I", n))
    elif n < 0x10000000000000000:
        buf.append(mt | 27)
        buf.extend(struct.pack(">Q", n))
    else:
        raise CBORError("integer too large for CBOR without bignums")


def _float_fits(fmt, v):
    try:
        packed = struct.pack(fmt, v)
    except (OverflowError, ValueError):
        return None
    if struct.unpack(fmt, packed)[0] == v:
        return packed
    return None


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
        b = obj.encode("utf-8")
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
        for _, kb, v in items:
            buf.extend(kb)
            _enc(buf, v, depth + 1)
    elif isinstance(obj, float):
        if obj != obj:
            buf.extend(b"\xf9\x7e\x00")
            return
        for fmt, ib in ((">e", 0xF9), (">f", 0xFA)):
            packed = _float_fits(fmt, obj)
            if packed is not None:
                buf.append(ib)
                buf.extend(packed)
                return
        buf.append(0xFB)
        buf.extend(struct.pack(">d", obj))
    elif isinstance(obj, Tag):
        if not isinstance(obj.tag, int) or obj.tag < 0:
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
        data = self.data
        if ai < 24:
            return ai
        if ai == 24:
            self.need(1, what)
            v = data[self.pos]
            self.pos += 1
            return v
        if ai == 25:
            self.need(2, what)
            v = struct.unpack_from(">H", data, self.pos)[0]
            self.pos += 2
            return v
        if ai == 26:
            self.need(4, what)
            v = struct.unpack_from(">I", data, self.pos)[0]
            self.pos += 4
            return v
        if ai == 27:
            self.need(8, what)
            v = struct.unpack_from(">Q", data, self.pos)[0]
            self.pos += 8
            return v
        if ai == 31:
            raise CBORError("indefinite length at offset %d is not supported" % self.start)
        raise CBORError("reserved additional info %d at offset %d" % (ai, self.start))

    def item(self, depth):
        if depth > self.max_depth:
            raise CBORError("nesting deeper than %d at offset %d" % (self.max_depth, self.pos))
        start = self.start = self.pos
        self.need(1, "item")
        ib = self.data[start]
        self.pos += 1
        major = ib >> 5
        ai = ib & 0x1F
        if major == 0:
            return self.uint(ai, "integer")
        if major == 1:
            return -1 - self.uint(ai, "integer")
        if major == 2 or major == 3:
            n = self.uint(ai, "string length")
            self.need(n, "string")
            raw = bytes(self.data[self.pos : self.pos + n])
            self.pos += n
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except (UnicodeError, ValueError):
                raise CBORError("invalid UTF-8 in text string at offset %d" % start)
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
        if ai == 25:
            self.need(2, "half float")
            v = struct.unpack_from(">e", self.data, self.pos)[0]
            self.pos += 2
            return v
        if ai == 26:
            self.need(4, "float")
            v = struct.unpack_from(">f", self.data, self.pos)[0]
            self.pos += 4
            return v
        if ai == 27:
            self.need(8, "double")
            v = struct.unpack_from(">d", self.data, self.pos)[0]
            self.pos += 8
            return v
        raise CBORError("unsupported simple value %d at offset %d" % (ai, start))


def loads(data, max_depth=_MAX_DEPTH):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("expected bytes, got %s" % type(data).__name__)
    dec = _Decoder(data, max_depth)
    obj = dec.item(0)
    if dec.pos != len(data):
        raise CBORError("%d trailing bytes after item at offset %d" % (len(data) - dec.pos, dec.pos))
    return obj
