"""Central's list of enrolled gateways: written by `guardian-provision enroll-server`, read by
`guardian-agent verify --gateway-keys FILE`.

    {"format": "ge-gateways-1",
     "gateways": {"<id>": {"key": hex Ed25519 (32), "seal_key": hex X25519 (32), "venue": id,
                           "serial": text, "claim": id, "enrolled": unix s, "revoked": unix s | null}}}

The file holds public keys only (mode 0644) and is replaced atomically. A revoked gateway keeps
its last key in the file, so the verifier can tell an authentic batch from a revoked gateway
(`revoked_gateway`) from a forgery (`bad_signature`). Rotation replaces `key`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.shared.errors import ConfigError
from agent.shared.files import write_atomic
from agent.shared.protocol import IDENT_RE

FORMAT = "ge-gateways-1"
MAX_FILE = 64 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EnrolledGateway:
    id: str
    key: str  # hex
    seal_key: str  # hex
    venue: str
    serial: str
    claim: str
    enrolled: int
    revoked: int | None = None


def write_gateways(path: Path, gateways: Iterable[EnrolledGateway]) -> None:
    doc = {"format": FORMAT, "gateways": {g.id: {k: v for k, v in asdict(g).items() if k != "id"} for g in gateways}}
    write_atomic(Path(path), (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o644)


def load_gateways(path: Path) -> dict[str, EnrolledGateway]:
    """The gateways in `path`; ConfigError names the entry and what is wrong."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    if len(raw) > MAX_FILE:
        raise ConfigError(f"{path}: larger than {MAX_FILE} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("gateways"), dict):
        raise ConfigError(f"{path}: not an enrolled-gateways file (format {FORMAT})")
    out: dict[str, EnrolledGateway] = {}
    for gw, rec in doc["gateways"].items():
        try:
            if not IDENT_RE.fullmatch(gw) or not isinstance(rec, dict):
                raise ValueError("bad gateway id or entry")
            g = EnrolledGateway(id=gw, **rec)
            if len(bytes.fromhex(g.key)) != 32 or len(bytes.fromhex(g.seal_key)) != 32:
                raise ValueError("keys must be 32 bytes of hex")
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(g.key))
            if g.revoked is not None and type(g.revoked) is not int:
                raise ValueError("revoked must be a unix time or null")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: gateway {gw!r}: {exc}") from None
        out[gw] = g
    return out


class GatewayKeys:
    """The verifier's view of the file: keys by kid, revoked kids; reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.keys: dict[bytes, Ed25519PublicKey] = {}
        self.revoked: set[bytes] = set()
        self._stamp: tuple[int, int, int] | None = None
        if not self.refresh():
            raise ConfigError(f"{self.path}: cannot be read")

    def refresh(self) -> bool:
        """Reload when the file was replaced or changed; True when the keys changed.

        A file that cannot be read or parsed leaves the previous keys in place (logged).
        """
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stamp is None:
                raise ConfigError(f"{self.path}: {exc.strerror}") from exc
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        try:
            gateways = load_gateways(self.path)
        except ConfigError as exc:
            if self._stamp is None:
                raise
            log.warning("gateway_keys_unreadable reason=%s", exc)
            return False
        self._stamp = stamp
        self.keys = {g.id.encode(): Ed25519PublicKey.from_public_bytes(bytes.fromhex(g.key)) for g in gateways.values()}
        self.revoked = {g.id.encode() for g in gateways.values() if g.revoked is not None}
        log.info("gateway_keys_loaded gateways=%d revoked=%d", len(self.keys), len(self.revoked))
        return True
