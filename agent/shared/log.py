"""Structured, journald-friendly logging: one logfmt line per record on stderr.

Under systemd (JOURNAL_STREAM is set) each line starts with the syslog priority in angle
brackets, which journald turns into the entry's priority. Messages are written as
`event key=value ...` by the callers; secrets are never passed to the logger.

Every argument that is not a number is written as a logfmt value (`logfmt()`): bare when it is
printable ASCII without space, `=`, quote or backslash, otherwise double-quoted with escapes.
Values often come from the network (a topic's device name, a frame's kid, a broker's reason
text): whatever they hold, they stay one value, so no one can plant a `reason=` field or a line
break in the log. `Fields` marks text that is already `key=value ...` built from such values.
Written here rather than imported: it is one function, and the logfmt packages on PyPI are
either unmaintained or whole logging frameworks.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('="\\')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt(value: object) -> str:
    """`value` as one logfmt value: bare when safe, else in double quotes with backslash escapes
    (quote, backslash, \\n \\r \\t, and \\uXXXX / \\UXXXXXXXX for anything not printable)."""
    text = value if isinstance(value, str) else str(value)
    if text and _SAFE.issuperset(text):
        return text
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


class Fields(str):
    """Text that is already logfmt fields (`key=value ...`, values through logfmt()): written as is."""

    __slots__ = ()


class _Value(str):
    # a logfmt value that %s and %r both write as it is
    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _value(arg: object) -> object:
    if isinstance(arg, (int, float, Fields, _Value)):
        return arg
    return _Value(logfmt(repr(arg) if isinstance(arg, (bytes, bytearray)) else arg))


class Formatter(logging.Formatter):
    """One logfmt line per record; with `journald`, the syslog priority first instead of a time stamp."""

    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and args:
            msg = str(record.msg) % tuple(_value(a) for a in args)
        else:
            msg = record.getMessage()
        if record.exc_info:
            msg += " exc=" + logfmt(self.formatException(record.exc_info).splitlines()[-1])
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{record.name} {msg}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d} {record.levelname.lower()} {record.name} {msg}"


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(journald="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho/aiomqtt log every packet at DEBUG; keep them at WARNING unless asked
    logging.getLogger("mqtt").setLevel(logging.WARNING)


class Throttle:
    """Lets a log line through at most once per `interval` seconds per key, counting the rest."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def allow(self, key: object) -> int | None:
        """None to suppress; otherwise how many lines were suppressed since the last one."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._last) > 10_000:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        return self._suppressed.pop(key, 0)
