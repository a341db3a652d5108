# Atomic records on the board's flash filesystem that survive a power cut at any point (the
# boot counter and the outbox of lib/store.py are made of them; a wristband's clock uses them
# alone, so it does not hold the outbox's code in its heap).
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

from clock import const

_MAGIC = b"GE"
_VERSION = const(1)
_HEAD = const(7)
_SUM = const(8)
_MAX_PAYLOAD = const(4096)
_TMP = ".tmp"
_ENOENT = const(2)
_EEXIST = const(17)

# the filesystem calls, looked up at call time so tests can stand in for a FAT filesystem or
# cut the power between two of them
_rename = os.rename
_remove = os.remove
_fsync = getattr(os, "fsync", None)


class StoreError(Exception):
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
        f = open(path, "rb")  # noqa: SIM115 - closed in the finally below; a missing file is told apart first
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
