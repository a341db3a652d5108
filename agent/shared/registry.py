"""The device registry: which devices this gateway accepts, with their keys.

A TOML file, mode 0600 (it holds device keys):

    [[device]]
    id = "AP-0001"           # docs/protocol.md identifier
    kind = "alarm_post"      # alarm_post | wristband | sensor (protocol.DEVICE_KINDS)
    key = "…64 hex digits…"  # 32-byte device key
    venue = "venue-1"
    zone = "entrance"
    broker_hash = "$7$101$…"  # optional: the device's local-broker password, hashed
                             # (agent/shared/broker_auth.py); devices on a serial line have none
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.shared import tomlcheck
from agent.shared.broker_auth import check_hash
from agent.shared.errors import ConfigError
from agent.shared.files import write_atomic
from agent.shared.protocol import DEVICE_KINDS

KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    key: bytes = field(repr=False)
    venue: str
    zone: str
    broker_hash: str | None = field(default=None, repr=False)  # Mosquitto $7$ hash of its broker password


class Registry:
    """Devices by id and by COSE kid (the id's ASCII bytes)."""

    def __init__(self, devices: list[Device]) -> None:
        self._by_id = {d.id: d for d in devices}
        self._by_kid = {d.id.encode(): d for d in devices}
        self._revoked: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_id.values())

    def get(self, device_id: str) -> Device | None:
        return self._by_id.get(device_id)

    def by_kid(self, kid: bytes) -> Device | None:
        return self._by_kid.get(kid)

    def revoke(self, device_id: str) -> Device | None:
        """Remove a device central revoked; its frames are then rejected as `revoked`."""
        self.mark_revoked(device_id)
        self._by_kid.pop(device_id.encode(), None)
        return self._by_id.pop(device_id, None)

    def mark_revoked(self, device_id: str) -> None:
        self._revoked.add(device_id.encode())

    def is_revoked(self, kid: bytes) -> bool:
        return kid in self._revoked


def load_registry(path: Path, check_mode: bool = True) -> Registry:
    """Read and validate a registry file; ConfigError names the file, device and field."""
    path = Path(path)
    if check_mode:
        tomlcheck.require_private(path, "device keys")
    top = tomlcheck.Table(path, tomlcheck.load(path))
    devices: list[Device] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(top.tables("device")):
        dev_id = t.ident("id")
        if dev_id in seen:
            raise t.fail("id", f"duplicate device id {dev_id!r} (also device[{seen[dev_id]}])")
        seen[dev_id] = i
        kind = t.text("kind")
        if kind not in DEVICE_KINDS:
            raise t.fail("kind", f"expected one of {', '.join(DEVICE_KINDS)}, got {kind!r}")
        key_hex = t.text("key")
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise t.fail("key", f"expected {2 * KEY_BYTES} hex digits, got non-hex text") from None
        if len(key) != KEY_BYTES:
            raise t.fail("key", f"expected {2 * KEY_BYTES} hex digits ({KEY_BYTES} bytes), got {len(key_hex)}")
        broker_hash = t.text("broker_hash", None)
        if broker_hash is not None:
            try:
                check_hash(broker_hash, "broker_hash")
            except ConfigError as exc:
                raise t.fail("broker_hash", str(exc).split(": ", 1)[1]) from None
        devices.append(Device(dev_id, kind, key, t.ident("venue"), t.text("zone"), broker_hash))
        t.no_unknown_keys()
    top.no_unknown_keys()
    # an empty registry is valid: a new gateway before its first enrollment bundle, or one
    # whose devices were all revoked; a misspelt table name is caught as an unknown key above
    return Registry(devices)


def write_registry(path: Path, devices: list[Device]) -> None:
    """Write a registry file with mode 0600, atomically (a new file renamed over the old one)."""
    lines = []
    for d in devices:
        lines += [
            "[[device]]",
            f"id = {json.dumps(d.id)}",
            f"kind = {json.dumps(d.kind)}",
            f'key = "{d.key.hex()}"',
            f"venue = {json.dumps(d.venue)}",
            # JSON string escapes are valid TOML basic-string escapes
            f"zone = {json.dumps(d.zone)}",
            *([f"broker_hash = {json.dumps(d.broker_hash)}"] if d.broker_hash is not None else []),
            "",
        ]
    write_atomic(Path(path), "\n".join(lines).encode())
