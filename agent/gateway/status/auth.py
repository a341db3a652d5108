"""The status page's token, sessions and login limit.

The token is made at install (`guardian-agent status-token`): 32 random bytes, URL-safe
base64, written to a root-only file (0600) that `guardian-agent status` reads; the agent's
config holds only its SHA-256 (`[status_page] token_sha256`). A random 256-bit token needs no
slow password hash: SHA-256 cannot be inverted, and guessing is hopeless (and limited below).
The token is never logged, never put in a URL and never echoed back.

A browser logs in once with the token (POST /login) and gets a session cookie (random,
HttpOnly, SameSite=Strict, 12 h; Secure with TLS); scripts send `Authorization: Bearer TOKEN`.
Sessions live in memory only (an agent restart asks for the token again) and are bounded.
Failed logins are limited for the whole page (a token bucket), so a flood of guesses costs the
agent's loop almost nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from agent.shared.files import write_atomic, write_new_private

SESSION_S = 12 * 3600
MAX_SESSIONS = 32
LOGIN_FAILURES_PER_MIN = 10
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.strip().encode()).digest()


def write_token_file(path: Path, rotate: bool = False) -> bytes:
    """Create the token file (0600; an existing one only with `rotate`); the token's SHA-256."""
    token = new_token()
    data = (token + "\n").encode()
    if rotate:
        write_atomic(path, data, 0o600)
    else:
        write_new_private(path, data, "a token file is there already; --rotate replaces it")
    return token_digest(token)


def read_token_file(path: Path) -> str:
    """The token from its file; OSError when it cannot be read."""
    return path.read_text().strip()


class Gate:
    """Checks tokens and sessions for the page."""

    def __init__(self, token_sha256: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        self._digest = token_sha256
        self._clock = clock
        self._sessions: OrderedDict[str, float] = OrderedDict()  # id -> expiry
        self._failures = float(LOGIN_FAILURES_PER_MIN)  # token bucket: failed logins allowed now
        self._bucket_at = clock()

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token_digest(token), self._digest)

    def login_allowed(self) -> bool:
        """False while the page's failed-login budget is spent (about one a minute after it)."""
        now = self._clock()
        self._failures = min(
            float(LOGIN_FAILURES_PER_MIN), self._failures + (now - self._bucket_at) * LOGIN_FAILURES_PER_MIN / 60
        )
        self._bucket_at = now
        return self._failures >= 1.0

    def failed(self) -> None:
        self._failures = max(0.0, self._failures - 1.0)

    def new_session(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = self._clock() + SESSION_S
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid

    def session_ok(self, sid: str | None) -> bool:
        if not sid:
            return False
        expiry = self._sessions.get(sid)
        if expiry is None:
            return False
        if expiry < self._clock():
            del self._sessions[sid]
            return False
        return True

    def end_session(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)
