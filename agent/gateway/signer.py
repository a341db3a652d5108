"""The gateway's Ed25519 key and the hash-chained batches it signs (docs/protocol.md §4).

The private key is a PKCS#8 PEM file created with mode 0600 on first run; the public key is
written next to it as `<key>.pub`, a PEM block preceded by a `Gateway-Id:` line (RFC 7468
explanatory text) so a verifier binds the key to the gateway id it was made for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.shared import cose
from agent.shared.files import write_atomic
from agent.shared.frames import Event
from agent.shared.keyfiles import GATEWAY_ID, labelled_pem, load_or_create_private_key, public_pem
from agent.shared.protocol import AAD_BATCH


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def load_or_create_key(key_path: Path, gateway_id: str) -> Ed25519PrivateKey:
    """The gateway's signing key; created (0600, O_EXCL) when the file does not exist."""
    key_path = Path(key_path)
    # mypy sees cryptography's key classes as abstract; the class is what isinstance needs
    key = load_or_create_private_key(key_path, Ed25519PrivateKey, "Ed25519", "the gateway's private key")  # type: ignore[type-abstract]
    write_public_key(public_key_path(key_path), gateway_id, key.public_key())
    return key


def write_public_key(path: Path, gateway_id: str, public: Ed25519PublicKey) -> None:
    """The `.pub` file central verifies batches with (read by keyfiles.load_gateway_public_key).

    Written only when it is missing or differs: a start on a full disk must not need space.
    """
    text = labelled_pem(GATEWAY_ID, gateway_id, public_pem(public))
    try:
        if Path(path).read_bytes() == text:
            return
    except OSError:
        pass
    write_atomic(path, text, 0o644)


def batch_oldest_received(blob: bytes) -> int:
    """Receive time (unix ms) of the oldest event in a batch this gateway sealed."""
    payload = cbor2.loads(cbor2.loads(blob).value[2])
    return min(int(e[7]) for e in payload[5])


def batch_events(blob: bytes) -> list[Event]:
    """The events of a batch this gateway sealed, in order (its P0 events come first)."""
    payload = cbor2.loads(cbor2.loads(blob).value[2])
    return [Event.decode(e) for e in payload[5]]


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
