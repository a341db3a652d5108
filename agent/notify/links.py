"""Acknowledgement links: short, signed, expiring, used once, with nothing guessable in them.

    link  = <base_url>/a/<token>
    token = base64url( id (9 random bytes) || expires (4 bytes, unix s, big-endian)
                       || HMAC-SHA256(link key, "ge-ack-link" 00 || id || expires)[0:11] )   (32 characters)

The id is random and stored in the ledger with the (alert, contact) it stands for; the MAC
(88 bits, under a 32-byte key kept in a 0600 file) makes a forged or altered token fail before
the ledger is asked, and the expiry is inside the MAC. Using a token is recorded in the ledger
in the same transaction as the acknowledgement, so it works once, across restarts.

Where a contact has an SMS channel through the notifier's own modem, the message also carries
a six-digit code (HMAC of the id) to reply with: accepted only from that contact's number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path

from agent.shared import tomlcheck
from agent.shared.files import write_new_private

ID_BYTES = 9
MAC_BYTES = 11
KEY_BYTES = 32
TOKEN_CHARS = 32
_DOMAIN = b"ge-ack-link\0"


class LinkError(ValueError):
    """A token that is malformed, forged or expired; `reason` is what gets counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_or_create_key(path: Path) -> bytes:
    """The link key in `path` (mode 0600 enforced), created with O_EXCL when absent."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_new_private(path, secrets.token_bytes(KEY_BYTES), "appeared while being created; start again")
    tomlcheck.require_private(path, "the acknowledgement link key")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        from agent.shared.errors import ConfigError

        raise ConfigError(f"{path}: expected a {KEY_BYTES}-byte key, got {len(key)} bytes")
    return key


class Links:
    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("link key must be 32 bytes")
        self._key = key
        self.base_url = base_url.rstrip("/")

    @staticmethod
    def new_id() -> str:
        return base64.urlsafe_b64encode(os.urandom(ID_BYTES)).decode()

    def _mac(self, raw_id: bytes, expires: int) -> bytes:
        return hmac.new(self._key, _DOMAIN + raw_id + struct.pack(">I", expires), hashlib.sha256).digest()[:MAC_BYTES]

    def token(self, token_id: str, expires_s: int) -> str:
        raw_id = base64.urlsafe_b64decode(token_id)
        return base64.urlsafe_b64encode(raw_id + struct.pack(">I", expires_s) + self._mac(raw_id, expires_s)).decode()

    def url(self, token_id: str, expires_s: int) -> str:
        return f"{self.base_url}/a/{self.token(token_id, expires_s)}"

    def sms_code(self, token_id: str) -> str:
        """Six digits a contact may reply by SMS instead of opening the link (same key, own domain).

        Only accepted from the phone number the alert went to, and only while the link is valid.
        """
        raw_id = base64.urlsafe_b64decode(token_id)
        digest = hmac.new(self._key, b"ge-ack-sms\0" + raw_id, hashlib.sha256).digest()
        return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"

    def check(self, token: str, now_s: float) -> str:
        """The token's id when the MAC verifies and it has not expired; LinkError otherwise."""
        if len(token) != TOKEN_CHARS:
            raise LinkError("malformed")
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise LinkError("malformed") from None
        if len(raw) != ID_BYTES + 4 + MAC_BYTES:
            raise LinkError("malformed")
        raw_id, exp, mac = raw[:ID_BYTES], raw[ID_BYTES : ID_BYTES + 4], raw[ID_BYTES + 4 :]
        expires = struct.unpack(">I", exp)[0]
        if not hmac.compare_digest(mac, self._mac(raw_id, expires)):
            raise LinkError("bad_mac")
        if now_s >= expires:
            raise LinkError("expired")
        return base64.urlsafe_b64encode(raw_id).decode()
