# Child process for tests/test_store_power_cut.py; runs under MicroPython and CPython with
# firmware/lib on the path:  <interpreter> store_powercut.py ROOT FS PAUSE_AT SEED
# FS is "rename" (rename replaces an existing file) or "fat" (rename onto an existing file
# fails, as on FAT, so store.py falls back to remove + rename).
# PAUSE_AT > 0: count the filesystem steps (each rename, each remove, each half of a file
# write) and stop just before step PAUSE_AT, printing "pause", until the parent kills us; the
# half-written file of a "write2" pause is torn. PAUSE_AT = 0: run freely, the parent kills
# us when it likes.
# Every line says what has happened, flushed before the next step:
#   start | boot B DAMAGED | load N BAD TORN | have PRIO BOOT SEQ STATE LEN SHA | ready
#   > put BOOT SEQ PRIO | > mark BOOT SEQ STATE | > rm BOOT SEQ   (an operation begins)
#   < ok | < full N                                             (it completed)
#   pause STEP WHAT | end
import hashlib
import os
import sys

import record
import store

CAPACITY = 8
MAX_OPS = 2000


def out(*fields):
    print(" ".join(str(f) for f in fields))
    sys.stdout.flush()


def frame(boot, seq):
    # the same bytes as tests/test_store_power_cut.py expects, 1 to 512 of them
    n = 1 + (boot * 131 + seq * 17) % 512
    block = hashlib.sha256(str(boot).encode() + b"/" + str(seq).encode()).digest()
    return (block * (n // 32 + 1))[:n]


def digest(data):
    return hashlib.sha256(data).digest()[:8].hex()


class Steps:
    def __init__(self, fat, pause_at):
        self.fat = fat
        self.pause_at = pause_at
        self.n = 0
        self.rename = record._rename
        self.remove = record._remove

    def step(self, what):
        self.n += 1
        if self.n == self.pause_at:
            out("pause", self.n, what)
            sys.stdin.readline()  # the parent kills us here

    def do_rename(self, src, dst):
        self.step("rename")
        if self.fat:
            try:
                os.stat(dst)
            except OSError:
                pass
            else:
                raise OSError(17)
        self.rename(src, dst)

    def do_remove(self, path):
        self.step("remove")
        self.remove(path)

    def do_write(self, path, data):
        self.step("write1")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            self.step("write2")
            f.write(data[len(data) // 2 :])

    def install(self):
        record._rename = self.do_rename
        if self.pause_at:
            record._remove = self.do_remove
            record._write_file = self.do_write


def main():
    root = sys.argv[1]
    fat = sys.argv[2] == "fat"
    pause_at = int(sys.argv[3])
    seed = int(sys.argv[4])
    Steps(fat, pause_at).install()
    out("start")
    bc = store.BootCounter(root)
    boot = bc.next()
    out("boot", boot, bc.damaged)
    ob = store.Outbox(root, CAPACITY)
    out("load", len(ob), ob.bad, ob.torn)
    for prio, b, s, st in ob.items():
        fr = ob.frame(b, s)
        out("have", prio, b, s, st, len(fr), digest(fr))
    out("ready")
    r = (seed + boot * 7919) & 0x7FFFFFFF
    seq = 0
    for _ in range(MAX_OPS):
        r = (r * 1103515245 + 12345) & 0x7FFFFFFF
        pick = r >> 8
        items = ob.items()
        if not items or pick % 10 < 5:
            seq += 1
            prio = pick % 3
            out(">", "put", boot, seq, prio)
            try:
                ob.put(boot, seq, prio, frame(boot, seq))
            except store.OutboxFull:
                out("<", "full", len(ob))
                continue
            out("<", "ok")
            continue
        _, b, s, st = items[pick % len(items)]
        if st < 2 and pick % 3:
            out(">", "mark", b, s, st + 1)
            ob.mark(b, s, st + 1)
        else:
            out(">", "rm", b, s)
            ob.remove(b, s)
        out("<", "ok")
    out("end")


main()
