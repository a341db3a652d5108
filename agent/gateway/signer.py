"""The gateway's Ed25519 key and the hash-chained batches it signs (docs/protocol.md §4).

The private key is a PKCS#8 PEM file created with mode 0600 on first run; the public key is
written next to it as `<key>.pub`, a PEM block preceded by a `Gateway-Id:` line (RFC 7468
explanatory text) so a verifier binds the key to the gateway id it was made for.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.shared import cose
from agent.shared.errors import ConfigError
from agent.shared.keyfiles import load_or_create_private_key

AAD_BATCH = b"ge/1/batch"
ZERO_HASH = bytes(32)


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def load_or_create_key(key_path: Path, gateway_id: str) -> Ed25519PrivateKey:
    """The gateway's signing key; created (0600, O_EXCL) when the file does not exist."""
    key_path = Path(key_path)
    # mypy sees cryptography\'s key classes as abstract; the class is what isinstance needs
    key = load_or_create_private_key(key_path, Ed25519PrivateKey, "Ed25519", "the gateway's private key")  # type: ignore[type-abstract]
    write_public_key(public_key_path(key_path), gateway_id, key.public_key())
    return key


def write_public_key(path: Path, gateway_id: str, public: Ed25519PublicKey) -> None:
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = f"Gateway-Id: {gateway_id}\n" + pem.decode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_PEM_RE = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def load_public_key(path: Path) -> tuple[str, Ed25519PublicKey]:
    """(gateway id, key) from a `.pub` file written by write_public_key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    m = re.search(rb"^Gateway-Id: *([A-Za-z0-9._-]{1,32}) *$", raw, re.M)
    if not m:
        raise ConfigError(f"{path}: no 'Gateway-Id: <id>' line before the PEM block")
    pem = _PEM_RE.search(raw)
    if not pem:
        raise ConfigError(f"{path}: no PEM public key block")
    try:
        key = serialization.load_pem_public_key(pem.group(0))
    except ValueError as exc:
        raise ConfigError(f"{path}: the PEM block is not a public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 public key")
    return m.group(1).decode(), key


def batch_oldest_received(blob: bytes) -> int:
    """Receive time (unix ms) of the oldest event in a batch this gateway sealed."""
    payload = cbor2.loads(cbor2.loads(blob).value[2])
    return min(int(e[7]) for e in payload[5])


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """A signed batch as published; `flagged` lists the events that want receipts."""

    epoch: int
    seq: int
    blob: bytes
    hash: bytes
    events: int
    prio: int
    flagged: tuple[tuple[str, int, int], ...]


class Signer:
    """Builds and signs batches, advancing the hash chain (epoch, seq, prev hash)."""

    def __init__(self, key: Ed25519PrivateKey, gateway_id: str, epoch: int, seq: int, prev: bytes) -> None:
        self.key = key
        self.gateway_id = gateway_id
        self.epoch = epoch
        self.seq = seq
        self.prev = prev
        self.protected = cose.protected_header(cose.ALG_EDDSA, gateway_id.encode())
        # the fixed start of every payload: canonical map(6), key 1 = gateway id
        self._prefix = b"\xa6\x01" + cose.head(3, len(gateway_id)) + gateway_id.encode()

    def payload(self, seq: int, prev: bytes, event_blobs: list[bytes], created_ms: int) -> bytes:
        """The canonical batch payload, assembled from already-canonical event encodings."""
        return b"".join(
            (
                self._prefix,
                b"\x02",
                cose.head(0, self.epoch),
                b"\x03",
                cose.head(0, seq),
                b"\x04",
                cose.bstr(prev),
                b"\x05",
                cose.head(4, len(event_blobs)),
                *event_blobs,
                b"\x06",
                cose.head(0, created_ms),
            )
        )

    def seal(
        self,
        event_blobs: list[bytes],
        created_ms: int,
        prio: int,
        flagged: tuple[tuple[str, int, int], ...] = (),
    ) -> SealedBatch:
        seq = self.seq + 1
        blob = cose.sign1_encode(
            self.key, self.protected, self.payload(seq, self.prev, event_blobs, created_ms), AAD_BATCH
        )
        digest = hashlib.sha256(blob).digest()
        self.seq, self.prev = seq, digest
        return SealedBatch(self.epoch, seq, blob, digest, len(event_blobs), prio, flagged)
