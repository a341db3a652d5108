"""The local broker's credentials and access rules, in Mosquitto's own file formats.

Every device that speaks MQTT has its own broker password, made by the provisioning station
(`new_password()`, written into the device's config.json and kept in the encrypted
inventory). The gateway never sees the password: the sealed device bundle carries its hash
(`password_hash()`), the registry keeps it, and `guardian-agent devices import` writes

- Mosquitto's password file: one `user:hash` line per device and one for the agent, the hash
  in Mosquitto's PBKDF2-SHA512 format `$7$<iterations>$<base64 salt>$<base64 hash>`
  (mosquitto_passwd's format since 2.0; salt 12 bytes, hash 64 bytes);
- Mosquitto's ACL file (`acl_text()`): a device may publish only on its own `up` and
  `status` topics and read only its own `down` topic; the agent reads every device's `up` and
  `status` and writes every `down`.

With `use_username_as_clientid true` in the broker's config (packaging/mosquitto/), the user
name is each client's id, so nobody takes another client's id (the agent's included) without
its password, and the ACL patterns name the device by its user name.

Why 101 PBKDF2 iterations (mosquitto_passwd's default): iterations slow down guessing a
password from a stolen hash, which matters for passwords people choose. These passwords are
192 random bits, out of reach of any guessing, so more iterations would only cost the broker
CPU at every CONNECT, which anyone on the venue network can make it spend.
Written with hashlib rather than by running mosquitto_passwd: the password would otherwise
pass through a command line or a terminal prompt; tests/test_broker_security.py holds the
result to what a real Mosquitto accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable

from agent.shared.errors import ConfigError
from agent.shared.protocol import DEVICE_TOPIC_PREFIX, IDENT_RE

ITERATIONS = 101
SALT_BYTES = 12
PASSWORD_BYTES = 24  # 192 bits, 32 characters of URL-safe base64
_HASH_RE = re.compile(r"\$7\$([0-9]{1,7})\$([A-Za-z0-9+/=]{16})\$([A-Za-z0-9+/=]{88})")
_PASSWORD_RE = re.compile(r"[\x21-\x7e]{16,128}")  # printable ASCII, no space: config.json, no escaping


def new_password() -> str:
    """A new random broker password (URL-safe base64, 32 characters)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def check_password(password: str, where: str) -> str:
    """`password` if it is usable as a broker password; ConfigError naming `where`, never the value."""
    if not _PASSWORD_RE.fullmatch(password):
        raise ConfigError(f"{where}: expected 16 to 128 printable ASCII characters without spaces")
    return password


def password_hash(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto's `$7$` hash of `password`, with a fresh random salt unless one is given."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_hash(text: str, where: str) -> str:
    """`text` if it is a `$7$` hash Mosquitto reads; ConfigError naming `where` otherwise."""
    m = _HASH_RE.fullmatch(text)
    try:
        ok = m is not None and int(m[1]) >= 1 and len(base64.b64decode(m[2], validate=True)) == SALT_BYTES
        ok = ok and m is not None and len(base64.b64decode(m[3], validate=True)) == 64
    except binascii.Error:
        ok = False
    if not ok:
        raise ConfigError(f"{where}: expected a Mosquitto PBKDF2-SHA512 hash ($7$iterations$salt$hash)")
    return text


def verify(password: str, hashed: str) -> bool:
    """True when `password` matches the `$7$` hash (what Mosquitto checks at CONNECT)."""
    _, _, iterations, salt, digest = hashed.split("$")
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(got, base64.b64decode(digest))


def password_file_text(users: Iterable[tuple[str, str]]) -> bytes:
    """Mosquitto's password file: `user:hash` per line; users are identifiers (no `:`)."""
    lines = []
    for user, hashed in users:
        if not IDENT_RE.fullmatch(user):
            raise ConfigError(f"broker user {user!r} is not an identifier")
        lines.append(f"{user}:{check_hash(hashed, f'broker user {user}')}")
    return ("\n".join(lines) + "\n").encode()


def acl_text(agent_user: str) -> bytes:
    """Mosquitto's ACL file: each device its own topics (by user name), the agent all of them."""
    if not IDENT_RE.fullmatch(agent_user):
        raise ConfigError(f"broker user {agent_user!r} is not an identifier")
    p = DEVICE_TOPIC_PREFIX
    return (
        "# Written by guardian-agent devices import (agent/shared/broker_auth.py); do not edit.\n"
        "# Devices: the user name is the device id and the client id (use_username_as_clientid).\n"
        f"pattern write {p}%u/up\n"
        f"pattern write {p}%u/status\n"
        f"pattern read {p}%u/down\n"
        "# The gateway agent: every device's frames and status in, receipts out.\n"
        f"user {agent_user}\n"
        f"topic read {p}+/up\n"
        f"topic read {p}+/status\n"
        f"topic write {p}+/down\n"
    ).encode()
