"""Structured, journald-friendly logging: one logfmt line per record on stderr.

Under systemd (JOURNAL_STREAM is set) each line starts with the syslog priority in angle
brackets, which journald turns into the entry's priority. Messages are written as
`event key=value ...` by the callers; secrets are never passed to the logger.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Formatter(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += " exc=" + repr(self.formatException(record.exc_info).splitlines()[-1])
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{record.name} {msg}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d} {record.levelname.lower()} {record.name} {msg}"


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(journald="JOURNAL_STREAM" in os.environ))
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
