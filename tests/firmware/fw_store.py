# Flash store: atomic records, boot counter, outbox; torn and corrupt files; a FAT-like
# filesystem; a power cut between any two filesystem calls. Runs on MicroPython and CPython.
# (tests/test_store_power_cut.py kills real processes on top of this.)
import hashlib
import os

import record
import store
from fwsupport import raises, rmtree, scratch_dir

_REAL_RENAME = os.rename
_REAL_REMOVE = os.remove


def _fresh(name):
    rmtree(scratch_dir(name))
    return scratch_dir(name)


def _put_raw(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _get_raw(path):
    with open(path, "rb") as f:
        return f.read()


def _exists(path):
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _discard(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _ls(d):
    return sorted(os.listdir(d))


def _frame(boot, seq, n=None):
    # deterministic frame bytes for an entry, 1 to 512 bytes
    if n is None:
        n = 1 + (boot * 131 + seq * 17) % 512
    block = hashlib.sha256(b"%d/%d" % (boot, seq)).digest()
    return (block * (n // 32 + 1))[:n]


class _Cut(Exception):
    # the power went: not an OSError, so nothing in store.py catches it
    pass


class _Fs:
    # Stands in for store.py's filesystem calls. fat: rename onto an existing file fails, as
    # on FAT. cut_at: the power goes at that call (counting renames, removes and the two
    # halves of every file write, so a cut can leave a torn file).
    def __init__(self, fat=False, cut_at=0):
        self.fat = fat
        self.cut_at = cut_at
        self.calls = 0

    def _step(self):
        self.calls += 1
        if self.calls == self.cut_at:
            raise _Cut()

    def rename(self, src, dst):
        self._step()
        if self.fat and _exists(dst):
            raise OSError(17)
        _REAL_RENAME(src, dst)

    def remove(self, path):
        self._step()
        _REAL_REMOVE(path)

    def write_file(self, path, data):
        self._step()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            self._step()
            f.write(data[len(data) // 2 :])

    def __enter__(self):
        self._saved = (record._rename, record._remove, record._write_file)
        record._rename = self.rename
        record._remove = self.remove
        record._write_file = self.write_file
        return self

    def __exit__(self, *exc):
        record._rename, record._remove, record._write_file = self._saved
        return False


# --- records -------------------------------------------------------------------------


def test_record_layout_pinned():
    d = _fresh("st_layout")
    record.atomic_write(d + "/r", b"abc")
    # magic "GE", version 1, length 3, "abc", SHA-256 of everything before, first 8 bytes
    assert _get_raw(d + "/r").hex() == "474501000000036162638da69a7f199353f1"
    assert _ls(d) == ["r"]


def test_record_round_trip():
    d = _fresh("st_round")
    for n in (0, 1, 7, 100, 1000, 4096):
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        record.atomic_write(d + "/r", data)
        assert record.read(d + "/r") == data, n
    record.atomic_write(d + "/r", bytearray(b"ba"))
    assert record.read(d + "/r") == b"ba"
    assert _ls(d) == ["r"]


def test_read_missing_is_none():
    d = _fresh("st_missing")
    assert record.read(d + "/nothing") is None


def test_write_misuse_raises_with_path():
    d = _fresh("st_misuse")
    exc = raises(store.StoreError, record.atomic_write, d + "/r", b"x" * 4097)
    assert d + "/r" in str(exc), str(exc)
    exc = raises(store.StoreError, record.atomic_write, d + "/r", "text")
    assert d + "/r" in str(exc), str(exc)
    exc = raises(store.StoreError, record.atomic_write, d + "/no/such/dir/r", b"x")
    assert d + "/no/such/dir/r" in str(exc), str(exc)
    assert _ls(d) == []


def test_corrupt_records_never_returned():
    d = _fresh("st_corrupt")
    p = d + "/r"
    record.atomic_write(p, b"payload")
    good = _get_raw(p)
    bad = [b"", b"G", b"GE", good[:-1], good + b"\x00", b"\x00" * len(good), b"garbage" * 5]
    for i in range(len(good)):
        for bit in (0x01, 0x80):
            flipped = bytearray(good)
            flipped[i] ^= bit
            bad.append(bytes(flipped))
    bad.append(good[:2] + b"\x02" + good[3:])  # unknown version
    bad.append(good[:3] + b"\xff\xff\xff\xff" + good[7:])  # length beyond the file
    for data in bad:
        _put_raw(p, data)
        assert record.read(p) is None, data


def test_oversized_file_not_read_whole():
    d = _fresh("st_big")
    _put_raw(d + "/r", b"GE\x01" + b"\x00" * 20000)
    assert record.read(d + "/r") is None
    record.atomic_write(d + "/r", b"x" * 100)
    assert record.read(d + "/r", 99) is None
    assert record.read(d + "/r", 100) == b"x" * 100


class _Sizes:
    # stands in for open() in store: records how many bytes each read asks for
    def __init__(self):
        self.asked = []

    def __call__(self, path, mode="r"):
        return _SizedFile(open(path, mode), self.asked)


class _SizedFile:
    def __init__(self, f, asked):
        self._f = f
        self._asked = asked

    def read(self, n=-1):
        self._asked.append(n)
        return self._f.read(n)

    def write(self, data):
        return self._f.write(data)

    def flush(self):
        self._f.flush()

    def fileno(self):
        return self._f.fileno()

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def test_reads_are_sized_to_the_record():
    # a board near its heap limit must not need a buffer larger than the record it loads
    d = _fresh("st_sized")
    sizes = _Sizes()
    record.open = sizes
    try:
        for n in (0, 1, 40, 300):
            record.atomic_write(d + "/r", bytes(n))
            del sizes.asked[:]
            assert record.read(d + "/r") == bytes(n)
            assert sizes.asked and max(sizes.asked) <= max(n, 9), (n, sizes.asked)
            assert -1 not in sizes.asked, sizes.asked
        # a header naming more than the limit: nothing of that size is asked for
        _put_raw(d + "/r", b"GE\x01\x00\x10\x00\x00" + bytes(64))
        del sizes.asked[:]
        assert record.read(d + "/r") is None
        assert max(sizes.asked) <= 9, sizes.asked
        # outbox load and frame reads too
        ob = store.Outbox(d + "/ob", 4)
        ob.put(1, 2, 0, b"f" * 50)
        del sizes.asked[:]
        ob = store.Outbox(d + "/ob", 4)
        assert ob.frame(1, 2) == b"f" * 50
        assert max(sizes.asked) <= 60, sizes.asked
    finally:
        del record.open


def test_torn_tmp_ignored_at_every_length():
    d = _fresh("st_torn")
    p = d + "/r"
    record.atomic_write(p, b"old value")
    rec = record._pack(b"the new value")
    for n in range(len(rec)):
        _put_raw(p + ".tmp", rec[:n])
        assert record.read(p) == b"old value", n
    # the next write just overwrites the torn .tmp
    record.atomic_write(p, b"newer")
    assert record.read(p) == b"newer"
    assert _ls(d) == ["r"]


def test_complete_tmp_is_put_in_place():
    d = _fresh("st_tmp")
    p = d + "/r"
    # the rename never happened (a kill, or FAT between remove and rename): path is missing
    _put_raw(p + ".tmp", record._pack(b"finished"))
    assert record.read(p) == b"finished"
    assert _ls(d) == ["r"]
    # an older path next to it: the .tmp is the newer finished write
    _put_raw(p + ".tmp", record._pack(b"newer"))
    assert record.read(p) == b"newer"
    assert _ls(d) == ["r"]
    assert record.read(p) == b"newer"


def test_write_after_cut_keeps_the_complete_tmp():
    # path missing, a complete .tmp (cut between FAT's remove and rename); the next write is
    # cut while writing .tmp: the complete value must not be lost with it
    d = _fresh("st_keep")
    p = d + "/r"
    for fat in (False, True):
        cut = 1
        while True:
            _discard(p)
            _put_raw(p + ".tmp", record._pack(b"committed"))
            done = False
            try:
                with _Fs(fat=fat, cut_at=cut):
                    record.atomic_write(p, b"next")
                done = True
            except _Cut:
                pass
            got = record.read(p)
            want = (b"next",) if done else (b"committed", b"next")
            assert got in want, (fat, cut, got)
            if done:
                break
            cut += 1
        assert cut > 3, cut


def test_fat_fallback_remove_then_rename():
    d = _fresh("st_fat")
    p = d + "/r"
    with _Fs(fat=True) as fs:
        record.atomic_write(p, b"one")
        record.atomic_write(p, b"two")
        record.atomic_write(p, b"three")
        assert fs.calls > 0
    assert record.read(p) == b"three"
    assert _ls(d) == ["r"]
    # a rename that fails for another reason (no such source) is an error naming the path
    with _Fs(fat=True):
        exc = raises(store.StoreError, record._replace, d + "/none", d + "/r")
    assert d + "/none" in str(exc), str(exc)


def test_fat_cut_between_remove_and_rename():
    d = _fresh("st_fatcut")
    p = d + "/r"
    record.atomic_write(p, b"old")
    # calls: write (2 halves), rename (refused), remove, rename: cut at the last one
    try:
        with _Fs(fat=True, cut_at=5):
            record.atomic_write(p, b"new")
    except _Cut:
        pass
    else:
        raise AssertionError("no cut")
    assert _ls(d) == ["r.tmp"]
    assert record.read(p) == b"new"
    assert _ls(d) == ["r"]


# --- boot counter --------------------------------------------------------------------


def test_boot_counter_counts_across_reboots():
    d = _fresh("st_boot")
    assert store.BootCounter(d).next() == 1
    assert store.BootCounter(d).next() == 2
    bc = store.BootCounter(d)
    assert bc.value == 0
    assert bc.next() == 3
    assert bc.value == 3
    assert bc.next() == 4
    assert store.BootCounter(d).next() == 5
    assert _ls(d) == ["boot.0", "boot.1"]


def test_boot_counter_creates_its_directory():
    d = _fresh("st_bootdir") + "/flash"
    assert store.BootCounter(d).next() == 1
    assert store.BootCounter(d).next() == 2


def test_boot_counter_one_damaged_slot():
    for slot in ("boot.0", "boot.1"):
        d = _fresh("st_bootdmg")
        for _ in range(5):
            store.BootCounter(d).next()
        for junk in (b"", b"garbage", _get_raw(d + "/" + slot)[:-1]):
            _put_raw(d + "/" + slot, junk)
            bc = store.BootCounter(d)
            v = bc.next()
            assert v > 5 and bc.damaged == 1, (slot, junk, v, bc.damaged)
        assert store.BootCounter(d).next() == 9


def test_boot_counter_survives_a_cut_at_every_step():
    for fat in (False, True):
        cut = 1
        while True:
            d = _fresh("st_bootcut")
            returned = [store.BootCounter(d).next(), store.BootCounter(d).next()]
            done = False
            try:
                with _Fs(fat=fat, cut_at=cut):
                    returned.append(store.BootCounter(d).next())
                done = True
            except _Cut:
                pass
            v = store.BootCounter(d).next()
            assert v > max(returned), (fat, cut, returned, v)
            assert store.BootCounter(d).next() == v + 1
            if done:
                break
            cut += 1
        # two slots, each: two write halves and a rename (FAT: + refused rename and remove)
        assert cut == (11 if fat else 7), (fat, cut)


def _lcg(state):
    return (state * 1103515245 + 12345) & 0x7FFFFFFF


def test_boot_counter_random_cuts_in_a_row():
    # boots cut again and again, also during the recovery of the previous cut
    seed = int(os.getenv("GE_SEED") or "20240611")
    print("seed %d" % seed)
    r = seed
    for fat in (False, True):
        d = _fresh("st_bootrand")
        top = 0
        for _ in range(150):
            r = _lcg(r)
            cut = 1 + (r >> 8) % 12
            try:
                with _Fs(fat=fat, cut_at=cut):
                    v = store.BootCounter(d).next()
            except _Cut:
                continue
            assert v > top, (seed, fat, v, top)
            top = v
        assert top > 20, top


# --- outbox --------------------------------------------------------------------------


def _dump(ob):
    return [(p, b, s, st, ob.frame(b, s)) for p, b, s, st in ob.items()]


def test_outbox_round_trip_and_reload():
    d = _fresh("st_ob")
    ob = store.Outbox(d)
    assert len(ob) == 0 and ob.items() == [] and not ob.full()
    ob.put(1, 1, 0, _frame(1, 1))
    ob.put(1, 2, 2, bytearray(_frame(1, 2)))
    ob.put(1, 3, 1, _frame(1, 3, 512))
    assert len(ob) == 3
    assert ob.frame(1, 2) == _frame(1, 2)
    assert ob.frame(1, 3) == _frame(1, 3, 512)
    assert ob.frame(9, 9) is None and ob.state(9, 9) is None
    want = _dump(ob)
    again = store.Outbox(d)
    assert _dump(again) == want
    assert again.bad == 0 and again.torn == 0
    assert _ls(d + "/outbox") == ["0-00000001-00000001.ent", "1-00000001-00000003.ent", "2-00000001-00000002.ent"]


def test_outbox_entry_file_pinned():
    d = _fresh("st_obpin")
    store.Outbox(d).put(0x0102, 0x030405, 1, b"\xd1\x84")
    raw = _get_raw(d + "/outbox/1-00000102-00030405.ent")
    # a record whose payload is prio, boot, seq, state, then the frame
    want = "4745010000000c" + "01" + "00000102" + "00030405" + "00" + "d184"
    assert raw[:19].hex() == want, raw.hex()
    assert raw[19:] == hashlib.sha256(raw[:19]).digest()[:8] and len(raw) == 27


def test_outbox_order():
    d = _fresh("st_order")
    ob = store.Outbox(d, capacity=64)
    keys = []
    for boot in (3, 1, 2):
        for seq in (5, 1, 300, 2):
            prio = (boot + seq) % 3
            keys.append((prio, boot, seq))
            ob.put(boot, seq, prio, _frame(boot, seq))
    keys.sort()
    assert [k[:3] for k in ob.items()] == keys
    assert [k[:3] for k in store.Outbox(d).items()] == keys
    # the directory listing sorts the same way
    assert [store._parse_name(n) for n in _ls(d + "/outbox")] == keys


def test_outbox_capacity():
    d = _fresh("st_cap")
    ob = store.Outbox(d, capacity=3)
    for seq in (1, 2, 3):
        assert not ob.full()
        ob.put(1, seq, 2, _frame(1, seq))
    assert ob.full() and len(ob) == 3
    exc = raises(store.OutboxFull, ob.put, 1, 4, 0, _frame(1, 4))
    assert isinstance(exc, store.StoreError)
    assert len(ob) == 3 and ob.frame(1, 4) is None
    assert ob.remove(1, 2)
    assert not ob.full()
    ob.put(1, 4, 0, _frame(1, 4))
    assert ob.full()
    # reopened with a smaller capacity it keeps every entry, and is full
    small = store.Outbox(d, capacity=1)
    assert len(small) == 3 and small.full()
    raises(store.OutboxFull, small.put, 1, 5, 0, _frame(1, 5))


def test_outbox_remove():
    d = _fresh("st_rm")
    ob = store.Outbox(d)
    ob.put(1, 1, 0, _frame(1, 1))
    ob.put(1, 2, 0, _frame(1, 2))
    assert ob.remove(1, 1) is True
    assert ob.remove(1, 1) is False
    assert ob.remove(7, 7) is False
    assert [i[:3] for i in store.Outbox(d).items()] == [(0, 1, 2)]
    # the file vanished behind the outbox's back: removing is still harmless
    os.remove(d + "/outbox/0-00000001-00000002.ent")
    assert ob.remove(1, 2) is True
    assert len(store.Outbox(d)) == 0


def test_outbox_mark_persists_and_never_goes_back():
    d = _fresh("st_mark")
    ob = store.Outbox(d)
    ob.put(4, 1, 0, _frame(4, 1))
    ob.put(4, 2, 0, _frame(4, 2))
    assert ob.state(4, 1) == 0
    assert ob.mark(4, 1, 1) is True
    assert ob.mark(4, 1, 1) is False
    assert ob.mark(4, 1, 0) is False
    assert ob.mark(9, 9, 1) is False
    assert ob.state(4, 1) == 1
    again = store.Outbox(d)
    assert again.items() == [(0, 4, 1, 1), (0, 4, 2, 0)]
    assert again.frame(4, 1) == _frame(4, 1)
    assert again.mark(4, 1, 2) is True
    assert store.Outbox(d).state(4, 1) == 2
    assert _ls(d + "/outbox") == ["0-00000004-00000001.ent", "0-00000004-00000002.ent"]


def test_outbox_prio_and_least_state_of_a_priority():
    d = _fresh("st_prio")
    ob = store.Outbox(d)
    assert ob.prio(4, 1) is None and ob.least(0) is None
    ob.put(4, 1, 0, _frame(4, 1))
    ob.put(4, 2, 1, _frame(4, 2))
    ob.put(4, 3, 0, _frame(4, 3))
    assert (ob.prio(4, 1), ob.prio(4, 2), ob.prio(4, 3), ob.prio(9, 9)) == (0, 1, 0, None)
    assert (ob.least(0), ob.least(1), ob.least(2)) == (0, 0, None)
    ob.mark(4, 1, 1)
    assert ob.least(0) == 0  # 4/3 has no receipt yet
    ob.mark(4, 3, 2)
    assert (ob.least(0), ob.least(1)) == (1, 0)
    ob.remove(4, 1)
    again = store.Outbox(d)
    assert (again.least(0), again.prio(4, 3), again.prio(4, 1)) == (2, 0, None)


def test_outbox_mark_on_fat():
    d = _fresh("st_markfat")
    with _Fs(fat=True):
        ob = store.Outbox(d)
        ob.put(1, 1, 0, _frame(1, 1))
        ob.mark(1, 1, 1)
        ob.mark(1, 1, 2)
    assert store.Outbox(d).items() == [(0, 1, 1, 2)]


def test_outbox_misuse_raises():
    d = _fresh("st_obmisuse")
    ob = store.Outbox(d, capacity=4)
    f = _frame(1, 1)
    for args in (
        (-1, 1, 0, f),
        (1, -1, 0, f),
        (1 << 32, 1, 0, f),
        (1, 1 << 32, 0, f),
        (1, 1, 10, f),
        (1, 1, -1, f),
        (True, 1, 0, f),
        (1, 1, 0, b""),
        (1, 1, 0, "frame"),
        (1, 1, 0, b"x" * 4087),
    ):
        exc = raises(store.StoreError, ob.put, *args)
        assert d + "/outbox" in str(exc), str(exc)
    ob.put(0xFFFFFFFF, 0xFFFFFFFF, 9, b"x" * 4086)
    ob.put(1, 1, 0, f)
    raises(store.StoreError, ob.put, 1, 1, 1, f)
    raises(store.StoreError, ob.mark, 1, 1, 256)
    raises(store.StoreError, ob.mark, 1, 1, -1)
    raises(store.StoreError, store.Outbox, d, 0)
    assert _dump(store.Outbox(d)) == [(0, 1, 1, 0, f), (9, 0xFFFFFFFF, 0xFFFFFFFF, 0, b"x" * 4086)]


def test_outbox_damaged_files_moved_aside():
    d = _fresh("st_damage")
    ob = store.Outbox(d)
    for seq in range(1, 8):
        ob.put(2, seq, 0, _frame(2, seq))
    od = d + "/outbox/"
    n = store._name
    good = _get_raw(od + n(0, 2, 1))
    flipped = bytearray(_get_raw(od + n(0, 2, 2)))
    flipped[12] ^= 0x10
    _put_raw(od + n(0, 2, 2), flipped)  # checksum mismatch
    _put_raw(od + n(0, 2, 3), b"")  # empty
    _put_raw(od + n(0, 2, 4), b"\xff" * 64)  # garbage
    _put_raw(od + n(1, 2, 1), good)  # a good record under the wrong name
    # a well-formed second file for entry (2, 6), under another priority
    _put_raw(od + n(1, 2, 6), record._pack(b"\x01\x00\x00\x00\x02\x00\x00\x00\x06\x00dup"))
    _put_raw(od + "notes.txt", b"hello")  # not an outbox file at all
    _put_raw(od + n(0, 2, 5) + ".tmp", record._pack(b"x" * 30)[:20])  # torn rewrite
    _put_raw(od + n(0, 2, 9) + ".tmp", b"")  # torn new entry
    _put_raw(od + "stray.tmp", b"")  # a .tmp of nothing of ours
    os.mkdir(od + "sub")  # directories are left alone
    again = store.Outbox(d)
    assert [i[:3] for i in again.items()] == [(0, 2, 1), (0, 2, 5), (0, 2, 6), (0, 2, 7)]
    for _, b, s, _, fr in _dump(again):
        assert fr == _frame(b, s), (b, s)
    assert again.bad == 7, again.bad
    assert again.torn == 2, again.torn
    names = _ls(d + "/outbox")
    for bad in (n(0, 2, 2), n(0, 2, 3), n(0, 2, 4), n(1, 2, 1), n(1, 2, 6), "notes.txt", "stray.tmp"):
        assert bad + ".bad" in names and bad not in names, (bad, names)
    for torn in (n(0, 2, 5), n(0, 2, 9)):
        assert torn + ".tmp.bad" in names and torn + ".tmp" not in names, (torn, names)
    assert _get_raw(od + n(0, 2, 2) + ".bad") == bytes(flipped)
    # loading again finds nothing new; a second damaged file with the same name is kept too
    assert store.Outbox(d).bad == 0
    _put_raw(od + n(0, 2, 3), b"again")
    third = store.Outbox(d)
    assert third.bad == 1 and len(third) == 4
    assert _get_raw(od + n(0, 2, 3) + ".1.bad") == b"again"
    assert _get_raw(od + n(0, 2, 3) + ".bad") == b""


def test_outbox_complete_tmp_finishes_the_put():
    # cut after the .tmp was written, before the rename: the entry is complete, it counts
    d = _fresh("st_obtmp")
    store.Outbox(d).put(3, 1, 0, _frame(3, 1))
    od = d + "/outbox/"
    rec = record._pack(b"\x01\x00\x00\x00\x03\x00\x00\x00\x02\x00" + _frame(3, 2))
    _put_raw(od + store._name(1, 3, 2) + ".tmp", rec)
    ob = store.Outbox(d)
    assert _dump(ob) == [(0, 3, 1, 0, _frame(3, 1)), (1, 3, 2, 0, _frame(3, 2))]
    assert ob.bad == 0 and ob.torn == 0
    assert _ls(d + "/outbox") == [store._name(0, 3, 1), store._name(1, 3, 2)]


def _outbox_cut_case(op, fat, cut):
    # a committed outbox, then op cut at call `cut`; returns (finished, outbox after reboot)
    d = _fresh("st_obcut")
    ob = store.Outbox(d)
    ob.put(1, 1, 0, _frame(1, 1))
    ob.put(1, 2, 1, _frame(1, 2))
    ob.mark(1, 2, 1)
    done = False
    try:
        with _Fs(fat=fat, cut_at=cut):
            if op == "put":
                ob.put(1, 3, 0, _frame(1, 3))
            elif op == "mark":
                ob.mark(1, 1, 1)
            else:
                ob.remove(1, 2)
        done = True
    except _Cut:
        pass
    return done, store.Outbox(d)


def test_outbox_survives_a_cut_at_every_step():
    for op in ("put", "mark", "remove"):
        for fat in (False, True):
            cut = 1
            while True:
                done, ob = _outbox_cut_case(op, fat, cut)
                where = (op, fat, cut)
                assert ob.bad == 0, where
                got = _dump(ob)
                for _, b, s, _, fr in got:
                    assert fr == _frame(b, s), where
                keys = [(p, b, s, st) for p, b, s, st, _ in got]
                base = [(0, 1, 1, 0), (1, 1, 2, 1)]
                if op == "put":
                    after = [(0, 1, 1, 0), (0, 1, 3, 0), (1, 1, 2, 1)]
                elif op == "mark":
                    after = [(0, 1, 1, 1), (1, 1, 2, 1)]
                else:
                    after = [(0, 1, 1, 0)]
                assert keys == after or (not done and keys == base), (where, keys)
                if done:
                    assert keys == after, where
                    break
                cut += 1
            assert cut > 1, (op, fat)
