"""MicroPython's raw REPL over a serial line that loses bytes, with commands checked end to end.

Written here rather than taken from mpremote's SerialTransport (which provisioning used
before): mpremote assumes a clean line. Its waits are 10 s per byte, a lost flow-control byte
of the raw-paste protocol surfaces as a struct.error or a hang, and nothing checks that the
code the board ran is the code that was sent, or that the output read is what the board
printed. A technician's cable loses bytes (about one in 5,000 on a bad one), so here:

- The raw REPL protocol (MicroPython's pyexec.c, as mpremote speaks it): Ctrl-A enters it and
  prints the banner; raw-paste mode (Ctrl-E 'A' Ctrl-A, answered "R\\x01", the board's window
  size and a Ctrl-A per window consumed) carries the code, Ctrl-D ends it; the board answers
  output, Ctrl-D, errors, Ctrl-D and the '>' prompt. Every wait has a short deadline, and any
  deviation is a line error (`LineError`).
- A line error resynchronises: Ctrl-C (ends a paste or a running command), Ctrl-A (the banner
  again), and the command is asked for again, up to `tries` times; then one line tells the
  technician to check the cable.
- Commands go through `_gx(n, code, digest)`, defined once per interpreter by the bootstrap,
  which is itself checked: it travels as a string the board runs only if its SHA-256 matches,
  and the board answers with the digest of what it ran.
  Through `_gx`:
  the board runs `code` only if its SHA-256 matches `digest` (a byte lost on the way in makes
  it refuse), keeps the result of command n and prints it framed with n and its own SHA-256
  (a byte lost on the way out makes the host ask `_gx(n, '', '')`, which prints the kept
  result and runs nothing twice). A command's result is the string it leaves in `_r`; an
  exception on the board comes back as one line `Type: message` (an OSError's errno named),
  never as a traceback.
- While the host works, the board's watchdog is the lease: where the port has `machine.WDT`
  every command feeds it, so a board abandoned in the raw REPL (cable pulled, host gone)
  resets into the firmware it runs (the unix port has none: the virtual board stays put).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import struct
import time
from collections.abc import Callable

from provisioning.errors import ProvisionError

BANNER = b"raw REPL; CTRL-B to exit\r\n"
BYTE_TIMEOUT_S = 0.5  # a board that is talking sends its next byte within this
TRIES = 20  # line errors in a row before giving up on a command
SILENT_TRIES = 3  # attempts to enter the raw REPL that got no byte at all: nothing is there
LEASE_MS = 8000  # the watchdog lease (rp2's longest timeout is 8.3 s)

_BOOT = """\
import binascii as _b, hashlib as _h
_gs = [-1, '']
try:
 import machine
 _gwd = machine.WDT(timeout=%d)
except Exception:
 _gwd = None
def _gd(s):
 return _b.hexlify(_h.sha256(s).digest()[:8]).decode()
def _gx(n, c, d):
 global _r
 if _gwd:
  _gwd.feed()
 if _gs[0] != n:
  if _gd(c) != d:
   print('\\x02?%%d\\x03' %% n)
   return
  _r = ''
  try:
   exec(c, globals())
   r = '=' + str(_r)
  except Exception as e:
   r = '!%%s: %%s' %% (type(e).__name__, e)
  _gs[0] = n
  _gs[1] = r
 m = '%%d %%s' %% (n, _gs[1])
 print('\\x02' + m + '\\x1f' + _gd(m) + '\\x03')
""" % (LEASE_MS,)  # noqa: UP031 - the code is full of braces; %% keeps its own %
# The bootstrap travels as a string the board runs only if its SHA-256 is the host's, then
# answers with the digest of what it ran (computed by the _gd it just defined): a byte lost in
# the bootstrap itself (`exec` arriving as `xec` is still valid Python, and a WDT timeout that
# lost a digit would reset the board) is a line error, never a board that runs it.
_WRAP = """\
import hashlib as _h, binascii as _b
_s = %r
if _b.hexlify(_h.sha256(_s).digest()[:8]).decode() == %r:
 exec(_s, globals())
 print('\\x02' + _gd(_s) + '\\x03')
"""


# An OSError's errno as a board gives it: its str() names only what the port's errno table
# lists (ENOSPC is not there: a full flash says `OSError: 28`). 1-34 are the classic Unix values,
# the same in MicroPython's mperrno.h, newlib (ESP-IDF, the Pico SDK) and Linux, so the host
# names them; higher ones (sockets) differ between ports and are left as the board said them.
_OSERROR = re.compile(r"OSError: (?:\[Errno )?([1-9]|[12][0-9]|3[0-4])(?:\] [A-Z]+)?")


def readable(line: str) -> str:
    """The board's one error line, an OSError's errno named: `OSError: [Errno 28] ENOSPC (No
    space left on device)`."""
    m = _OSERROR.fullmatch(line)
    if m is None:
        return line
    n = int(m[1])
    return f"OSError: [Errno {n}] {errno.errorcode[n]} ({os.strerror(n)})"


class LineError(ProvisionError):
    """Bytes were lost or garbled on the serial line (retried until `tries` run out)."""


class BoardGone(ProvisionError):
    """The serial port went away (unplugged) or cannot be used."""


class BoardCommandError(ProvisionError):
    """A command raised on the board; the message is its one line `Type: message`."""


def digest(text: str) -> str:
    """The 16 hex digits both sides compute over a command or a result (SHA-256, UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RawRepl:
    """One board's raw REPL on `port`; `command()` runs checked code and returns its `_r`."""

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        tries: int = TRIES,
        on_retry: Callable[[str], None] | None = None,
        helpers: str = "",
    ) -> None:
        import serial

        self.port = port
        self.tries = tries
        self.on_retry = on_retry
        self.helpers = helpers  # code run (checked) in every new interpreter after the bootstrap
        self.retries = 0  # line errors recovered from, for the report
        self._n = 0
        self._ready = False  # _gx is defined in the board's interpreter
        self._rx = bytearray()  # read from the port, not consumed yet
        self._heard = 0  # bytes read from the port since it was opened
        self._serial_error: type[Exception] = serial.SerialException
        try:
            self.ser = serial.Serial(port, baudrate, timeout=0.02, write_timeout=2, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise BoardGone(f"cannot open {port}: {why}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ser.close()

    # --- bytes ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.ser.write(data)
        except (self._serial_error, OSError) as exc:
            raise BoardGone(f"{self.port}: the port went away ({exc})") from None

    def _fill(self) -> bool:
        """Whatever the port has (or a 20 ms wait for one byte) into the buffer; got any."""
        try:
            n = self.ser.in_waiting
            got = bytes(self.ser.read(n or 1))
        except (self._serial_error, OSError) as exc:
            raise BoardGone(f"{self.port}: the port went away ({exc})") from None
        self._rx += got
        self._heard += len(got)
        return bool(got)

    def _read_until(self, ending: bytes, overall: float, quiet: float | None = None) -> bytes:
        """Bytes up to and including `ending` (the rest stays buffered); LineError after
        `overall` s, or after `quiet` s without a byte."""
        start = last = time.monotonic()
        while True:
            at = self._rx.find(ending)
            if at >= 0:
                cut = at + len(ending)
                data = bytes(self._rx[:cut])
                del self._rx[:cut]
                return data
            if self._fill():
                last = time.monotonic()
                continue
            now = time.monotonic()
            if now - start > overall or (quiet is not None and now - last > quiet):
                seen = bytes(self._rx[-40:])
                self._rx.clear()
                raise LineError(f"no {ending!r} from the board (got {seen!r})")

    def _read_exact(self, n: int, timeout: float = BYTE_TIMEOUT_S) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._rx) < n:
            if not self._fill() and time.monotonic() > deadline:
                seen = bytes(self._rx)
                self._rx.clear()
                raise LineError(f"the board stopped answering ({seen!r})")
        data = bytes(self._rx[:n])
        del self._rx[:n]
        return data

    def drain(self, quiet: float = 0.05) -> bytes:
        """Read until the board is quiet for `quiet` s (at most 1 s); everything buffered."""
        deadline = time.monotonic() + 1.0
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self._fill():
                last = time.monotonic()
            elif time.monotonic() - last > quiet:
                break
        data = bytes(self._rx)
        self._rx.clear()
        return data

    # --- the raw REPL --------------------------------------------------------------------

    def enter(self, tries: int | None = None) -> None:
        """Into the raw REPL: a running program is interrupted (Ctrl-C), the banner awaited."""
        heard = self._heard
        for n in range(tries or self.tries):
            self._write(b"\r\x03\x03")
            time.sleep(0.05)
            self.drain()
            self._write(b"\r\x01")
            try:
                self._read_until(BANNER + b">", overall=2.0)
                return
            except LineError:
                # a board, even behind a noisy cable, answers Ctrl-C with something; a port
                # that stays silent has no MicroPython behind it, and retrying only makes the
                # technician wait
                if n + 1 >= SILENT_TRIES and self._heard == heard:
                    raise LineError(
                        f"no MicroPython raw REPL answers on {self.port}: nothing came back "
                        "(the wrong port, a board without MicroPython, or one held in its bootloader?)"
                    ) from None
        raise LineError(f"no MicroPython raw REPL answers on {self.port}")

    def _paste(self, code: bytes) -> None:
        self._write(b"\x05A\x01")
        head = self._read_exact(2)
        if head != b"R\x01":
            raise LineError(f"raw paste refused ({head!r})")
        window = struct.unpack("<H", self._read_exact(2))[0]
        if not 8 <= window <= 16384:
            raise LineError(f"raw paste window {window}")
        room, i = window, 0
        while i < len(code):
            while room == 0 or self._rx or self.ser.in_waiting:
                b = self._read_exact(1)
                if b == b"\x01":
                    room += window
                elif b == b"\x04":
                    self._write(b"\x04")
                    raise LineError("the board ended the paste early")
                else:
                    raise LineError(f"unexpected {b!r} during the paste")
            part = code[i : i + room]
            self._write(part)
            room -= len(part)
            i += len(part)
        self._write(b"\x04")
        self._read_until(b"\x04", overall=2.0)

    def exchange(self, code: bytes, timeout: float) -> tuple[bytes, bytes]:
        """Run `code` as is (raw paste); (output, errors). LineError on any deviation."""
        self._paste(code)
        out = self._read_until(b"\x04", overall=timeout, quiet=max(timeout, 2.0))[:-1]
        err = self._read_until(b"\x04", overall=2.0)[:-1]
        self._read_until(b">", overall=2.0)
        return out, err

    def _recover(self, why: str) -> None:
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(why)
        self.enter()

    def _bootstrap(self) -> None:
        check = digest(_BOOT)
        out, err = self.exchange((_WRAP % (_BOOT, check)).encode(), 5.0)
        if err:
            raise LineError(f"bootstrap garbled: {err.decode(errors='replace').strip().splitlines()[-1:]}")
        if b"\x02" + check.encode() + b"\x03" not in out:
            raise LineError("bootstrap garbled on the way (the board did not run it as sent)")
        self._ready = True
        if self.helpers:
            self.command(self.helpers)

    # --- checked commands ----------------------------------------------------------------

    def _result(self, out: bytes, n: int) -> str | None:
        """The frame for command n in `out`: '?' (refused), '=value', '!error'; None if garbled."""
        start, end = out.rfind(b"\x02"), out.rfind(b"\x03")
        if start < 0 or end < start:
            return None
        body = out[start + 1 : end].decode(errors="replace")
        if body == f"?{n}":
            return "?"
        text, sep, check = body.rpartition("\x1f")
        if not sep or digest(text) != check:
            return None
        num, _, value = text.partition(" ")
        return value if num == str(n) and value[:1] in ("=", "!") else None

    def command(self, code: str, timeout: float = 10.0) -> str:
        """Run `code` on the board, checked both ways; returns the string it left in `_r`.

        Raises:
            BoardCommandError: the code raised on the board (one line).
            LineError: the line kept failing; BoardGone: the port went away.
        """
        self._n += 1
        n = self._n
        call = f"_gx({n}, {code!r}, {digest(code)!r})"
        again = f"_gx({n}, '', '')"
        ask = call
        why = ""
        for _ in range(self.tries):
            try:
                if not self._ready:
                    self._bootstrap()
                    ask = call
                out, err = self.exchange(ask.encode(), timeout)
            except LineError as exc:
                why = str(exc)
                self._recover(why)
                ask = again
                continue
            if err:
                why = err.decode(errors="replace").strip().splitlines()[-1:][0] if err.strip() else "error output"
                if "_gx" in why:  # NameError: the board was reset, its interpreter is new
                    self._ready = False
                self._recover(why)
                ask = again
                continue
            res = self._result(out, n)
            if res is None or res == "?":
                why = "garbled result" if res is None else "the board refused garbled code"
                self.retries += 1
                if self.on_retry is not None:
                    self.on_retry(why)
                ask = again if res is None else call
                continue
            if res.startswith("!"):
                raise BoardCommandError(readable(res[1:]))
            return res[1:]
        raise LineError(
            f"{self.port}: the serial line kept failing ({self.tries} tries, last: {why}); "
            "check the cable and the port, then run the same command again"
        )

    def soft_reset(self) -> None:
        """A clean interpreter that has run boot.py only, back in the raw REPL."""
        for _ in range(self.tries):
            self.command("_gm = 1\n_r = 1")
            self._write(b"\x04")
            try:
                self._read_until(b"soft reboot", overall=5.0)
                self._read_until(BANNER + b">", overall=10.0)
            except LineError as exc:
                self._recover(str(exc))
            self._ready = False
            if self.command("_r = '_gm' in globals()") == "False":
                return
        raise LineError(f"{self.port}: the board did not soft-reset; check the cable")

    def restart(self, watch: float = 1.5) -> str:
        """Out of the raw REPL into the board's app (boot.py, main.py); what it printed in
        the first `watch` seconds."""
        for _ in range(self.tries):
            self._write(b"\r\x02")
            try:
                self._read_until(b">>> ", overall=2.0)
            except LineError as exc:
                self._recover(str(exc))
                continue
            self._write(b"\x04")
            try:
                text = self._read_until(b"soft reboot", overall=3.0)
            except LineError as exc:
                self._recover(str(exc))
                continue
            self._ready = False
            deadline = time.monotonic() + watch
            while time.monotonic() < deadline:  # read as it comes: a port does not keep it forever
                self._fill()
            return (text + self.drain()).decode(errors="replace")
        raise LineError(f"{self.port}: the board did not restart into its app; check the cable")
