# The firmware switch: the set provisioning staged in fw_new/ becomes the running set, and the
# set it replaces moves to fw_old/ (the fallback), in a way a power cut at any point cannot
# break. provisioning (provisioning/console.py) stages a complete, self-tested set, then
# writes fw.switch (a new file renamed into place: that rename is the commit):
#   {"src": "fw_new", "keep": "fw_old", "set": [top-level names], "drop": [names]}
# "set" names the entries of the new set (launch.mpy, lib, hal, apps, boards, config.json,
# manifest.json, ...), "drop" the running set's entries the new one does not have. Each entry
# moves on its own: the running one to keep/, then the staged one into place; a move that was
# done is not done again, so run() finishes an interrupted switch. boot.py calls run() at
# every start, before main.py and before the raw REPL after a reset there, so nothing runs a
# half-switched set. A rollback is the same file with src and keep swapped. The app's data
# (data/: the outbox, the boot counter, the band clock) is never named, so never moved.
# fw.switch.tmp without fw.switch is a switch that was never committed: it is removed.
import os

MARK = "fw.switch"
# looked up at call time, so a test can cut the power between two moves
_rename = os.rename


def _exists(p):
    try:
        return os.stat(p)[0]
    except OSError:
        return 0


def rm(p):
    # a file or a whole directory tree; nothing if it is not there
    mode = _exists(p)
    if mode & 0x4000:
        for e in list(os.ilistdir(p)):
            rm(p + "/" + e[0])
        os.rmdir(p)
    elif mode:
        os.remove(p)


def run():
    # -> None when no switch was pending, else how many entries moved now
    try:
        with open(MARK) as f:
            import json

            m = json.load(f)
        src, keep, names, drop = m["src"], m["keep"], list(m["set"]), list(m["drop"])
    except OSError:
        rm(MARK + ".tmp")
        return None
    except (ValueError, KeyError, TypeError):
        os.remove(MARK)  # a committed plan is whole (renamed into place); this is not one
        rm(MARK + ".tmp")
        return None
    if not _exists(keep):
        os.mkdir(keep)
    n = 0
    for e in drop + names:
        new = e in names
        if not _exists(src + "/" + e if new else e):
            continue  # moved before a reset, or never there
        if _exists(e):
            rm(keep + "/" + e)
            _rename(e, keep + "/" + e)
        if new:
            _rename(src + "/" + e, e)
        n += 1
    os.remove(MARK)
    rm(src)
    return n
