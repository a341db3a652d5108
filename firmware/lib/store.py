# Persistence on the board's flash filesystem that survives a power cut at any point: the
# boot counter and the outbox of events waiting for their receipts, made of lib/record.py's
# atomic records (whose names this module also offers: atomic_write, read, StoreError).
# Filesystem calls go through record's module-level names (record._rename, ...), which tests
# replace to stand in for a FAT filesystem or to cut the power between two of them.
import os
import struct

import record
from clock import const
from record import StoreError, atomic_write, read


class OutboxFull(StoreError):
    pass


_TMP = ".tmp"
_BAD = ".bad"
_DIR_BIT = const(0x4000)
_MAX_PAYLOAD = const(4096)


class BootCounter:
    # The counter is kept in two records written one after the other, and the larger valid
    # one counts: a kill during either write leaves the other, and a slot that flash
    # corruption destroys does not send the counter back to a value already used (the
    # gateway would drop that boot's frames as replays).
    def __init__(self, root):
        record._mkdir(root)
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
            elif record._exists(path):
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
        record._mkdir(root)
        record._mkdir(self.dir)
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
        while record._exists(dst):
            i += 1
            dst = "%s.%d%s" % (path, i, _BAD)
        try:
            record._rename(path, dst)
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
            elif record._settle(self.dir + "/" + base, _MAX_PAYLOAD) is None:
                self._aside(path)
                self.torn += 1
        for name in self._files():
            path = self.dir + "/" + name
            key = _parse_name(name)
            head = None
            if key is not None:
                data = record._load(path)
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

    def prio(self, boot, seq):
        e = self._index.get((boot, seq))
        return None if e is None else e[0]

    def least(self, prio):
        # the lowest state among the entries of priority prio (e.g. an alarm not at the
        # gateway yet), None when there are none
        low = None
        for p, st in self._index.values():
            if p == prio and (low is None or st < low):
                low = st
        return low

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
        record._discard(path + _TMP)
        record._discard(path)
        del self._index[(boot, seq)]
        return True
