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
Plaintext, JSON: {"gateway": id, "devices": [{"id", "kind", "key" (hex), "venue", "zone",
optional "broker_hash" (the device's local-broker password as Mosquitto's $7$ hash,
agent/shared/broker_auth.py: the gateway never learns the password itself)}]}.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from agent.shared.broker_auth import check_hash
from agent.shared.errors import ConfigError
from agent.shared.keyfiles import (
    GATEWAY_ID,
    labelled_pem,
    load_labelled_public_key,
    public_pem,
    raw_fingerprint,
    raw_public,
)
from agent.shared.protocol import DEVICE_BUNDLE_INFO, DEVICE_KINDS, IDENT_RE
from agent.shared.registry import KEY_BYTES, Device

MAGIC = b"GE-DEVICES-1\n"
MAX_BUNDLE = 4 << 20
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def fingerprint(public: X25519PublicKey) -> str:
    """Names a gateway's sealing key in a bundle header (the recipient)."""
    return raw_fingerprint(raw_public(public))


def seal_public_text(gateway_id: str, public: X25519PublicKey) -> bytes:
    """The `.x25519.pub` file of a gateway: its id, then its X25519 public key."""
    return labelled_pem(GATEWAY_ID, gateway_id, public_pem(public))


def load_seal_public_key(path: Path) -> tuple[str, X25519PublicKey]:
    """(gateway id, X25519 public key) from a `.x25519.pub` file."""
    # mypy sees cryptography's key classes as abstract; the class is what isinstance needs
    return load_labelled_public_key(
        path,
        GATEWAY_ID,
        X25519PublicKey,  # type: ignore[type-abstract]
        "an X25519 public key (the gateway's .x25519.pub file)",
    )


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
            {"id": d.id, "kind": d.kind, "key": d.key.hex(), "venue": d.venue, "zone": d.zone}
            | ({"broker_hash": d.broker_hash} if d.broker_hash is not None else {})
            for d in devices
        ],
    }
    plain = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + header + b"\n" + _SUITE.encrypt(plain, public, info=DEVICE_BUNDLE_INFO + MAGIC + header + b"\n")


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
        plain = _SUITE.decrypt(data[end + 1 :], private, info=DEVICE_BUNDLE_INFO + MAGIC + header_line)
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
            if d["kind"] not in DEVICE_KINDS or len(key) != KEY_BYTES:
                raise ValueError(f"device {i} ({d['id']}): bad kind or key length")
            broker_hash = d.get("broker_hash")
            if broker_hash is not None:
                check_hash(str(broker_hash), f"device {i} ({d['id']}) broker_hash")
            devices.append(
                Device(
                    str(d["id"]),
                    str(d["kind"]),
                    key,
                    str(d["venue"]),
                    str(d["zone"]),
                    None if broker_hash is None else str(broker_hash),
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"{path}: bundle content unusable: {exc}; nothing imported") from None
    return devices
