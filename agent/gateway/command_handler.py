"""Signed commands from central at the gateway (docs/protocol.md §8): verified, replay-checked, persisted, applied.

    central --COSE_Sign1--> uplink (venues/<v>/gateways/<gw>/commands, QoS 1, manual ack)
      -> CommandHandler.submit() -> queue -> worker: parse_command() checks, in this order,
         size, envelope, kid, signature, payload, gateway, expiry, seq
      -> state file (highest seq, settings, revocations; fsync, atomic replace)
      -> effect: ACK    -> receipt 3 to the device on ge/dev/<id>/down
                 REVOKE -> the device leaves the registry (memory and file)
                 CONFIG -> runtime settings applied live
      -> PUBACK to the central broker

The state file is written before the effect, so a command never takes effect twice and a
revocation or a setting survives a crash between the two: at start the agent applies what
the state file says (`restore()`, before the rest of the gateway is built). Every rejection
is counted by reason in CommandCounters.rejected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.gateway import broker_files
from agent.gateway.config import AgentConfig, BatchConfig
from agent.gateway.stats import CommandCounters
from agent.shared import tomlcheck
from agent.shared.commands import (
    SETTING_BY_NAME,
    U64,
    Ack,
    Command,
    CommandRejected,
    ConfigChange,
    Revoke,
    key_fingerprint,
    parse_command,
)
from agent.shared.errors import ConfigError, WireError
from agent.shared.files import write_atomic
from agent.shared.keyfiles import load_central_public_key
from agent.shared.log import Fields, Throttle, logfmt
from agent.shared.protocol import IDENT_RE, RECEIPT_ACKNOWLEDGED
from agent.shared.registry import Registry, write_registry

log = logging.getLogger(__name__)

QUEUE = 64
STATE_FILE = "commands.toml"


def apply_settings(cfg: AgentConfig, settings: dict[str, int | str]) -> AgentConfig:
    """cfg with the batch settings replaced; the log level is set on the root logger."""
    batch = cfg.batch
    if "batch.linger_ms" in settings:
        batch = replace(batch, linger_ms=int(settings["batch.linger_ms"]))
    if "batch.max_events" in settings:
        batch = replace(batch, max_events=int(settings["batch.max_events"]))
    if "log.level" in settings:
        logging.getLogger().setLevel(str(settings["log.level"]).upper())
    return replace(cfg, batch=batch)


# --- durable state -----------------------------------------------------------------------


@dataclass(slots=True)
class CommandState:
    """What the state file holds: the highest accepted seq, settings, revoked device keys."""

    seq: int = 0
    settings: dict[str, int | str] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)  # device id -> key fingerprint

    def copy(self) -> CommandState:
        return CommandState(self.seq, dict(self.settings), dict(self.revoked))

    def to_toml(self) -> str:
        lines = [
            "# Written by guardian-agent: state of the signed commands from central",
            "# (docs/protocol.md §8). Replaced atomically; do not edit while the agent runs.",
            "[command]",
            f"seq = {self.seq}",
            "[settings]",
            *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(self.settings.items())),
            "[revoked]",
            *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(self.revoked.items())),
        ]
        return "\n".join(lines) + "\n"


def load_state(path: Path) -> CommandState:
    """The state file, or a fresh state when there is none; ConfigError names file and key."""
    path = Path(path)
    if not path.exists():
        return CommandState()
    top = tomlcheck.Table(path, tomlcheck.load(path))
    cmd = top.table("command")
    state = CommandState(seq=cmd.integer("seq", lo=0, hi=U64))
    cmd.no_unknown_keys()
    st = top.table("settings", required=False)
    for name in list(st.data):
        setting = SETTING_BY_NAME.get(name)
        if setting is None:
            raise st.fail(name, f"unknown setting (known: {', '.join(SETTING_BY_NAME)})")
        try:
            state.settings[name] = setting.check(st.data[name])
        except ValueError as exc:
            raise st.fail(name, str(exc)) from None
    rv = top.table("revoked", required=False)
    for device in list(rv.data):
        fp = rv.data[device]
        if not IDENT_RE.fullmatch(device) or not isinstance(fp, str) or not re.fullmatch(r"[0-9a-f]{32}", fp):
            raise rv.fail(device, "expected a device id = 32 hex digits of key fingerprint")
        state.revoked[device] = fp
    top.no_unknown_keys()
    return state


def save_state(path: Path, state: CommandState) -> None:
    write_atomic(Path(path), state.to_toml().encode())


# --- the handler ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restored:
    """What a start finds of central's commands: `cfg` with the persisted settings applied, the
    central key (none: commands disabled), and the state file's contents and path."""

    cfg: AgentConfig
    keys: dict[bytes, Ed25519PublicKey]
    state: CommandState
    path: Path


def write_registry_and_logins(cfg: AgentConfig, registry: Registry) -> None:
    """The registry file, then the local broker's logins from it: a revoked device's broker
    password stops working at the broker's next reload (agent/gateway/broker_files.py)."""
    write_registry(cfg.devices_file, list(registry))
    broker_files.write_files(cfg.local, registry)


def restore(cfg: AgentConfig, registry: Registry) -> Restored:
    """Load the central key and the state file; apply persisted revocations and settings."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    if cfg.command_key is not None:
        kid, key = load_central_public_key(cfg.command_key)
        keys[kid.encode()] = key
    path = cfg.data_dir / STATE_FILE
    state = load_state(path)
    removed = []
    for device_id, fp in state.revoked.items():
        device = registry.get(device_id)
        if device is None:
            registry.mark_revoked(device_id)
        elif key_fingerprint(device.key) == fp:
            registry.revoke(device_id)
            removed.append(device_id)
        else:
            log.warning("revocation_superseded device=%s reason=registered_again_with_a_new_key", device_id)
    if removed:
        write_registry_and_logins(cfg, registry)
        log.warning("revoked_devices_removed devices=%s file=%s", ",".join(removed), cfg.devices_file)
    if state.settings:
        cfg = apply_settings(cfg, state.settings)
        log.info(
            "runtime_settings file=%s %s",
            path,
            Fields(" ".join(f"{k}={logfmt(v)}" for k, v in sorted(state.settings.items()))),
        )
    if not keys:
        log.warning("commands_disabled reason=no_command_key config=%s", cfg.path)
    return Restored(cfg, keys, state, path)


# (device id, boot, seq, receipt kind) -> the receipt on its way (agent/gateway/receipts.py ReceiptRouter.send)
SendReceipt = Callable[[str, int, int, int], None]


class CommandHandler:
    """Receives command messages from the uplink and applies them one at a time."""

    def __init__(
        self,
        restored: Restored,
        registry: Registry,
        *,
        send_receipt: SendReceipt,
        apply_batch: Callable[[BatchConfig], None] | None = None,
        on_ack: Callable[[str, int, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            restored: from restore(), run before the gateway's other parts are built.
            registry: the device registry (a REVOKE removes from it).
            send_receipt: how central's ACK reaches the device as receipt 3.
            apply_batch: new batch settings from a CONFIG (the committer's inbox).
            on_ack: (device, boot, seq) of each event central acknowledged, after its receipt 3
                (the status page's recent events, agent/gateway/recent.py).
            clock: unix time in seconds (command expiry).
        """
        self.cfg = restored.cfg
        self.registry = registry
        self.keys = restored.keys
        self.state = restored.state
        self.state_path = restored.path
        self.send_receipt = send_receipt
        self.apply_batch = apply_batch
        self.on_ack = on_ack
        self.clock = clock
        self.counters = CommandCounters()
        self._queue: asyncio.Queue[tuple[bytes, Callable[[], None]]] = asyncio.Queue(QUEUE)
        self._throttle = Throttle()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def submit(self, data: bytes, ack: Callable[[], None]) -> None:
        """A command message from the uplink; `ack` releases its PUBACK once it is settled."""
        try:
            self._queue.put_nowait((data, ack))
        except asyncio.QueueFull:
            # not acknowledged: the broker delivers it again on the next session
            self._reject("overflow", f"more than {QUEUE} commands waiting")

    async def run(self) -> None:
        while True:
            data, ack = await self._queue.get()
            await self.handle(data)
            ack()

    async def handle(self, data: bytes) -> bool:
        """Check and apply one command message; True when it was accepted."""
        try:
            cmd = parse_command(data, self.keys, self.cfg.gateway_id, int(self.clock()), self.state.seq)
        except CommandRejected as exc:
            self._reject(exc.reason, exc.detail, exc.seq, exc.op)
            return False
        except WireError as exc:
            self._reject(exc.reason, exc.detail)
            return False
        new = self.state.copy()
        new.seq = cmd.seq
        action = cmd.action
        refusal: str | None = None
        if isinstance(action, (Ack, Revoke)) and self.registry.get(action.device) is None:
            refusal = f"device {action.device!r} is not registered"
        elif isinstance(action, Revoke):
            device = self.registry.get(action.device)
            assert device is not None
            new.revoked[action.device] = key_fingerprint(device.key)
        elif isinstance(action, ConfigChange):
            new.settings.update(action.settings)
        # durable before it takes effect: a replay of this seq is refused even after a crash
        try:
            await asyncio.to_thread(save_state, self.state_path, new)
        except OSError as exc:
            self._reject("store_error", f"{self.state_path}: {exc.strerror}", cmd.seq, cmd.op)
            return False
        self.state = new
        if refusal is not None:
            self._reject("unknown_device", refusal, cmd.seq, cmd.op)
            return False
        await self._apply(cmd)
        self.counters.accepted[cmd.op] += 1
        return True

    async def _apply(self, cmd: Command) -> None:
        action = cmd.action
        if isinstance(action, Ack):
            self.send_receipt(action.device, action.boot, action.seq, RECEIPT_ACKNOWLEDGED)
            if self.on_ack is not None:
                self.on_ack(action.device, action.boot, action.seq)
            log.info(
                "command_accepted op=ack seq=%d device=%s boot=%d event_seq=%d text=%r",
                cmd.seq,
                action.device,
                action.boot,
                action.seq,
                action.text,
            )
        elif isinstance(action, Revoke):
            self.registry.revoke(action.device)
            try:
                await asyncio.to_thread(write_registry_and_logins, self.cfg, self.registry)
            except (OSError, ConfigError) as exc:
                # the state file holds the revocation; the next start rewrites the registry
                log.error("registry_write_failed file=%s reason=%s", self.cfg.devices_file, exc)
            log.warning("command_accepted op=revoke seq=%d device=%s", cmd.seq, action.device)
        else:
            settings = dict(action.settings)
            self.cfg = apply_settings(self.cfg, settings)
            if self.apply_batch is not None:
                self.apply_batch(self.cfg.batch)
            log.info(
                "command_accepted op=config seq=%d %s",
                cmd.seq,
                Fields(" ".join(f"{k}={logfmt(v)}" for k, v in sorted(settings.items()))),
            )

    def _reject(self, reason: str, detail: str, seq: int | None = None, op: str | None = None) -> None:
        self.counters.rejected[reason] += 1
        suppressed = self._throttle.allow(reason)
        if suppressed is not None:
            log.warning(
                "command_rejected reason=%s seq=%s op=%s detail=%r suppressed_since_last=%d",
                reason,
                "-" if seq is None else seq,
                op or "-",
                detail[:200],
                suppressed,
            )
