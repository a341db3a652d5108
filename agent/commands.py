"""Signed commands from central (docs/protocol.md §8): verified, replay-checked, persisted, applied.

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
import hashlib
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent import cose, tomlcheck
from agent.config import LINGER_MS_RANGE, MAX_EVENTS_RANGE, AgentConfig, BatchConfig
from agent.errors import CommandError, WireError
from agent.frames import RECEIPT_ACKNOWLEDGED
from agent.keyfiles import IDENT_RE, load_central_public_key, write_atomic
from agent.log import Throttle
from agent.registry import Registry, write_registry
from agent.stats import CommandCounters

log = logging.getLogger("agent.commands")

AAD_COMMAND = b"ge/1/command"
MAX_COMMAND = 1024  # bytes of one command message
MAX_LIFETIME_S = 24 * 3600  # expires - issued
MAX_TEXT = 64  # characters of an ACK's text
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
QUEUE = 64
STATE_FILE = "commands.toml"
SEND_TIMEOUT_S = 15.0

OP_ACK = 1
OP_REVOKE = 2
OP_CONFIG = 3
OP_NAMES = {OP_ACK: "ack", OP_REVOKE: "revoke", OP_CONFIG: "config"}
LOG_LEVELS = ("debug", "info", "warning", "error")


# --- runtime settings ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting central may change: its key in CONFIG args and its name in agent.toml."""

    wire: int
    name: str
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()

    def check(self, value: object) -> int | str:
        """The value when valid; ValueError saying what was expected otherwise."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
            return value
        if type(value) is not int:
            raise ValueError(f"expected an integer, got {type(value).__name__} {value!r}")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"expected an integer in {self.lo}..{self.hi}, got {value}")
        return value


SETTINGS = (
    Setting(1, "batch.linger_ms", *LINGER_MS_RANGE),
    Setting(2, "batch.max_events", *MAX_EVENTS_RANGE),
    Setting(3, "log.level", choices=LOG_LEVELS),
)
SETTING_BY_WIRE = {s.wire: s for s in SETTINGS}
SETTING_BY_NAME = {s.name: s for s in SETTINGS}


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


# --- the command message -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    device: str
    boot: int
    seq: int
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Revoke:
    device: str


@dataclass(frozen=True, slots=True)
class ConfigChange:
    settings: tuple[tuple[str, int | str], ...]


Action = Ack | Revoke | ConfigChange


class CommandRejected(WireError):
    """A signed command refused after its payload was read: carries its seq and op for the log."""

    def __init__(self, reason: str, detail: str, seq: int, op: str) -> None:
        super().__init__(reason, detail)
        self.seq = seq
        self.op = op


@dataclass(frozen=True, slots=True)
class Command:
    gateway: str
    seq: int
    issued: int
    expires: int
    action: Action

    @property
    def op(self) -> str:
        if isinstance(self.action, Ack):
            return "ack"
        return "revoke" if isinstance(self.action, Revoke) else "config"


def _uint(body: dict[Any, Any], key: int, name: str, lo: int, hi: int, reason: str = "malformed") -> int:
    value = body.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise WireError(reason, f"{name} (key {key}) must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _ident(body: dict[Any, Any], key: int, name: str, reason: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not IDENT_RE.fullmatch(value):
        raise WireError(reason, f"{name} (key {key}) must be an identifier, got {value!r:.60}")
    return value


def _plain(value: Any, depth: int = 0) -> bool:
    """True when value holds only ints, text, bytes and maps (no tags, floats or simple values)."""
    if isinstance(value, bool) or depth > 4:
        return False
    if isinstance(value, (int, str, bytes)):
        return True
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _action(op: int, args: dict[Any, Any]) -> Action:
    if op == OP_ACK:
        extra = set(args) - {1, 2, 3, 4}
        if extra:
            raise WireError("bad_args", f"ack: unknown argument keys {sorted(map(repr, extra))}")
        text = args.get(4)
        if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
            raise WireError("bad_args", f"ack: text (key 4) must be a string of at most {MAX_TEXT} characters")
        return Ack(
            _ident(args, 1, "ack: device", "bad_args"),
            _uint(args, 2, "ack: boot", 1, U32, "bad_args"),
            _uint(args, 3, "ack: seq", 1, U32, "bad_args"),
            text,
        )
    if op == OP_REVOKE:
        if set(args) != {1}:
            raise WireError("bad_args", "revoke: arguments must be exactly {1: device}")
        return Revoke(_ident(args, 1, "revoke: device", "bad_args"))
    if op == OP_CONFIG:
        if not args:
            raise WireError("bad_args", "config: no settings")
        settings = []
        for key in sorted(args, key=repr):
            setting = SETTING_BY_WIRE.get(key) if type(key) is int else None
            if setting is None:
                known = ", ".join(f"{s.wire} ({s.name})" for s in SETTINGS)
                raise WireError("bad_args", f"config: unknown setting key {key!r:.20} (known: {known})")
            try:
                settings.append((setting.name, setting.check(args[key])))
            except ValueError as exc:
                raise WireError("bad_args", f"config: {setting.name} (key {key}): {exc}") from exc
        return ConfigChange(tuple(settings))
    raise WireError("unknown_op", f"op {op} is not one of {sorted(OP_NAMES)}")


def decode_payload(payload: bytes) -> tuple[str, int, int, int, Action]:
    """(gateway, seq, issued, expires, action) from a command payload; WireError when bad."""
    try:
        body = cose.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise WireError("malformed", f"payload is not CBOR: {exc}") from exc
    if not isinstance(body, dict) or not _plain(body):
        raise WireError("malformed", "payload must be a map of integers, text, byte strings and maps")
    if set(body) != {1, 2, 3, 4, 5, 6}:
        raise WireError("malformed", f"payload keys must be 1..6, got {sorted(map(repr, body))}")
    if cbor2.dumps(body, canonical=True) != payload:
        raise WireError("malformed", "payload is not canonically encoded")
    gateway = _ident(body, 1, "gateway", "malformed")
    seq = _uint(body, 2, "seq", 1, U64)
    issued = _uint(body, 3, "issued", 0, U64)
    expires = _uint(body, 4, "expires", 0, U64)
    if not issued < expires <= issued + MAX_LIFETIME_S:
        raise WireError("malformed", f"expires must be after issued and at most {MAX_LIFETIME_S} s later")
    op = _uint(body, 5, "op", 0, U32)
    args = body[6]
    if not isinstance(args, dict):
        raise WireError("malformed", "args (key 6) must be a map")
    return gateway, seq, issued, expires, _action(op, args)


def parse_command(
    data: bytes, keys: dict[bytes, Ed25519PublicKey], gateway_id: str, now_s: int, last_seq: int
) -> Command:
    """Check one command message in the order of docs/protocol.md §8.3; WireError names the reason."""
    if len(data) > MAX_COMMAND:
        raise WireError("oversize", f"{len(data)} bytes > {MAX_COMMAND}")
    try:
        _, payload = cose.sign1_verify(data, keys, AAD_COMMAND)
    except WireError as exc:
        if exc.reason == "unknown_signer":
            raise WireError("unknown_kid", exc.detail) from exc
        raise
    gateway, seq, issued, expires, action = decode_payload(payload)
    cmd = Command(gateway, seq, issued, expires, action)
    if gateway != gateway_id:
        raise CommandRejected("wrong_gateway", f"for gateway {gateway!r}, this is {gateway_id!r}", seq, cmd.op)
    if now_s >= expires:
        raise CommandRejected("expired", f"expired {now_s - expires} s ago", seq, cmd.op)
    if seq <= last_seq:
        raise CommandRejected("replay", f"seq {seq} is not above the last accepted {last_seq}", seq, cmd.op)
    return cmd


def encode_payload(gateway: str, seq: int, issued: int, expires: int, op: int, args: dict[int, Any]) -> bytes:
    return cbor2.dumps({1: gateway, 2: seq, 3: issued, 4: expires, 5: op, 6: args}, canonical=True)


def sign_command(key: Ed25519PrivateKey, kid: str, payload: bytes) -> bytes:
    """The COSE_Sign1 command message (central side, tests)."""
    return cose.sign1_encode(key, cose.protected_header(cose.ALG_EDDSA, kid.encode()), payload, AAD_COMMAND)


def ack_args(device: str, boot: int, seq: int, text: str | None = None) -> dict[int, Any]:
    """ACK args (central side); CommandError for a text longer than MAX_TEXT."""
    args: dict[int, Any] = {1: device, 2: boot, 3: seq}
    if text is not None:
        if len(text) > MAX_TEXT:
            raise CommandError(f"--text: expected at most {MAX_TEXT} characters, got {len(text)}")
        args[4] = text
    return args


def config_args(assignments: list[str]) -> dict[int, Any]:
    """CONFIG args from NAME=VALUE strings; CommandError naming the bad one."""
    args: dict[int, Any] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        setting = SETTING_BY_NAME.get(name.strip())
        if not sep or setting is None:
            raise CommandError(f"--set {text!r}: expected NAME=VALUE with NAME one of {', '.join(SETTING_BY_NAME)}")
        value: int | str = raw.strip()
        if not setting.choices:
            try:
                value = int(raw)
            except ValueError:
                raise CommandError(f"--set {name}: expected an integer, got {raw!r}") from None
        try:
            args[setting.wire] = setting.check(value)
        except ValueError as exc:
            raise CommandError(f"--set {name}: {exc}") from None
    if not args:
        raise CommandError("config: give at least one --set NAME=VALUE")
    return args


# --- durable state -----------------------------------------------------------------------


def key_fingerprint(key: bytes) -> str:
    """Names a device key in the state file without revealing it (domain-separated SHA-256)."""
    return hashlib.sha256(b"ge-revoked-key\0" + key).hexdigest()[:32]


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
            log.warning("revocation_superseded device=%s reason='registered again with a new key'", device_id)
    if removed:
        write_registry(cfg.devices_file, list(registry))
        log.warning("revoked_devices_removed devices=%s file=%s", ",".join(removed), cfg.devices_file)
    if state.settings:
        cfg = apply_settings(cfg, state.settings)
        log.info(
            "runtime_settings file=%s %s",
            path,
            " ".join(f"{k}={v}" for k, v in sorted(state.settings.items())),
        )
    if not keys:
        log.warning("commands_disabled reason='no central.command_key in %s'", cfg.path)
    return Restored(cfg, keys, state, path)


# (device id, boot, seq, receipt kind) -> the receipt on its way (agent/receipts.py ReceiptRouter.send)
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            restored: from restore(), run before the gateway's other parts are built.
            registry: the device registry (a REVOKE removes from it).
            send_receipt: how central's ACK reaches the device as receipt 3.
            apply_batch: new batch settings from a CONFIG (the committer's inbox).
            clock: unix time in seconds (command expiry).
        """
        self.cfg = restored.cfg
        self.registry = registry
        self.keys = restored.keys
        self.state = restored.state
        self.state_path = restored.path
        self.send_receipt = send_receipt
        self.apply_batch = apply_batch
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
                await asyncio.to_thread(write_registry, self.cfg.devices_file, list(self.registry))
            except OSError as exc:
                # the state file holds the revocation; the next start rewrites the registry
                log.error("registry_write_failed file=%s reason=%r", self.cfg.devices_file, exc.strerror)
            log.warning("command_accepted op=revoke seq=%d device=%s", cmd.seq, action.device)
        else:
            settings = dict(action.settings)
            self.cfg = apply_settings(self.cfg, settings)
            if self.apply_batch is not None:
                self.apply_batch(self.cfg.batch)
            log.info(
                "command_accepted op=config seq=%d %s",
                cmd.seq,
                " ".join(f"{k}={v}" for k, v in sorted(settings.items())),
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


# --- central side: sending a command ---------------------------------------------------------


async def send_command(host: str, port: int, topic: str, message: bytes, tls: ssl.SSLContext | None = None) -> None:
    """Publish one command (QoS 1) and return once central's broker acknowledged it."""
    timeout = SEND_TIMEOUT_S
    try:
        async with asyncio.timeout(timeout):
            async with aiomqtt.Client(
                host, port, protocol=aiomqtt.ProtocolVersion.V5, tls_context=tls, timeout=timeout
            ) as client:
                await client.publish(topic, message, qos=1)
    except aiomqtt.MqttError as exc:
        raise CommandError(f"central broker {host}:{port}: {exc}") from exc
    except TimeoutError:
        raise CommandError(f"central broker {host}:{port}: no acknowledgement within {timeout} s") from None
