"""One board on a serial console: what the flash transaction can do to it (provisioning/rawrepl.py
carries each command, checked end to end, over a line that may lose bytes).

The board's flash, as provisioning leaves it:

    boot.py main.py fwswitch.mpy   the loader: started by name, never part of a set; boot.py
                                   finishes an interrupted switch (firmware/fwswitch.py)
    launch.mpy selftest.mpy lib/ hal/ apps/ boards/ config.json manifest.json
                                   the running set: what the board starts
    fw_new/                        a set being staged: complete, then self-tested, before the
                                   switch; never started
    fw.switch                      the commit: its rename into place makes fw_new/ the running
                                   set (entry by entry, finished by boot.py after a power cut)
    fw_old/                        the set the last switch replaced: the fallback
    data/                          the app's own data (outbox, boot counter, band clock):
                                   never named by a set, so never touched

Every failure before the switch leaves the running set as it was; a board abandoned in the
raw REPL restarts into it (its watchdog lease, provisioning/rawrepl.py, or a power cycle).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from provisioning.errors import DeviceError
from provisioning.rawrepl import BoardCommandError, BoardGone, LineError, RawRepl

# directories a set owns; files there that the set does not list are stale (a stale lib/x.py
# would shadow lib/x.mpy: MicroPython imports .py first; boards/ holds the one board file)
MANAGED_DIRS = ("lib", "hal", "apps", "boards")
STAGE = "fw_new"
FALLBACK = "fw_old"
MARK = "fw.switch"
LOADER = ("boot.py", "main.py", "fwswitch.mpy")
CONFIG = "config.json"
MANIFEST = "manifest.json"
DATA = "data"
# root entries that never belong to a set
NOT_A_SET = (*LOADER, DATA, STAGE, FALLBACK, MARK, MARK + ".tmp", "selftest.tmp")
CHUNK = 512  # bytes of a file per command (about 700 on the line)

_HELPERS = """\
import os
def _gst(p):
 try:
  return os.stat(p)
 except OSError:
  return None
def _gh(p):
 h = _h.sha256()
 b = bytearray(512)
 f = open(p, 'rb')
 try:
  while 1:
   n = f.readinto(b)
   if not n:
    break
   h.update(memoryview(b)[:n])
 finally:
  f.close()
 return _b.hexlify(h.digest()).decode()
def _gt(d, deep):
 out = []
 for e in (os.ilistdir(d) if d else os.ilistdir()):
  p = d + '/' + e[0] if d else e[0]
  if e[1] & 0x4000:
   if deep:
    out.append(_gt(p, 1))
   else:
    out.append(p + '/')
  else:
   out.append(p + ' ' + _gh(p)[:16])
 return ';'.join(x for x in out if x)
def _gmk(p):
 q = ''
 for part in p.split('/')[:-1]:
  q = q + '/' + part if q else part
  if _gst(q) is None:
   os.mkdir(q)
def _gw(p, off, s):
 st = _gst(p)
 n = st[6] if st else 0
 if off == 0 and st:
  os.remove(p)
  n = 0
 if n != off:
  return str(n)
 if off == 0:
  _gmk(p)
 d = _b.a2b_base64(s)
 f = open(p, 'ab')
 try:
  f.write(d)
 finally:
  f.close()
 return str(off + len(d))
def _gmv(a, b):
 if _gst(a) is None:
  return 'done' if _gst(b) is not None else 'missing'
 try:
  os.rename(a, b)
 except OSError:
  os.remove(b)
  os.rename(a, b)
 return 'moved'
def _grm(p):
 st = _gst(p)
 if st is None:
  return
 if st[0] & 0x4000:
  for e in list(os.ilistdir(p)):
   _grm(p + '/' + e[0])
  os.rmdir(p)
 else:
  os.remove(p)
def _gcp(a, b):
 _gmk(b)
 src = open(a, 'rb')
 try:
  dst = open(b, 'wb')
  try:
   buf = bytearray(512)
   while 1:
    n = src.readinto(buf)
    if not n:
     break
    dst.write(memoryview(buf)[:n])
  finally:
   dst.close()
 finally:
  src.close()
 return _gh(b)
def _gman(d):
 try:
  f = open(d + 'manifest.json')
 except OSError:
  return ''
 try:
  import json
  return str(json.load(f).get('bundle', '?'))
 except Exception:
  return '?'
 finally:
  f.close()
_r = 'helpers'
"""

_UID_CODE = """\
try:
 import machine
 _u = machine.unique_id()
except (ImportError, AttributeError):
 _u = bytes.fromhex(os.getenv('GE_VBOARD_UID') or '')
_r = _b.hexlify(_u).decode()
"""

_SELFTEST_STAGED = f"""\
import os, sys
os.chdir({STAGE!r})
sys.path[:] = ['', 'lib'] + [p for p in sys.path if p.startswith('.frozen')]
import selftest
_r = selftest.run()
"""


def sha16(data: bytes) -> str:
    """A file's SHA-256 as the board's file lists give it (16 hex digits)."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class BoardFiles:
    """What the board holds: path -> 16 hex digits of SHA-256, per area."""

    running: dict[str, str] = field(default_factory=dict)  # root files and MANAGED_DIRS
    root_dirs: list[str] = field(default_factory=list)  # the root's directories
    staged: dict[str, str] = field(default_factory=dict)  # under fw_new/, relative
    fallback: dict[str, str] = field(default_factory=dict)  # under fw_old/, relative
    bundles: dict[str, str] = field(default_factory=dict)  # "running", "staged", "fallback" -> id

    @property
    def switch_pending(self) -> bool:
        return MARK in self.running


def _pairs(text: str) -> tuple[dict[str, str], list[str]]:
    files: dict[str, str] = {}
    dirs: list[str] = []
    for item in text.split(";"):
        if item.endswith("/"):
            dirs.append(item[:-1])
        elif " " in item:
            path, h = item.rsplit(" ", 1)
            files[path] = h
    return files, dirs


class DeviceLink:
    """A board's console, opened in the raw REPL (the running app is interrupted)."""

    def __init__(
        self,
        port: str,
        chunk: int = CHUNK,
        on_retry: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.port = port
        self.chunk = chunk
        self.cancel = cancel  # set (Ctrl-C): the next command raises, unless a switch is under way
        self._held = 0
        try:
            self.repl = RawRepl(port, on_retry=on_retry, helpers=_HELPERS)
        except BoardGone as exc:
            raise DeviceError("connect", str(exc)) from None
        try:
            self.repl.enter()
        except (LineError, BoardGone) as exc:
            self.close()
            raise DeviceError("connect", str(exc)) from None

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.repl.close()

    @property
    def retries(self) -> int:
        return self.repl.retries

    @contextlib.contextmanager
    def holding_cancel(self) -> Iterator[None]:
        """Commands in this block run even after Ctrl-C (a switch is finished, a board restarted)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def run(self, step: str, code: str, timeout: float = 10.0) -> str:
        """Run checked code on the board; DeviceError(step) with one line when it fails."""
        if self.cancel is not None and self.cancel.is_set() and not self._held:
            raise DeviceError(step, "stopped (Ctrl-C); the board keeps the firmware it runs")
        try:
            return self.repl.command(code, timeout)
        except BoardCommandError as exc:
            raise DeviceError(step, f"the board says: {exc}") from None
        except (LineError, BoardGone) as exc:
            raise DeviceError(step, str(exc)) from None

    # --- what is on the board -----------------------------------------------------------

    def uid(self) -> bytes:
        """The board's unique id (machine.unique_id(); the virtual board's id on the unix port)."""
        out = self.run("identify", _UID_CODE)
        try:
            uid = bytes.fromhex(out)
        except ValueError:
            uid = b""
        if len(uid) < 4:
            raise DeviceError("identify", f"the board reports no usable unique id ({out[:40]!r})")
        return uid

    def files(self, step: str) -> BoardFiles:
        """Every file of the running set, the staged set and the fallback, with the bundle ids."""
        got = BoardFiles()
        got.running, got.root_dirs = _pairs(self.run(step, "_r = _gt('', 0)"))
        for d in MANAGED_DIRS:
            if d in got.root_dirs:
                got.running.update(_pairs(self.run(step, f"_r = _gt({d!r}, 1)"))[0])
        for area, d in (("staged", STAGE), ("fallback", FALLBACK)):
            if d in got.root_dirs:
                listed, subdirs = _pairs(self.run(step, f"_r = _gt({d!r}, 0)"))
                for sub in subdirs:
                    listed.update(_pairs(self.run(step, f"_r = _gt({sub!r}, 1)"))[0])
                setattr(got, area, {p.removeprefix(d + "/"): h for p, h in listed.items()})
        for area, prefix in (("running", ""), ("staged", STAGE + "/"), ("fallback", FALLBACK + "/")):
            got.bundles[area] = self.run(step, f"_r = _gman({prefix!r})")
        return got

    def sha256(self, step: str, path: str) -> str:
        return self.run(step, f"_r = _gh({path!r})")

    # --- writing -------------------------------------------------------------------------

    def put(self, step: str, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> None:
        """Write one file: `<path>.tmp` chunk by chunk (each checked), its SHA-256 compared,
        then renamed over `path`."""
        tmp = path + ".tmp"
        off = 0
        while True:
            part = data[off : off + self.chunk]
            if off and not part:
                break
            b64 = base64.b64encode(part).decode()
            now = int(self.run(step, f"_r = _gw({tmp!r}, {off}, {b64!r})"))
            if progress is not None and now > off:
                progress(now - off)
            if now > len(data):
                off = 0  # the board holds more than this file: start it again
                continue
            off = now
            if not part:
                break
        if self.sha256(step, tmp) != hashlib.sha256(data).hexdigest():
            raise DeviceError(step, f"{path}: what the board wrote differs from the file (check the cable)")
        self.run(step, f"_r = _gmv({tmp!r}, {path!r})")

    def copy_on_board(self, step: str, src: str, dst: str, sha256: str) -> None:
        """Copy a file the board already holds (no transfer over the line), checked."""
        if self.run(step, f"_r = _gcp({src!r}, {dst!r})") != sha256:
            raise DeviceError(step, f"{dst}: the copy of {src} on the board differs")

    def remove(self, step: str, path: str) -> None:
        """A file or a directory tree; nothing if it is not there."""
        self.run(step, f"_grm({path!r})")

    def switch(self, names: list[str], drop: list[str], src: str = STAGE, keep: str = FALLBACK) -> int:
        """Commit the staged set (write fw.switch and rename it into place), then finish it
        (firmware/fwswitch.py, which boot.py also runs after a reset); entries moved."""
        plan = json.dumps({"src": src, "keep": keep, "set": names, "drop": drop}, separators=(",", ":"))
        self.put("switch", MARK, plan.encode())  # the rename at its end is the commit
        moved = self.run("switch", "import fwswitch\n_r = fwswitch.run()")
        return int(moved) if moved.isdigit() else 0

    # --- running -------------------------------------------------------------------------

    def soft_reset(self, step: str) -> None:
        try:
            self.repl.soft_reset()
        except (LineError, BoardGone, BoardCommandError) as exc:
            raise DeviceError(step, f"soft reset: {exc}") from None

    def selftest(self, staged: bool) -> dict[str, str]:
        """The firmware's self-test after a soft reset, on the staged set (run from fw_new/, not
        started) or the running one; its `key=value` fields on success."""
        self.soft_reset("selftest")
        line = self.run("selftest", _SELFTEST_STAGED if staged else "import selftest\n_r = selftest.run()", 60.0)
        if staged:
            self.soft_reset("selftest")  # out of fw_new/: a clean interpreter at the root again
        if not line.startswith("selftest: ok "):
            # "selftest: FAIL <check>: <reason>" -> "<check>: <reason>"
            reason = line.removeprefix("selftest: ").removeprefix("FAIL ")
            raise DeviceError("selftest", reason or "no result from the self-test")
        return dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)

    def restart(self) -> str:
        """Leave the raw REPL and start the board's app; what it printed at first."""
        try:
            return self.repl.restart()
        except (LineError, BoardGone) as exc:
            raise DeviceError("restart", f"could not restart the board: {exc}") from None
