"""Device frames and the events they become (docs/protocol.md §2-§4.1): the payload codec, an
event's batch encoding, receipts.

Shared by the gateway (agent/gateway/frame_verifier.py checks a frame and builds the Event),
central's batch verifier (Event.decode) and the tests. The protocol's numbers are in
agent/shared/protocol.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from agent.shared import cose
from agent.shared.errors import WireError
from agent.shared.protocol import AAD_RECEIPT, FLAG_RECEIPTS, EventType, priority_of

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
_BAND_EVENTS = (EventType.SOS, EventType.FALL)


def band_event_key(event: Event) -> tuple[str, int, int] | None:
    """(band, type, band event id) of a wristband SOS or FALL alert, else None.

    The alert engine raises one alert per band event id; these keys are stored with the alert
    (agent/gateway/buffer.py band_alerts) so a restarted agent does not raise the same event again.
    """
    if event.type not in _BAND_EVENTS:
        return None
    ctx = event.data.get(3)
    eid = ctx.get("event_id") if isinstance(ctx, dict) else None
    return (event.device, event.type, eid) if isinstance(eid, int) else None


def data_json(data: Mapping[int, Any]) -> dict[str, Any]:
    """An event's data map as JSON gives it (central's verifier records, the notifier's alerts):
    text keys, byte strings as hex."""
    return {str(k): _jsonable(v) for k, v in data.items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


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

    __slots__ = (
        "boot",
        "data",
        "device",
        "encoded",
        "flags",
        "prio",
        "received",
        "seq",
        "tag",
        "time",
        "type",
        "wants_receipts",
    )

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
        encoded: bytes | None = None,  # the canonical encoding, when the caller built it already
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
        # an attribute, not a property: it is read several times per event on the hot path
        self.wants_receipts = bool(flags & FLAG_RECEIPTS)
        if encoded is not None:
            self.encoded: bytes = encoded
            return
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
        self.encoded = cbor2.dumps(body, canonical=True)

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


def receipt(key: bytes, gateway_id: str, boot: int, seq: int, kind: int) -> bytes:
    """A receipt for one event, MAC'd with the device's key (docs/protocol.md §3)."""
    payload = b"\xa3\x01" + cbor2.dumps(boot) + b"\x02" + cbor2.dumps(seq) + b"\x03" + cbor2.dumps(kind)
    return cose.mac0_encode(key, gateway_id.encode(), payload, AAD_RECEIPT)
