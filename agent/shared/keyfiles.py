"""Key files: labelled PEM files, and the private keys the gateway and central create on first use.

A public key file, and central's private key file, is a PEM block preceded by one label line
(RFC 7468 explanatory text) that binds the key to an identifier:

    Key-Id: central          central's command key (guardian-agent keygen): the kid of commands
    Gateway-Id: GW-1         a gateway's Ed25519 signing key or X25519 sealing key (`.pub` files)

`labelled_pem()` writes that text and `read_labelled_pem()` is the one reader. A private key
is a PKCS#8 PEM file with mode 0600, created with O_EXCL (agent/shared/files.py).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from agent.shared import tomlcheck
from agent.shared.errors import ConfigError
from agent.shared.files import write_new_private

KEY_ID = "Key-Id"
GATEWAY_ID = "Gateway-Id"

PrivateKey = TypeVar("PrivateKey", Ed25519PrivateKey, X25519PrivateKey)
PublicKey = TypeVar("PublicKey", Ed25519PublicKey, X25519PublicKey)

_BLOCKS = {
    "PUBLIC KEY": re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S),
    "PRIVATE KEY": re.compile(rb"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----", re.S),
}


def labelled_pem(label: str, value: str, pem: bytes) -> bytes:
    """The text of a labelled key file: `<label>: <value>`, then the PEM block."""
    return f"{label}: {value}\n".encode() + pem


def public_pem(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_fingerprint(raw: bytes) -> str:
    """Names a public key without showing it: the first 32 hex digits of SHA-256 over its raw bytes."""
    return hashlib.sha256(raw).hexdigest()[:32]


def pkcs8_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def read_labelled_pem(path: Path, label: str, block: str = "PUBLIC KEY") -> tuple[str, bytes]:
    """(the label's value, the PEM block) of a labelled key file; ConfigError says what is missing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    value = re.search(rb"^" + re.escape(label.encode()) + rb": *([A-Za-z0-9._-]{1,32}) *$", raw, re.M)
    if not value:
        raise ConfigError(f"{path}: no '{label}: <id>' line before the PEM block")
    pem = _BLOCKS[block].search(raw)
    if not pem:
        raise ConfigError(f"{path}: no PEM {block.lower()} block")
    return value.group(1).decode(), pem.group(0)


def load_labelled_public_key(path: Path, label: str, key_type: type[PublicKey], what: str) -> tuple[str, PublicKey]:
    """(the label's value, the key) from a labelled public key file; `what` names the file in errors."""
    value, pem = read_labelled_pem(path, label)
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"{path}: the PEM block is not a public key") from exc
    if not isinstance(key, key_type):
        raise ConfigError(f"{path}: not {what}")
    return value, key


def load_central_public_key(path: Path) -> tuple[str, Ed25519PublicKey]:
    """(key id, key) from a central `.pub` file written by `guardian-agent keygen`."""
    # mypy sees cryptography's key classes as abstract; the class is what isinstance needs
    return load_labelled_public_key(path, KEY_ID, Ed25519PublicKey, "an Ed25519 public key")  # type: ignore[type-abstract]


def load_gateway_public_key(path: Path) -> tuple[str, Ed25519PublicKey]:
    """(gateway id, key) from a gateway's `.pub` file (agent/gateway/signer.py writes it)."""
    # mypy sees cryptography's key classes as abstract; the class is what isinstance needs
    return load_labelled_public_key(path, GATEWAY_ID, Ed25519PublicKey, "an Ed25519 public key")  # type: ignore[type-abstract]


def load_private_key(
    path: Path, key_type: type[PrivateKey], label: str, what: str, pem: bytes | None = None
) -> PrivateKey:
    """The PKCS#8 PEM key in `path` (mode 0600 enforced, or its block `pem` when given).

    `label` names the algorithm in errors ("Ed25519"), `what` the key ("the gateway's private key").
    """
    path = Path(path)
    tomlcheck.require_private(path, what)
    try:
        key = serialization.load_pem_private_key(path.read_bytes() if pem is None else pem, password=None)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, key_type):
        raise ConfigError(f"{path}: not an {label} key")
    return key


def load_or_create_private_key(path: Path, key_type: type[PrivateKey], label: str, what: str) -> PrivateKey:
    """The PKCS#8 PEM key in `path` (mode 0600 enforced), created with O_EXCL when absent."""
    path = Path(path)
    if path.exists():
        return load_private_key(path, key_type, label, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = key_type.generate()
    write_new_private(path, pkcs8_pem(new), "appeared while being created; start again")
    return new
