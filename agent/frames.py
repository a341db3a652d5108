"""Device frames: where a frame from a device is checked, in the order of docs/protocol.md §6.

`FrameVerifier.verify` turns the bytes of one device frame into an `Event` or raises
`WireError` with the counted reason. Replay checks come after it (agent/replay.py), because
they need the durable state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from agent import cose
from agent.errors import WireError
from agent.registry import Registry

AAD_FRAME = b"ge/1/frame"
AAD_RECEIPT = b"ge/1/receipt"
FLAG_RECEIPTS = 1
RECEIPT_STORED = 1
RECEIPT_DELIVERED = 2
RECEIPT_ACKNOWLEDGED = 3  # a dispatcher at central acknowledged the alarm (a signed command)
RECEIPT_DROPPED = 4  # evicted from a full buffer (P1/P2 only); the device stops waiting
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
DEFAULT_MAX_FRAME = 512

# the gateway's own heartbeat: device = gateway id, boot = chain epoch, no device MAC
# (the batch signature covers it); docs/protocol.md §4.4
TYPE_GATEWAY_HEARTBEAT = 160

TYPE_NAMES = {1: "ALARM", 2: "ALARM_HELD", 64: "TAMPER", 65: "ONLINE", 128: "HEARTBEAT", 160: "GATEWAY_HEARTBEAT"}


def priority_of(event_type: int) -> int:
    """The lane of an event type (docs/protocol.md §2.1): 1-63 P0, 64-127 P1, 128-255 P2."""
    return 0 if event_type < 64 else 1 if event_type < 128 else 2


def type_name(event_type: int) -> str:
    return TYPE_NAMES.get(event_type, f"TYPE_{event_type}")


def _no_tag(decoder: Any, *args: Any) -> Any:
    raise cbor2.CBORDecodeError("tags are not allowed in a device payload")


class _EveryTag(Mapping[int, Any]):
    """A semantic-decoder table that claims every tag, so cbor2 builds nothing from one."""

    def __getitem__(self, tag: int) -> Any:
        return _no_tag

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_PAYLOAD_LIMITS: dict[str, Any] = {
    "max_depth": 8,
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
    "semantic_decoders": _EveryTag(),
    "tag_hook": _no_tag,
}
_REQUIRED = (1, 2, 3, 4, 5)


class Event:
    """One accepted device event, as it travels in a batch (docs/protocol.md §4.1)."""

    __slots__ = ("boot", "data", "device", "encoded", "flags", "prio", "received", "seq", "tag", "time", "type")

    def __init__(
        self,
        device: str,
        boot: int,
        seq: int,
        type: int,  # the protocol's field name
        time: int,
        received: int,
        data: dict[int, Any],
        tag: bytes,
        flags: int = 0,
    ) -> None:
        self.device = device
        self.boot = boot
        self.seq = seq
        self.type = type
        self.prio = priority_of(type)
        self.time = time
        self.received = received
        self.data = data
        self.tag = tag
        self.flags = flags
        body: dict[int, Any] = {
            1: device,
            2: boot,
            3: seq,
            4: type,
            5: self.prio,
            6: time,
            7: received,
            8: data,
            9: tag,
        }
        if flags:
            body[10] = flags
        self.encoded: bytes = cbor2.dumps(body, canonical=True)

    @property
    def wants_receipts(self) -> bool:
        return bool(self.flags & FLAG_RECEIPTS)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.device, self.boot, self.seq)

    @classmethod
    def decode(cls, body: Mapping[int, Any]) -> Event:
        """An event from its batch map (central side); raises WireError on a bad field."""
        try:
            ev = cls(
                device=_typed(body, 1, str),
                boot=_typed(body, 2, int),
                seq=_typed(body, 3, int),
                type=_typed(body, 4, int),
                time=_typed(body, 6, int),
                received=_typed(body, 7, int),
                data=dict(_typed(body, 8, Mapping)),
                tag=_typed(body, 9, bytes),
                flags=int(body.get(10, 0)),
            )
        except (TypeError, ValueError) as exc:
            raise WireError("malformed", f"batch event: {exc}") from exc
        if body.get(5) != ev.prio:
            raise WireError("malformed", f"batch event priority {body.get(5)!r} does not match its type")
        return ev


def _typed(body: Mapping[int, Any], key: int, kind: type) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"field {key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _uint(body: Mapping[int, Any], key: int, name: str, lo: int, hi: int) -> int:
    value = body.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise WireError("bad_payload", f"{name} (key {key}) must be an integer in {lo}..{hi}, got {value!r}")
    return value


def decode_payload(payload: bytes) -> dict[int, Any]:
    """Decode and check a device frame payload (docs/protocol.md §2)."""
    try:
        body = cbor2.loads(payload, **_PAYLOAD_LIMITS)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise WireError("bad_payload", f"payload is not CBOR: {exc}") from exc
    if not isinstance(body, dict):
        raise WireError("bad_payload", "payload is not a map")
    extra = set(body) - {1, 2, 3, 4, 5, 6}
    if extra:
        raise WireError("bad_payload", f"unknown payload keys {sorted(map(repr, extra))}")
    for key in _REQUIRED:
        if key not in body:
            raise WireError("bad_payload", f"payload key {key} missing")
    _uint(body, 1, "boot", 1, U32)
    _uint(body, 2, "seq", 1, U32)
    _uint(body, 3, "type", 1, 255)
    _uint(body, 4, "time", 0, U64)
    if 6 in body:
        _uint(body, 6, "flags", 1, U32)
    data = body[5]
    if not isinstance(data, dict) or any(type(k) is not int or k < 0 for k in data):
        raise WireError("bad_payload", "data (key 5) must be a map with unsigned integer keys")
    if cbor2.dumps(body, canonical=True) != payload:
        raise WireError("bad_payload", "payload is not canonically encoded")
    return body


class FrameVerifier:
    """Checks device frames against the registry; see docs/protocol.md §6 for the order."""

    def __init__(self, registry: Registry, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.registry = registry
        self.max_frame = max_frame

    def verify(self, data: bytes, topic_device: str | None, received_ms: int) -> Event:
        if len(data) > self.max_frame:
            raise WireError("oversize", f"{len(data)} bytes > {self.max_frame}")
        mac0 = cose.mac0_parse(data)
        device = self.registry.by_kid(mac0.kid)
        if device is None:
            if self.registry.is_revoked(mac0.kid):
                raise WireError("revoked", f"kid {mac0.kid[:40]!r} was revoked by central")
            raise WireError("unknown_device", f"kid {mac0.kid[:40]!r} is not registered")
        if topic_device is not None and topic_device != device.id:
            raise WireError("topic_mismatch", f"frame of {device.id} published on the topic of {topic_device[:40]!r}")
        if not mac0.verify(device.key, AAD_FRAME):
            raise WireError("bad_mac", f"MAC of {device.id} does not verify")
        body = decode_payload(mac0.payload)
        return Event(
            device=device.id,
            boot=body[1],
            seq=body[2],
            type=body[3],
            time=body[4],
            received=received_ms,
            data=body[5],
            tag=mac0.tag,
            flags=body.get(6, 0),
        )


def receipt(key: bytes, gateway_id: str, boot: int, seq: int, kind: int) -> bytes:
    """A receipt for one event, MAC'd with the device's key (docs/protocol.md §3)."""
    payload = b"\xa3\x01" + cbor2.dumps(boot) + b"\x02" + cbor2.dumps(seq) + b"\x03" + cbor2.dumps(kind)
    return cose.mac0_encode(key, gateway_id.encode(), payload, AAD_RECEIPT)
