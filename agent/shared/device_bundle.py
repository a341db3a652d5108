"""Device-enrollment bundles: device keys for one gateway, sealed to that gateway's X25519 key.

The gateway's sealing key is an X25519 key next to its Ed25519 signing key:
`<key_file>.x25519` (PKCS#8 PEM, mode 0600, created by `guardian-agent devices key`) and
`<key_file>.x25519.pub` (a `Gateway-Id: <id>` line, then the PEM public key) that the
provisioning station seals to. Bundle file:

    line 1   GE-DEVICES-1
    line 2   header, JSON: {"count": n, "created": unix s, "gateway": id, "recipient": fp}
    rest     HPKE (RFC 9180, base mode) DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
             single-shot ciphertext; info = "ge/1/devices" 0x00 || line 1 || line 2

fp is the first 32 hex digits of SHA-256 over the raw recipient public key, so a bundle
sealed to another gateway is named as such before any decryption; the header is bound into
the key schedule through `info`, so an edited header fails like an edited ciphertext.
Plaintext, JSON: {"gateway": id, "devices": [{"id", "kind", "key" (hex), "venue", "zone"}]}.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from agent.gateway.command_handler import STATE_FILE, key_fingerprint, load_state
from agent.shared.errors import ConfigError
from agent.shared.keyfiles import IDENT_RE, load_or_create_private_key, write_atomic
from agent.shared.registry import KEY_BYTES, KINDS, Device, load_registry, write_registry

if TYPE_CHECKING:
    from agent.gateway.config import AgentConfig

MAGIC = b"GE-DEVICES-1\n"
INFO = b"ge/1/devices\x00"
MAX_BUNDLE = 4 << 20
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_GW_RE = re.compile(rb"^Gateway-Id: *([A-Za-z0-9._-]{1,32}) *$", re.M)
_PUBLIC_RE = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def seal_key_path(key_file: Path) -> Path:
    """The X25519 sealing key's file next to the gateway's Ed25519 key file."""
    return key_file.with_name(key_file.name + ".x25519")


def fingerprint(public: X25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def load_or_create_seal_key(path: Path, gateway_id: str) -> tuple[X25519PrivateKey, Path]:
    """The gateway's X25519 key (created 0600 when absent) and the path of its .pub file."""
    path = Path(path)
    # mypy sees cryptography's X25519PrivateKey as abstract; the class is what isinstance needs
    key = load_or_create_private_key(path, X25519PrivateKey, "X25519", "the gateway's sealing key")  # type: ignore[type-abstract]
    pub = path.with_name(path.name + ".pub")
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(pub, f"Gateway-Id: {gateway_id}\n".encode() + public, 0o644)
    return key, pub


def load_seal_public_key(path: Path) -> tuple[str, X25519PublicKey]:
    """(gateway id, X25519 public key) from a `.x25519.pub` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    gw = _GW_RE.search(raw)
    pem = _PUBLIC_RE.search(raw)
    if not gw or not pem:
        raise ConfigError(f"{path}: expected a 'Gateway-Id: <id>' line and a PEM public key")
    try:
        key = serialization.load_pem_public_key(pem.group(0))
    except ValueError as exc:
        raise ConfigError(f"{path}: the PEM block is not a public key") from exc
    if not isinstance(key, X25519PublicKey):
        raise ConfigError(f"{path}: not an X25519 public key (the gateway's .x25519.pub file)")
    return gw.group(1).decode(), key


def seal_devices(public: X25519PublicKey, gateway_id: str, devices: list[Device], created: int) -> bytes:
    """A bundle of `devices` that only the holder of `public`'s private key can open."""
    header = json.dumps(
        {"count": len(devices), "created": created, "gateway": gateway_id, "recipient": fingerprint(public)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    body = {
        "gateway": gateway_id,
        "devices": [
            {"id": d.id, "kind": d.kind, "key": d.key.hex(), "venue": d.venue, "zone": d.zone} for d in devices
        ],
    }
    plain = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + header + b"\n" + _SUITE.encrypt(plain, public, info=INFO + MAGIC + header + b"\n")


def open_devices(path: Path, private: X25519PrivateKey, gateway_id: str) -> list[Device]:
    """The devices in a bundle for this gateway; ConfigError says why one cannot be used."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BUNDLE + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    if len(data) > MAX_BUNDLE or not data.startswith(MAGIC):
        raise ConfigError(f"{path}: not a device-enrollment bundle")
    end = data.find(b"\n", len(MAGIC))
    if end < 0 or end - len(MAGIC) > 1024:
        raise ConfigError(f"{path}: bundle header missing or too long")
    header_line = data[len(MAGIC) : end + 1]
    try:
        header = json.loads(header_line)
        recipient, sealed_for = str(header["recipient"]), str(header["gateway"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: bundle header unreadable ({exc})") from None
    mine = fingerprint(private.public_key())
    if recipient != mine or sealed_for != gateway_id:
        raise ConfigError(
            f"{path}: sealed to gateway {sealed_for!r} (key {recipient[:16]}), "
            f"not to this gateway {gateway_id!r} (key {mine[:16]}); nothing imported"
        )
    try:
        plain = _SUITE.decrypt(data[end + 1 :], private, info=INFO + MAGIC + header_line)
    except Exception:  # cryptography raises InvalidTag, or ValueError for a short ciphertext
        raise ConfigError(f"{path}: the bundle was altered or damaged (decryption failed); nothing imported") from None
    try:
        body = json.loads(plain)
        if body["gateway"] != gateway_id:
            raise ValueError(f"inner gateway {body['gateway']!r}")
        devices = []
        for i, d in enumerate(body["devices"]):
            key = bytes.fromhex(d["key"])
            if not all(IDENT_RE.fullmatch(str(d[k])) for k in ("id", "venue", "zone")):
                raise ValueError(f"device {i}: id, venue and zone must be identifiers")
            if d["kind"] not in KINDS or len(key) != KEY_BYTES:
                raise ValueError(f"device {i} ({d['id']}): bad kind or key length")
            devices.append(Device(str(d["id"]), str(d["kind"]), key, str(d["venue"]), str(d["zone"])))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: bundle content unusable: {exc}; nothing imported") from None
    return devices


def import_devices(cfg: AgentConfig, bundle: Path) -> tuple[int, int]:
    """Merge a bundle's devices into the registry file; returns (added, updated).

    Checked before anything is written: the bundle opens with this gateway's sealing key, every
    device is for this gateway's venue, none takes the gateway's id, and none carries a key
    central revoked (the command state file). Any failure changes nothing.
    """
    key_path = seal_key_path(cfg.key_file)
    if not key_path.exists():
        raise ConfigError(
            f"{key_path}: no sealing key; create it with `guardian-agent devices key --config {cfg.path}`"
        )
    private, _ = load_or_create_seal_key(key_path, cfg.gateway_id)
    devices = open_devices(bundle, private, cfg.gateway_id)
    revoked = load_state(cfg.data_dir / STATE_FILE).revoked
    for d in devices:
        if d.venue != cfg.venue:
            raise ConfigError(f"{bundle}: device {d.id} is for venue {d.venue!r}, this gateway serves {cfg.venue!r}")
        if d.id == cfg.gateway_id:
            raise ConfigError(f"{bundle}: device id {d.id} is this gateway's own id")
        if revoked.get(d.id) == key_fingerprint(d.key):
            raise ConfigError(f"{bundle}: device {d.id} was revoked by central with this key; nothing imported")
    current = list(load_registry(cfg.devices_file)) if cfg.devices_file.exists() else []
    by_id = {d.id: d for d in current}
    added = sum(1 for d in devices if d.id not in by_id)
    updated = sum(1 for d in devices if d.id in by_id and by_id[d.id] != d)
    for d in devices:
        by_id[d.id] = d
    write_registry(cfg.devices_file, list(by_id.values()))
    return added, updated
