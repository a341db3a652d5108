"""Times for people: the station's local time with its UTC offset, never a raw unix number."""

from __future__ import annotations

import time
from datetime import datetime


def local_time(unix: object) -> str:
    """`2025-03-01 14:05 +0800` for unix seconds; "-" for nothing, the value itself otherwise."""
    if isinstance(unix, bool) or not isinstance(unix, (int, float)):
        return "-" if unix in (None, "") else str(unix)
    return datetime.fromtimestamp(unix).astimezone().strftime("%Y-%m-%d %H:%M %z")


def now() -> int:
    return int(time.time())
