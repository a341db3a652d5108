"""Signed commands from central (docs/protocol.md §8): the message, its checks, its settings.

Central builds and signs a command (agent/central/command_sender.py); the gateway checks it
with parse_command() in the order of docs/protocol.md §8.2 and applies it
(agent/gateway/command_handler.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.shared import cose
from agent.shared.errors import WireError
from agent.shared.protocol import AAD_COMMAND, IDENT_RE

MAX_COMMAND = 1024  # bytes of one command message
MAX_LIFETIME_S = 24 * 3600  # expires - issued
MAX_TEXT = 64  # characters of an ACK's text
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

OP_ACK = 1
OP_REVOKE = 2
OP_CONFIG = 3
OP_NAMES = {OP_ACK: "ack", OP_REVOKE: "revoke", OP_CONFIG: "config"}
LOG_LEVELS = ("debug", "info", "warning", "error")
# bounds of the batch settings central may change; the agent's config file has the same ranges
LINGER_MS_RANGE = (0, 10_000)
MAX_EVENTS_RANGE = (1, 100_000)


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
    """Check one command message in the order of docs/protocol.md §8.2; WireError names the reason."""
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


def key_fingerprint(key: bytes) -> str:
    """Names a device key in the state file without revealing it (domain-separated SHA-256)."""
    return hashlib.sha256(b"ge-revoked-key\0" + key).hexdigest()[:32]
