"""Device frames: where a frame from a device is checked, in the order of docs/protocol.md §6.

`FrameVerifier.verify` turns the bytes of one device frame into an `Event` or raises
`WireError` with the counted reason. Replay checks come after it (agent/replay.py), because
they need the durable state.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from agent import cose
from agent.errors import WireError
from agent.registry import Device, Registry

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
# wristband alerts and the BLE scanner watchdog, raised by the gateway (docs/protocol.md §2.1, §4.4)
TYPE_SCANNER_BLIND = 69
TYPE_SOS = 3
TYPE_FALL = 4
TYPE_NOTIFIED = 9
TYPE_DEVICE_OFFLINE = 74
TYPE_DEVICE_ONLINE = 75


def band_event_key(event: Event) -> tuple[str, int, int] | None:
    """(band, type, band event id) of a wristband SOS or FALL alert, else None.

    The alert engine raises one alert per band event id; these keys are stored with the alert
    (agent/buffer.py band_alerts) so a restarted agent does not raise the same event again.
    """
    if event.type not in (TYPE_SOS, TYPE_FALL):
        return None
    ctx = event.data.get(3)
    eid = ctx.get("event_id") if isinstance(ctx, dict) else None
    return (event.device, event.type, eid) if isinstance(eid, int) else None


TYPE_NAMES.update(
    {
        3: "SOS",
        4: "FALL",
        5: "EXIT",
        6: "MISSING",
        66: "STRAP_REMOVED",
        67: "BATTERY_LOW",
        68: "BACK_INSIDE",
        TYPE_SCANNER_BLIND: "SCANNER_BLIND",
        # venue sensors (docs/protocol.md §7.1)
        7: "SMOKE",
        8: "GAS",
        70: "DOOR_HELD_OPEN",
        71: "EXTINGUISHER",
        72: "SENSOR_CLEAR",
        73: "SENSOR_FAULT",
        # gateway events for people: device liveness and the gateway's own notifications
        # (docs/protocol.md §4.4, docs/notifications.md)
        TYPE_DEVICE_OFFLINE: "DEVICE_OFFLINE",
        TYPE_DEVICE_ONLINE: "DEVICE_ONLINE",
        TYPE_NOTIFIED: "NOTIFIED",
    }
)


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


class FrameVerifier:
    """Checks device frames against the registry; see docs/protocol.md §6 for the order."""

    def __init__(self, registry: Registry, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.registry = registry
        self.max_frame = max_frame
        self._fast = _FastPath(registry)

    def verify(self, data: bytes, topic_device: str | None, received_ms: int) -> Event:
        if len(data) > self.max_frame:
            raise WireError("oversize", f"{len(data)} bytes > {self.max_frame}")
        event = self._fast.verify(data, topic_device, received_ms)
        if event is not None:
            return event
        # what the fast path does not take goes this way, which accepts it too (e.g. a
        # non-canonical protected header) or raises the counted reason
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


# --- the fast path -------------------------------------------------------------------------
# Frames as devices build them (canonical COSE envelope and protected header, a payload whose
# data map has unsigned integer keys and values) are checked here without cbor2 and without
# a generic MAC: a per-device HMAC state with the key pads and the fixed start of the
# MAC_structure already absorbed, and the event's batch encoding assembled from slices of the
# (canonical) payload. It returns None for anything else, and FrameVerifier.verify then takes
# the general path; tests/agent/test_frames_fast.py holds the two to the same results.


class _DeviceState:
    """Per device: the HMAC states for frames and the fixed start of its event encodings."""

    __slots__ = ("device", "inner", "outer", "start", "start_flags")

    def __init__(self, device: Device) -> None:
        self.device = device
        key = device.key if len(device.key) <= 64 else hashlib.sha256(device.key).digest()
        key = key.ljust(64, b"\0")
        self.inner = hashlib.sha256(key.translate(_IPAD))
        self.outer = hashlib.sha256(key.translate(_OPAD))
        protected = cose.protected_header(cose.ALG_HMAC_256_64, device.id.encode())
        self.inner.update(b"\x84\x64MAC0" + cose.bstr(protected) + cose.bstr(AAD_FRAME))
        ident = device.id.encode()
        self.start = b"\xa9\x01" + cose.head(3, len(ident)) + ident
        self.start_flags = b"\xaa\x01" + cose.head(3, len(ident)) + ident


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_PROTECTED_START = b"\xa2\x01\x04\x04"  # {1: 4, 4: kid}: alg HMAC 256/64, then the kid


class _General(Exception):
    """Not a frame for the fast path; the general path decides."""


def _uint_at(p: bytes, i: int) -> tuple[int, int]:
    """(value, next index) of a shortest-form unsigned integer at p[i]; _General otherwise."""
    b = p[i]
    if b < 24:
        return b, i + 1
    if b == 24:
        v = p[i + 1]
        if v >= 24:
            return v, i + 2
    elif b == 25:
        v = p[i + 1] << 8 | p[i + 2]
        if v >= 0x100:
            return v, i + 3
    elif b == 26:
        v = int.from_bytes(p[i + 1 : i + 5], "big")
        if v >= 0x10000:
            return v, i + 5
    elif b == 27:
        v = int.from_bytes(p[i + 1 : i + 9], "big")
        if v > U32:
            return v, i + 9
    raise _General


class _FastPath:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._states: dict[bytes, _DeviceState] = {}

    def verify(self, data: bytes, topic_device: str | None, received_ms: int) -> Event | None:
        try:
            return self._verify(data, topic_device, received_ms)
        except (IndexError, _General):
            return None

    def _verify(self, data: bytes, topic_device: str | None, received_ms: int) -> Event:
        if data[0] != 0xD1 or data[1] != 0x84:
            raise _General
        # protected header: bstr(canonical {1: 4, 4: kid})
        b = data[2]
        if 0x40 <= b < 0x58:
            i, n = 3, b - 0x40
        elif b == 0x58 and data[3] >= 24:
            i, n = 4, data[3]
        else:
            raise _General
        if data[i : i + 4] != _PROTECTED_START:
            raise _General
        k = data[i + 4]
        if 0x41 <= k < 0x58:
            kid = data[i + 5 : i + n]
            if len(kid) != k - 0x40:
                raise _General
        elif k == 0x58 and data[i + 5] >= 24:
            kid = data[i + 6 : i + n]
            if len(kid) != data[i + 5]:
                raise _General
        else:
            raise _General
        i += n
        if data[i] != 0xA0:  # unprotected: {}
            raise _General
        # payload: bstr, shortest head; then the tag, bstr(8), and nothing after it
        b = data[i + 1]
        if 0x40 <= b < 0x58:
            p0, n = i + 2, b - 0x40
        elif b == 0x58 and data[i + 2] >= 24:
            p0, n = i + 3, data[i + 2]
        elif b == 0x59 and (data[i + 2] << 8 | data[i + 3]) >= 0x100:
            p0, n = i + 4, data[i + 2] << 8 | data[i + 3]
        else:
            raise _General
        t0 = p0 + n
        if data[t0] != 0x48 or len(data) != t0 + 9:
            raise _General
        device = self.registry.by_kid(kid)
        if device is None or (topic_device is not None and topic_device != device.id):
            raise _General
        st = self._states.get(kid)
        if st is None or st.device is not device:
            st = self._state(kid, device)
        mac = st.inner.copy()
        mac.update(data[i + 1 : t0])  # bstr(payload), as in the MAC_structure
        outer = st.outer.copy()
        outer.update(mac.digest())
        tag = data[t0 + 1 :]
        if not hmac.compare_digest(outer.digest()[:8], tag):
            raise _General
        return self._event(data[p0:t0], st, tag, received_ms)

    def _state(self, kid: bytes, device: Device) -> _DeviceState:
        if len(self._states) > 2 * len(self.registry) + 16:
            self._states.clear()
        st = self._states[kid] = _DeviceState(device)
        return st

    @staticmethod
    def _event(p: bytes, st: _DeviceState, tag: bytes, received_ms: int) -> Event:
        head = p[0]
        if head not in (0xA5, 0xA6) or p[1] != 1:
            raise _General
        # boot, seq, type, time: the one-byte forms inline, the rest through _uint_at
        boot = p[2]
        if boot < 24:
            a = 3
        else:
            boot, a = _uint_at(p, 2)
        if p[a] != 2:
            raise _General
        seq = p[a + 1]
        if seq < 24:
            b = a + 2
        else:
            seq, b = _uint_at(p, a + 1)
        if p[b] != 3:
            raise _General
        event_type = p[b + 1]
        if event_type < 24:
            c = b + 2
        else:
            event_type, c = _uint_at(p, b + 1)
        if p[c] != 4:
            raise _General
        device_time, d = _uint_at(p, c + 1)
        if p[d] != 5:
            raise _General
        n = p[d + 1]
        if 0xA0 <= n < 0xB8:
            n -= 0xA0
            i = d + 2
        elif n == 0xB8 and p[d + 2] >= 24:
            n = p[d + 2]
            i = d + 3
        else:
            raise _General
        data: dict[int, Any] = {}
        last = -1
        for _ in range(n):
            key = p[i]
            if key < 24:
                i += 1
            else:
                key, i = _uint_at(p, i)
            if key <= last:  # canonical order, no duplicates
                raise _General
            value = p[i]
            if value < 24:
                i += 1
            else:
                value, i = _uint_at(p, i)
            data[key] = value
            last = key
        e = i
        flags = 0
        if head == 0xA6:
            if p[i] != 6:
                raise _General
            flags, i = _uint_at(p, i + 1)
            if not 1 <= flags <= U32:
                raise _General
        if i != len(p) or not (1 <= boot <= U32 and 1 <= seq <= U32 and 1 <= event_type <= 255):
            raise _General
        prio = 0 if event_type < 64 else 1 if event_type < 128 else 2
        # the event map (docs/protocol.md §4.1) from the payload's own shortest-form values
        encoded = b"".join(
            (
                st.start_flags if flags else st.start,
                b"\x02",
                p[2:a],  # boot
                b"\x03",
                p[a + 1 : b],  # seq
                b"\x04",
                p[b + 1 : c],  # type
                _PRIO[prio],  # 05 priority 06
                p[c + 1 : d],  # time
                b"\x07",
                _received(received_ms),
                b"\x08",
                p[d + 1 : e],  # data
                b"\x09\x48",
                tag,
                b"\x0a" + p[e + 1 :] if flags else b"",  # flags
            )
        )
        return Event(st.device.id, boot, seq, event_type, device_time, received_ms, data, tag, flags, encoded)


_PRIO = (b"\x05\x00\x06", b"\x05\x01\x06", b"\x05\x02\x06")


@functools.lru_cache(maxsize=4)
def _received(ms: int) -> bytes:
    """The encoded receive time; frames arriving in the same millisecond share it."""
    return cose.head(0, ms)
