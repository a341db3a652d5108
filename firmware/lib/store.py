# Persistence on the board's flash filesystem that survives a power cut at any point: atomic
# records, the boot counter and the outbox of events waiting for their receipts.
#
# Record (every file this module writes), integers big-endian:
#   0     2  magic b"GE"
#   2     1  format version (1)
#   3     4  payload length n
#   7     n  payload
#   7+n   8  SHA-256 over bytes 0 .. 7+n, first 8 bytes
# A file shorter or longer than its header says, or whose checksum differs, is a torn or
# corrupt write: it is never returned. (SHA-256 because hashlib.sha256 is on every port the
# firmware runs on, cose.py needs it anyway; binascii.crc32 is optional in MicroPython builds.)
#
# atomic_write(path, data) writes path.tmp, then renames it over path. Some filesystems (FAT)
# refuse to rename onto an existing file: then path is removed first, and a kill in between
# leaves only path.tmp. So a complete path.tmp is always the newest finished write whose
# rename did not happen, and recovery is one rule: a complete .tmp is renamed into place
# (by read(), by the next atomic_write() of that path before it reuses .tmp, and by the
# outbox at load); a torn one is ignored and overwritten.
#
# Nothing here syncs a directory: on boards the filesystem (littlefs, FAT) is consistent when
# close() returns; under CPython the file is fsync'ed (the unix port has no fsync).
import hashlib
import os
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAGIC = b"GE"
_VERSION = const(1)
_HEAD = const(7)
_SUM = const(8)
_MAX_PAYLOAD = const(4096)
_TMP = ".tmp"
_BAD = ".bad"
_ENOENT = const(2)
_EEXIST = const(17)
_DIR_BIT = const(0x4000)

# the filesystem calls, looked up at call time so tests can stand in for a FAT filesystem or
# cut the power between two of them
_rename = os.rename
_remove = os.remove
_fsync = getattr(os, "fsync", None)


class StoreError(Exception):
    pass


class OutboxFull(StoreError):
    pass


def _pack(payload):
    # the record in one buffer of its final size (the write needs it whole; no other copy)
    n = len(payload)
    rec = bytearray(_HEAD + n + _SUM)
    struct.pack_into(">2sBI", rec, 0, _MAGIC, _VERSION, n)
    rec[_HEAD : _HEAD + n] = payload
    h = hashlib.sha256(memoryview(rec)[: _HEAD + n])
    rec[_HEAD + n :] = h.digest()[:_SUM]
    return rec


def _load(path, limit=_MAX_PAYLOAD):
    # The payload of the complete record at path, or None when the file is missing, torn or
    # corrupt. Reads are sized to the record: the 7-byte header first, then exactly the
    # payload its length names (refused above `limit` before anything is allocated), then
    # the checksum and one byte more that must not be there. Nothing larger than the record
    # itself is allocated, so a board near its heap limit can still load its outbox.
    try:
        f = open(path, "rb")
    except OSError as e:
        if e.errno == _ENOENT:
            return None
        raise StoreError("cannot read %s: %r" % (path, e))
    try:
        head = f.read(_HEAD)
        if len(head) != _HEAD or head[:2] != _MAGIC or head[2] != _VERSION:
            return None
        n = struct.unpack_from(">I", head, 3)[0]
        if n > limit:
            return None
        payload = f.read(n) if n else b""
        if len(payload) != n:
            return None
        tail = f.read(_SUM + 1)
        if len(tail) != _SUM:
            return None
        h = hashlib.sha256(head)
        h.update(payload)
        if h.digest()[:_SUM] != tail:
            return None
        return payload
    except OSError as e:
        raise StoreError("cannot read %s: %r" % (path, e))
    finally:
        f.close()


def _write_file(path, data):
    try:
        with open(path, "wb") as f:
            n = f.write(data)
            f.flush()
            if _fsync is not None:
                _fsync(f.fileno())
    except OSError as e:
        raise StoreError("cannot write %s: %r" % (path, e))
    if n != len(data):
        raise StoreError("short write to %s: %d of %d bytes" % (path, n, len(data)))


def _exists(path):
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _replace(src, dst):
    try:
        _rename(src, dst)
        return
    except OSError as e:
        err = e
    # FAT and some other board filesystems refuse to rename onto an existing file
    if not _exists(dst):
        raise StoreError("cannot rename %s to %s: %r" % (src, dst, err))
    try:
        _remove(dst)
        # a kill here leaves only src, complete: read() renames it into place
        _rename(src, dst)
    except OSError as e:
        raise StoreError("cannot replace %s with %s: %r" % (dst, src, e))


def _discard(path):
    try:
        _remove(path)
    except OSError as e:
        if e.errno != _ENOENT:
            raise StoreError("cannot remove %s: %r" % (path, e))


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError as e:
        if e.errno != _EEXIST:
            raise StoreError("cannot create directory %s: %r" % (path, e))


def _settle(path, limit):
    # finish an interrupted atomic_write: a complete path.tmp goes into place; returns its
    # payload, or None when there is no complete .tmp
    tmp = path + _TMP
    data = _load(tmp, limit)
    if data is not None:
        _replace(tmp, path)
    return data


def atomic_write(path, data, limit=_MAX_PAYLOAD):
    if not isinstance(data, (bytes, bytearray)):
        raise StoreError("%s: data must be bytes, not %s" % (path, type(data).__name__))
    if len(data) > limit:
        raise StoreError("%s: %d bytes is over the %d byte limit" % (path, len(data), limit))
    # a complete .tmp left by a kill is the newest value: put it in place before reusing
    # .tmp, or a kill during this write would leave nothing complete
    _settle(path, _MAX_PAYLOAD)
    tmp = path + _TMP
    _write_file(tmp, _pack(data))
    _replace(tmp, path)


def read(path, limit=_MAX_PAYLOAD):
    # the payload last written to path, or None when there is none or it is torn or corrupt
    data = _settle(path, limit)
    if data is not None:
        return data
    return _load(path, limit)


class BootCounter:
    # The counter is kept in two records written one after the other, and the larger valid
    # one counts: a kill during either write leaves the other, and a slot that flash
    # corruption destroys does not send the counter back to a value already used (the
    # gateway would drop that boot's frames as replays).
    def __init__(self, root):
        _mkdir(root)
        self._slots = (root + "/boot.0", root + "/boot.1")
        self.value = 0  # the value the last next() returned
        self.damaged = 0  # slots found present but unreadable, since this object was made

    def next(self):
        n = 0
        for path in self._slots:
            data = read(path)
            if data is not None and len(data) == 4:
                v = struct.unpack(">I", data)[0]
                n = max(n, v)
            elif _exists(path):
                self.damaged += 1
        if n >= 0xFFFFFFFF:
            raise StoreError("%s: boot counter exhausted" % self._slots[0])
        n += 1
        rec = struct.pack(">I", n)
        for path in self._slots:
            atomic_write(path, rec)
        self.value = n
        return n


# Outbox entry file: <root>/outbox/<prio>-<boot:08x>-<seq:08x>.ent, so a directory listing
# sorts as (prio, boot, seq); a record whose payload is the entry header (prio u8, boot u32,
# seq u32, state u8, repeating the name so a misnamed file is caught) and the frame.
_ENT = ".ent"
_ENT_HEAD = ">BIIB"
_ENT_HEAD_LEN = const(10)
_NAME_LEN = const(23)
_MAX_PRIO = const(9)
_MAX_U32 = const(0xFFFFFFFF)


def _name(prio, boot, seq):
    return "%d-%08x-%08x%s" % (prio, boot, seq, _ENT)


def _parse_name(name):
    # (prio, boot, seq) from an entry file name, or None when it is not one
    if len(name) != _NAME_LEN or not name.endswith(_ENT):
        return None
    try:
        key = (int(name[0]), int(name[2:10], 16), int(name[11:19], 16))
    except ValueError:
        return None
    if _name(key[0], key[1], key[2]) != name:
        return None
    return key


def _uint(v, top):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top


# Events waiting for their receipts, one file per entry, written before the event is sent.
# state is the app's per-entry progress (e.g. 1 once receipt 1 says the gateway stored it);
# it only moves forward. The app removes the entry at receipt 2.
class Outbox:
    def __init__(self, root, capacity=32):
        if not _uint(capacity, 0xFFFF) or capacity < 1:
            raise StoreError("%s: bad outbox capacity %r" % (root, capacity))
        self.dir = root + "/outbox"
        self.capacity = capacity
        self.bad = 0  # corrupt files moved aside (renamed *.bad) at load
        self.torn = 0  # torn .tmp files (a write cut short) moved aside at load
        self._index = {}  # (boot, seq) -> [prio, state]
        _mkdir(root)
        _mkdir(self.dir)
        self._load()

    def _path(self, prio, boot, seq):
        return "%s/%s" % (self.dir, _name(prio, boot, seq))

    def _files(self):
        try:
            names = os.listdir(self.dir)
        except OSError as e:
            raise StoreError("cannot list %s: %r" % (self.dir, e))
        out = []
        for name in names:
            if name.endswith(_BAD):
                continue
            try:
                if os.stat(self.dir + "/" + name)[0] & _DIR_BIT:
                    continue
            except OSError:
                continue
            out.append(name)
        out.sort()
        return out

    def _aside(self, path):
        # keep a damaged file for inspection, out of the way; never delete it
        dst = path + _BAD
        i = 0
        while _exists(dst):
            i += 1
            dst = "%s.%d%s" % (path, i, _BAD)
        try:
            _rename(path, dst)
        except OSError as e:
            raise StoreError("cannot move %s aside: %r" % (path, e))

    def _load(self):
        # first finish interrupted writes: a complete .tmp replaces its entry, a torn one is
        # moved aside; then check every entry
        for name in self._files():
            if not name.endswith(_TMP):
                continue
            base = name[: -len(_TMP)]
            path = self.dir + "/" + name
            if _parse_name(base) is None:
                self._aside(path)
                self.bad += 1
            elif _settle(self.dir + "/" + base, _MAX_PAYLOAD) is None:
                self._aside(path)
                self.torn += 1
        for name in self._files():
            path = self.dir + "/" + name
            key = _parse_name(name)
            head = None
            if key is not None:
                data = _load(path)
                if data is not None and len(data) >= _ENT_HEAD_LEN:
                    head = struct.unpack_from(_ENT_HEAD, data, 0)
            if head is None or head[:3] != key or (key[1], key[2]) in self._index:
                # corrupt, misnamed, or a second file for an entry already loaded
                self._aside(path)
                self.bad += 1
                continue
            self._index[(key[1], key[2])] = [key[0], head[3]]

    def __len__(self):
        return len(self._index)

    def full(self):
        return len(self._index) >= self.capacity

    def items(self):
        # pending entries as (prio, boot, seq, state), priority 0 first, then (boot, seq)
        out = [(e[0], k[0], k[1], e[1]) for k, e in self._index.items()]
        out.sort()
        return out

    def state(self, boot, seq):
        e = self._index.get((boot, seq))
        return None if e is None else e[1]

    def frame(self, boot, seq):
        # the stored frame bytes, or None when there is no such entry
        e = self._index.get((boot, seq))
        if e is None:
            return None
        path = self._path(e[0], boot, seq)
        data = read(path)
        if data is None or len(data) < _ENT_HEAD_LEN:
            raise StoreError("%s: entry unreadable" % path)
        return data[_ENT_HEAD_LEN:]

    def put(self, boot, seq, prio, frame):
        if not (_uint(boot, _MAX_U32) and _uint(seq, _MAX_U32) and _uint(prio, _MAX_PRIO)):
            raise StoreError("%s: bad entry key boot=%r seq=%r prio=%r" % (self.dir, boot, seq, prio))
        if not isinstance(frame, (bytes, bytearray)) or not frame:
            raise StoreError("%s: frame must be non-empty bytes" % self.dir)
        if len(frame) > _MAX_PAYLOAD - _ENT_HEAD_LEN:
            raise StoreError("%s: frame of %d bytes is too large" % (self.dir, len(frame)))
        key = (boot, seq)
        if key in self._index:
            raise StoreError("%s: entry %d/%d already stored" % (self.dir, boot, seq))
        if len(self._index) >= self.capacity:
            raise OutboxFull("%s: full (%d entries)" % (self.dir, len(self._index)))
        atomic_write(self._path(prio, boot, seq), struct.pack(_ENT_HEAD, prio, boot, seq, 0) + frame)
        self._index[key] = [prio, 0]

    def mark(self, boot, seq, state):
        # records the entry's state (e.g. stored at the gateway); never moves it backwards.
        # Returns True when the state changed.
        if not _uint(state, 255):
            raise StoreError("%s: bad state %r" % (self.dir, state))
        e = self._index.get((boot, seq))
        if e is None or state <= e[1]:
            return False
        frame = self.frame(boot, seq)
        atomic_write(self._path(e[0], boot, seq), struct.pack(_ENT_HEAD, e[0], boot, seq, state) + frame)
        e[1] = state
        return True

    def remove(self, boot, seq):
        # Returns False when there was no such entry. A leftover .tmp goes first, so that once
        # the entry file is gone nothing can bring it back.
        e = self._index.get((boot, seq))
        if e is None:
            return False
        path = self._path(e[0], boot, seq)
        _discard(path + _TMP)
        _discard(path)
        del self._index[(boot, seq)]
        return True
