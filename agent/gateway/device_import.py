"""The gateway's side of device-enrollment bundles (agent/shared/device_bundle.py): its X25519
sealing key, and `guardian-agent devices import`, which merges a bundle into the registry.

    guardian-agent devices key --config FILE            creates <key_file>.x25519 (0600) and .x25519.pub
    guardian-provision export --format gateway ...      seals devices to that .pub (the station)
    guardian-agent devices import --config FILE BUNDLE  opens the bundle, checks, merges
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.gateway import broker_files
from agent.gateway.command_handler import STATE_FILE, load_state
from agent.gateway.config import AgentConfig
from agent.shared.commands import key_fingerprint
from agent.shared.device_bundle import open_devices, seal_public_text
from agent.shared.errors import ConfigError
from agent.shared.files import write_atomic
from agent.shared.keyfiles import load_or_create_private_key
from agent.shared.registry import load_registry, write_registry


def seal_key_path(key_file: Path) -> Path:
    """The X25519 sealing key's file next to the gateway's Ed25519 key file."""
    return key_file.with_name(key_file.name + ".x25519")


def load_or_create_seal_key(path: Path, gateway_id: str) -> tuple[X25519PrivateKey, Path]:
    """The gateway's X25519 key (created 0600 when absent) and the path of its .pub file."""
    path = Path(path)
    # mypy sees cryptography's X25519PrivateKey as abstract; the class is what isinstance needs
    key = load_or_create_private_key(path, X25519PrivateKey, "X25519", "the gateway's sealing key")  # type: ignore[type-abstract]
    pub = path.with_name(path.name + ".pub")
    write_atomic(pub, seal_public_text(gateway_id, key.public_key()), 0o644)
    return key, pub


def import_devices(cfg: AgentConfig, bundle: Path) -> tuple[int, int, bool]:
    """Merge a bundle's devices into the registry file and write the local broker's password
    and ACL files from it (agent/gateway/broker_files.py); returns (added, updated, whether the
    broker was signalled to reload them).

    Checked before anything is written: the bundle opens with this gateway's sealing key, every
    device is for this gateway's venue, none takes the gateway's id or the agent's broker user
    name, and none carries a key central revoked (the command state file). Any failure changes
    nothing.
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
        if d.id in (cfg.gateway_id, cfg.local.username):
            raise ConfigError(f"{bundle}: device id {d.id} is this gateway's own id or broker user name")
        if revoked.get(d.id) == key_fingerprint(d.key):
            raise ConfigError(f"{bundle}: device {d.id} was revoked by central with this key; nothing imported")
    current = list(load_registry(cfg.devices_file)) if cfg.devices_file.exists() else []
    by_id = {d.id: d for d in current}
    added = sum(1 for d in devices if d.id not in by_id)
    updated = sum(1 for d in devices if d.id in by_id and by_id[d.id] != d)
    for d in devices:
        by_id[d.id] = d
    write_registry(cfg.devices_file, list(by_id.values()))
    reloaded = broker_files.write_files(cfg.local, by_id.values())
    return added, updated, reloaded
