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
_DIR = 0x4000
# looked up at call time, so a test can cut the power between two moves
_rename = os.rename


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def rm(p):
    # a file or a whole directory tree; nothing if it is not there
    try:
        mode = os.stat(p)[0]
    except OSError:
        return
    if mode & _DIR:
        for e in list(os.ilistdir(p)):
            rm(p + "/" + e[0])
        os.rmdir(p)
    else:
        os.remove(p)


def _plan():
    try:
        with open(MARK) as f:
            import json

            m = json.load(f)
    except OSError:
        return None
    return m["src"], m["keep"], list(m["set"]), list(m["drop"])


def _keep(e, keep):
    rm(keep + "/" + e)
    _rename(e, keep + "/" + e)


def run():
    # -> None when no switch was pending, else how many entries moved now
    try:
        plan = _plan()
    except (ValueError, KeyError, TypeError):
        plan = None  # a committed plan is whole (renamed into place); this is not one
        os.remove(MARK)
    if plan is None:
        rm(MARK + ".tmp")
        return None
    src, keep, names, drop = plan
    if not _exists(keep):
        os.mkdir(keep)
    n = 0
    for e in drop:
        if _exists(e):
            _keep(e, keep)
            n += 1
    for e in names:
        s = src + "/" + e
        if _exists(s):
            if _exists(e):
                _keep(e, keep)
            _rename(s, e)
            n += 1
    os.remove(MARK)
    rm(src)
    return n
