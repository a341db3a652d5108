"""Key files: central's Ed25519 command key (the files `guardian-agent keygen` writes and their
loaders), and the creation and loading of every private key file the agent keeps.

The private key is a PKCS#8 PEM file (mode 0600) and the public key a PEM file next to it
(`<key>.pub`); both start with a `Key-Id: <id>` line (RFC 7468 explanatory text), the kid
central puts in every command's protected header (docs/protocol.md §8).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.shared import tomlcheck
from agent.shared.errors import ConfigError

IDENT_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")

PrivateKey = TypeVar("PrivateKey", Ed25519PrivateKey, X25519PrivateKey)

_KID_RE = re.compile(rb"^Key-Id: *([A-Za-z0-9._-]{1,32}) *$", re.M)
_PRIVATE_RE = re.compile(rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----", re.S)
_PUBLIC_RE = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def _key_file(path: Path, pattern: re.Pattern[bytes], what: str) -> tuple[str, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    kid = _KID_RE.search(raw)
    if not kid:
        raise ConfigError(f"{path}: no 'Key-Id: <id>' line before the PEM block")
    pem = pattern.search(raw)
    if not pem:
        raise ConfigError(f"{path}: no PEM {what} block")
    return kid.group(1).decode(), pem.group(0)


def load_central_public_key(path: Path) -> tuple[str, Ed25519PublicKey]:
    """(key id, key) from a central `.pub` file written by `guardian-agent keygen`."""
    path = Path(path)
    kid, pem = _key_file(path, _PUBLIC_RE, "public key")
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"{path}: the PEM block is not a public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 public key")
    return kid, key


def load_central_private_key(path: Path) -> tuple[str, Ed25519PrivateKey]:
    """(key id, key) from central's private key file (mode 0600)."""
    path = Path(path)
    tomlcheck.require_private(path, "central's private key")
    kid, pem = _key_file(path, _PRIVATE_RE, "private key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return kid, key


def generate_central_key(path: Path, kid: str) -> Path:
    """A new central key: `path` (0600, never overwritten) and `path`.pub; returns the .pub path."""
    path = Path(path)
    if not IDENT_RE.fullmatch(kid):
        raise ConfigError(f"key id {kid!r}: expected 1-32 characters from A-Z a-z 0-9 . _ -")
    key = Ed25519PrivateKey.generate()
    write_new_private(path, f"Key-Id: {kid}\n".encode() + _pkcs8(key), "exists; refusing to overwrite a key")
    pub = path.with_name(path.name + ".pub")
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(pub, f"Key-Id: {kid}\n".encode() + public, 0o644)
    return pub


def _pkcs8(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_new_private(path: Path, data: bytes, exists: str) -> None:
    """Create `path` with mode 0600, never over an existing file (`exists` says why), and fsync it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: {exists}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_or_create_private_key(path: Path, key_type: type[PrivateKey], label: str, what: str) -> PrivateKey:
    """The PKCS#8 PEM key in `path` (mode 0600 enforced), created with O_EXCL when absent.

    `label` names the algorithm in errors ("Ed25519"), `what` the key ("the gateway's private key").
    """
    path = Path(path)
    if path.exists():
        tomlcheck.require_private(path, what)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not an unencrypted PEM private key") from exc
        if not isinstance(key, key_type):
            raise ConfigError(f"{path}: not an {label} key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    new = key_type.generate()
    write_new_private(path, _pkcs8(new), "appeared while being created; start again")
    return new


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write, fsync, rename over `path`, fsync the directory: the old or the new file, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
