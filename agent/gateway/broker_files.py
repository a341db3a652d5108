"""The local broker's logins: the agent's password, Mosquitto's password and ACL files, reload.

    [local] password_file         the agent's own broker password (one line, mode 0600),
                                  created by the first `guardian-agent devices import`
    [local.mosquitto] password_file, acl_file
                                  written from the registry (each device's broker_hash) and the
                                  agent's password by `devices import` and after a revocation,
                                  atomically, mode 0640 (the broker's group reads them: make the
                                  directory setgid to Mosquitto's group, docs/deploy-raspberry-pi.md)
    [local.mosquitto] pid_file    when set, the broker is sent SIGHUP to reload them (Mosquitto
                                  re-reads both files on SIGHUP; connected clients stay, new
                                  CONNECTs and every publish and subscribe use the new rules).
                                  Unset, packaging/systemd/guardian-broker-reload.path does it.

The formats are agent/shared/broker_auth.py's.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from agent.gateway.config import BrokerConfig
from agent.shared import tomlcheck
from agent.shared.broker_auth import acl_text, check_password, new_password, password_file_text, password_hash
from agent.shared.errors import ConfigError
from agent.shared.files import write_atomic, write_new_private
from agent.shared.registry import Device

log = logging.getLogger(__name__)

FILE_MODE = 0o640


def read_password(path: Path) -> str:
    """The agent's broker password; ConfigError (never showing it) when the file is unusable."""
    if not path.exists():
        raise ConfigError(f"{path}: no agent broker password yet; `guardian-agent devices import` creates it")
    tomlcheck.require_private(path, "the agent's broker password")
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the agent's broker password: {exc}") from None
    return check_password(text, str(path))


def ensure_password(path: Path) -> str:
    """The agent's broker password, created (random, mode 0600) when the file does not exist."""
    if not path.exists():
        write_new_private(path, (new_password() + "\n").encode(), "already exists; it is the agent's broker password")
        log.info("broker_password_created file=%s", path)
    return read_password(path)


def write_files(local: BrokerConfig, devices: Iterable[Device]) -> bool:
    """Write Mosquitto's password and ACL files for `devices` and the agent; True when the
    broker was told to reload (False: nothing is configured for it, or no pid file)."""
    files = local.mosquitto
    if files is None or local.username is None or local.password_file is None:
        return False
    agent = password_hash(ensure_password(local.password_file))
    users = [(local.username, agent)]
    for d in devices:
        if d.id == local.username:
            raise ConfigError(f"device id {d.id} is the agent's broker user name ([local] username)")
        if d.broker_hash is not None:
            users.append((d.id, d.broker_hash))
    write_atomic(files.password_file, password_file_text(users), FILE_MODE)
    write_atomic(files.acl_file, acl_text(local.username), FILE_MODE)
    if files.pid_file is None:
        return False
    reload_broker(files.pid_file)
    return True


def reload_broker(pid_file: Path) -> None:
    """SIGHUP to the broker whose pid `pid_file` holds; ConfigError saying what to do otherwise."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{pid_file}: cannot signal the broker to reload its password and ACL files ({exc}); "
            "run `systemctl reload mosquitto`"
        ) from None
