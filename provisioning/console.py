"""One board on a serial console, through mpremote's transport (the raw REPL).

`DeviceLink` is what the flash transaction can do to a board: read its unique id, list its
files with their SHA-256 (computed on the board, one round trip for the whole tree), write a
file (to `<path>.tmp`, then renamed, so a cut transfer never leaves a half file under the real
name), remove files, soft-reset, run the self-test and restart into the app. Everything goes
through mpremote's `SerialTransport`, which works on USB-UART ports and on the virtual
board's pty alike. Transport failures become `DeviceError` with the step that was running.
"""

from __future__ import annotations

import ast
import binascii
import contextlib
from collections.abc import Callable
from types import TracebackType

from provisioning.errors import DeviceError

# directories the bundle owns on the device; files there that the bundle does not list are
# removed (a stale lib/x.py would shadow lib/x.mpy: MicroPython imports .py first; boards/
# holds the one board file the bundle carries)
MANAGED_DIRS = ("lib", "hal", "apps", "boards")
READ_TIMEOUT_S = 1.0  # serial read timeout; mpremote's own waits bound each exchange
CONNECT_TIMEOUT_S = 5  # for the raw REPL prompt after interrupting the app

_UID_CODE = """\
try:
 import machine
 _u = machine.unique_id()
except (ImportError, AttributeError):
 import os
 _u = bytes.fromhex(os.getenv('GE_VBOARD_UID') or '')
import binascii
print(binascii.hexlify(_u).decode())
"""

_HASH_CODE = """\
import os, hashlib, binascii
_b = bytearray(512)
def _h(p):
 h = hashlib.sha256()
 with open(p, 'rb') as f:
  while 1:
   n = f.readinto(_b)
   if not n:
    break
   h.update(memoryview(_b)[:n])
 return binascii.hexlify(h.digest()).decode()
def _w(d):
 for e in os.ilistdir(d if d else '.'):
  p = d + '/' + e[0] if d else e[0]
  if e[1] & 0x4000:
   if d or e[0] in %r:
    _w(p)
  else:
   print(repr((p, _h(p))), end=',')
_w('')
"""

_PUT_CODE = """\
import os
def _mk(p):
 q = ''
 for part in p.split('/')[:-1]:
  q = q + '/' + part if q else part
  try:
   os.mkdir(q)
  except OSError:
   pass
_mk(%r)
"""

_RENAME_CODE = """\
import os
try:
 os.rename(%(tmp)r, %(dst)r)
except OSError:
 os.remove(%(dst)r)
 os.rename(%(tmp)r, %(dst)r)
"""


class DeviceLink:
    """A board's console, opened in the raw REPL (the running app is interrupted)."""

    def __init__(self, port: str, chunk: int = 512) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self.chunk = chunk
        self._error: type[Exception] = TransportError
        try:
            self._t = SerialTransport(port, baudrate=115200, timeout=READ_TIMEOUT_S)
        except (TransportError, OSError, ValueError) as exc:
            raise DeviceError("connect", f"cannot open {port}: {exc}") from None
        try:
            self._t.enter_raw_repl(soft_reset=False, timeout_overall=CONNECT_TIMEOUT_S)
        except (TransportError, OSError) as exc:
            self.close()
            raise DeviceError("connect", f"no MicroPython raw REPL on {port}: {exc}") from None

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self._t.close()

    def _exec(self, step: str, code: str) -> bytes:
        try:
            out = self._t.exec(code)
        except self._error as exc:
            detail = str(exc).strip().splitlines()
            raise DeviceError(step, f"board error: {detail[-1] if detail else type(exc).__name__}") from None
        except OSError as exc:
            raise DeviceError(step, f"console {self.port}: {exc}") from None
        return bytes(out)

    def uid(self) -> bytes:
        """The board's unique id (machine.unique_id(); the virtual board's id on the unix port)."""
        out = self._exec("identify", _UID_CODE).decode(errors="replace").strip()
        try:
            uid = binascii.unhexlify(out)
        except (binascii.Error, ValueError):
            uid = b""
        if len(uid) < 4:
            raise DeviceError("identify", f"the board reports no usable unique id ({out[:40]!r})")
        return uid

    def file_hashes(self) -> dict[str, str]:
        """Device path -> SHA-256 hex of every root file and every file under MANAGED_DIRS."""
        out = self._exec("copy", _HASH_CODE % (MANAGED_DIRS,)).decode(errors="replace")
        try:
            pairs = ast.literal_eval("[" + out.strip() + "]")
            return {str(p): str(h) for p, h in pairs}
        except (ValueError, SyntaxError, TypeError) as exc:
            raise DeviceError("copy", f"unreadable file list from the board: {exc}") from None

    def put(self, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> None:
        """Write one file: `<path>.tmp` first, then renamed over `path`."""
        self._exec("copy", _PUT_CODE % path)
        tmp = path + ".tmp"
        done = 0

        def advance(written: int, _total: int) -> None:
            nonlocal done
            if progress is not None:
                progress(written - done)
            done = written

        try:
            self._t.fs_writefile(tmp, data, chunk_size=self.chunk, progress_callback=advance)
        except self._error as exc:
            raise DeviceError("copy", f"writing {path}: {str(exc).strip()[-200:]}") from None
        except OSError as exc:
            raise DeviceError("copy", f"writing {path}: {exc}") from None
        self._exec("copy", _RENAME_CODE % {"tmp": tmp, "dst": path})

    def run(self, step: str, code: str) -> bytes:
        """Run a short program on the board (raw REPL); DeviceError(step) when it fails."""
        return self._exec(step, code)

    def remove(self, path: str) -> None:
        self._exec("copy", f"import os\nos.remove({path!r})\n")

    def soft_reset(self, step: str) -> None:
        """Soft-reset into the raw REPL: a clean interpreter that has run boot.py only."""
        try:
            self._t.enter_raw_repl(soft_reset=True)
        except (self._error, OSError) as exc:
            raise DeviceError(step, f"soft reset failed: {exc}") from None

    def selftest(self) -> dict[str, str]:
        """Run the firmware's self-test after a soft reset; its `key=value` fields on success."""
        self.soft_reset("selftest")
        out = self._exec("selftest", "import selftest\nselftest.run()\n").decode(errors="replace")
        line = next((x.strip() for x in out.splitlines() if x.startswith("selftest: ")), "")
        if not line.startswith("selftest: ok "):
            # "selftest: FAIL <check>: <reason>" -> "<check>: <reason>"
            reason = line.removeprefix("selftest: ").removeprefix("FAIL ")
            raise DeviceError("selftest", reason or f"no result line (output {out[-200:]!r})")
        return dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)

    def restart(self) -> None:
        """Leave the raw REPL and soft-reset from the friendly REPL: boot.py, then main.py (the app)."""
        try:
            self._t.exit_raw_repl()
            self._t.read_until(1, b">>> ", timeout=2)
            self._t.serial.write(b"\x04")
        except (self._error, OSError) as exc:
            raise DeviceError("restart", f"could not restart the board: {exc}") from None
