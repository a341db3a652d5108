"""Central's Ed25519 key: created by `guardian-agent keygen`, used to sign commands (docs/protocol.md §8)
and enrollment configs (docs/provisioning.md).

The private key file (mode 0600) and the public key file next to it (`<key>.pub`, which
gateways pin as `[central] command_key`) both start with a `Key-Id: <id>` line: the kid central
puts in every protected header. Gateways read the public file with
agent/shared/keyfiles.py load_central_public_key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.shared import tomlcheck
from agent.shared.errors import ConfigError
from agent.shared.files import write_atomic, write_new_private
from agent.shared.keyfiles import KEY_ID, labelled_pem, load_private_key, pkcs8_pem, public_pem, read_labelled_pem
from agent.shared.protocol import IDENT_RE


def load_central_private_key(path: Path) -> tuple[str, Ed25519PrivateKey]:
    """(key id, key) from central's private key file (mode 0600)."""
    path = Path(path)
    tomlcheck.require_private(path, "central's private key")  # before anything is read from it
    kid, pem = read_labelled_pem(path, KEY_ID, "PRIVATE KEY")
    # mypy sees cryptography's key classes as abstract; the class is what isinstance needs
    key = load_private_key(path, Ed25519PrivateKey, "Ed25519", "central's private key", pem)  # type: ignore[type-abstract]
    return kid, key


def generate_central_key(path: Path, kid: str) -> Path:
    """A new central key: `path` (0600, never overwritten) and `path`.pub; returns the .pub path."""
    path = Path(path)
    if not IDENT_RE.fullmatch(kid):
        raise ConfigError(f"key id {kid!r}: expected 1-32 characters from A-Z a-z 0-9 . _ -")
    key = Ed25519PrivateKey.generate()
    write_new_private(path, labelled_pem(KEY_ID, kid, pkcs8_pem(key)), "exists; refusing to overwrite a key")
    pub = path.with_name(path.name + ".pub")
    write_atomic(pub, labelled_pem(KEY_ID, kid, public_pem(key.public_key())), 0o644)
    return pub
