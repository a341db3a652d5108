"""The protocol's facts in one place (docs/protocol.md): event types, lanes, kinds, receipts, topics, labels.

The gateway, central's tools, provisioning, the rig and the scenarios read them from here.
The firmware cannot import CPython code and keeps its own constants (firmware/lib/frame.py,
firmware/lib/link.py, firmware/main.py); tests/test_protocol_facts.py holds them to this module.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import NamedTuple

# --- identifiers (§1) -------------------------------------------------------------------------

# device, gateway and venue ids: in MQTT topics as they are, and as COSE kids (their ASCII bytes)
IDENT_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")

# --- external_aad of each message class (§1) ----------------------------------------------------

AAD_FRAME = b"ge/1/frame"
AAD_RECEIPT = b"ge/1/receipt"
AAD_BATCH = b"ge/1/batch"
AAD_COMMAND = b"ge/1/command"
AAD_ENROLL_REQUEST = b"ge/1/enroll-request"
AAD_ENROLL_CONFIG = b"ge/1/enroll-config"
# the HMAC context of an enrollment request's claim proof, and the HPKE info of a device bundle
# (docs/provisioning.md)
ENROLL_PROOF_CONTEXT = b"ge/1/enroll-proof\x00"
DEVICE_BUNDLE_INFO = b"ge/1/devices\x00"

# --- device kinds -----------------------------------------------------------------------------

ALARM_POST = "alarm_post"
WRISTBAND = "wristband"
SENSOR = "sensor"
DEVICE_KINDS = (ALARM_POST, WRISTBAND, SENSOR)

# --- event types and their lanes (§2.1, §4.4) --------------------------------------------------

P0, P1, P2 = 0, 1, 2
LANES = (P0, P1, P2)


def priority_of(event_type: int) -> int:
    """The lane of an event type (§2.1): 1-63 P0, 64-127 P1, 128-255 P2, known or not."""
    return 0 if event_type < 64 else 1 if event_type < 128 else 2


class EventType(IntEnum):
    """Every event type in use (§2.1, §4.4); the lane follows from the number (priority_of)."""

    ALARM = 1
    ALARM_HELD = 2
    SOS = 3
    FALL = 4
    EXIT = 5
    MISSING = 6
    SMOKE = 7
    GAS = 8
    NOTIFIED = 9  # the gateway notified people itself (fallback; docs/notifications.md)
    LOCAL_ACK = 10  # someone acknowledged an alert at the gateway (its LAN link or an SMS reply)
    TAMPER = 64
    ONLINE = 65
    STRAP_REMOVED = 66
    BATTERY_LOW = 67
    BACK_INSIDE = 68
    SCANNER_BLIND = 69
    DOOR_HELD_OPEN = 70
    EXTINGUISHER = 71
    SENSOR_CLEAR = 72
    SENSOR_FAULT = 73
    DEVICE_OFFLINE = 74  # a post or sensor stopped reporting (docs/protocol.md §4.4)
    DEVICE_ONLINE = 75
    HEARTBEAT = 128
    GATEWAY_HEARTBEAT = 160

    @property
    def lane(self) -> int:
        return priority_of(self)


# who raises each type: a device kind (in a frame it MACs), the gateway itself (device = the
# gateway id), or the gateway's wristband alert engine (device = the band id, §4.4)
GATEWAY = "gateway"
ALERTS = "wristband alerts"
RAISED_BY: dict[EventType, tuple[str, ...]] = {
    EventType.ALARM: (ALARM_POST,),
    EventType.ALARM_HELD: (ALARM_POST,),
    EventType.TAMPER: (ALARM_POST,),
    EventType.ONLINE: (ALARM_POST, SENSOR),
    EventType.HEARTBEAT: (ALARM_POST, SENSOR),
    EventType.SMOKE: (SENSOR,),
    EventType.GAS: (SENSOR,),
    EventType.DOOR_HELD_OPEN: (SENSOR,),
    EventType.EXTINGUISHER: (SENSOR,),
    EventType.SENSOR_CLEAR: (SENSOR,),
    EventType.SENSOR_FAULT: (SENSOR,),
    EventType.SOS: (ALERTS,),
    EventType.FALL: (ALERTS,),
    EventType.EXIT: (ALERTS,),
    EventType.MISSING: (ALERTS,),
    EventType.STRAP_REMOVED: (ALERTS,),
    EventType.BATTERY_LOW: (ALERTS,),
    EventType.BACK_INSIDE: (ALERTS,),
    # the scanner watchdog's gateway event, and the alert when every scanner of a band's zone is down
    EventType.SCANNER_BLIND: (GATEWAY, ALERTS),
    EventType.GATEWAY_HEARTBEAT: (GATEWAY,),
    # people told by the gateway itself, and device liveness (§4.4, docs/notifications.md)
    EventType.NOTIFIED: (GATEWAY,),
    EventType.LOCAL_ACK: (GATEWAY,),
    EventType.DEVICE_OFFLINE: (GATEWAY,),
    EventType.DEVICE_ONLINE: (GATEWAY,),
}
TYPE_NAMES = {int(t): t.name for t in EventType}


def type_name(event_type: int) -> str:
    """The protocol's name of a type, `TYPE_<n>` for one not in use."""
    return TYPE_NAMES.get(event_type, f"TYPE_{event_type}")


# --- device frames and receipts (§2, §3) -------------------------------------------------------

MAX_FRAME = 512  # bytes of a device frame the gateway accepts by default ([local] max_frame)
FLAG_RECEIPTS = 1  # frame flags bit 0: the device keeps the event until receipt 2 and wants receipts

RECEIPT_STORED = 1
RECEIPT_DELIVERED = 2
RECEIPT_ACKNOWLEDGED = 3  # acknowledged: central's signed ACK command, or at the gateway (LOCAL_ACK)
RECEIPT_DROPPED = 4  # evicted from a full buffer (P1/P2 only); the device stops waiting
RECEIPT_NAMES = {
    RECEIPT_STORED: "STORED",
    RECEIPT_DELIVERED: "DELIVERED",
    RECEIPT_ACKNOWLEDGED: "ACKNOWLEDGED",
    RECEIPT_DROPPED: "DROPPED",
}

# --- gateway batches (§4) ---------------------------------------------------------------------

ZERO_HASH = bytes(32)  # the previous-batch hash of the first batch of an epoch

# --- MQTT topics (§5) ---------------------------------------------------------------------------

DEVICE_TOPIC_PREFIX = "ge/dev/"
DEVICE_UP_SUFFIX = "/up"
DEVICE_UP_FILTER = DEVICE_TOPIC_PREFIX + "+" + DEVICE_UP_SUFFIX  # the gateway's subscription


def device_up(device: str) -> str:
    """Device -> gateway: device frames."""
    return DEVICE_TOPIC_PREFIX + device + DEVICE_UP_SUFFIX


def device_down(device: str) -> str:
    """Gateway -> device: receipts."""
    return DEVICE_TOPIC_PREFIX + device + "/down"


def device_status(device: str) -> str:
    """The device's retained `online`, and `offline` as its last will."""
    return DEVICE_TOPIC_PREFIX + device + "/status"


# Gateway -> devices on the local broker: `online` (QoS 1, not retained) each time the agent's
# subscription to the devices' frames is in place; a device sends its outbox again at once (a
# broker that restarted without the agent's session dropped what came before the agent).
GATEWAY_ONLINE_TOPIC = "ge/gateway/status"
GATEWAY_ONLINE = b"online"


class GatewayTopics(NamedTuple):
    """A gateway's topics on central's broker."""

    batches: str  # gateway -> central: signed batches
    status: str  # gateway -> central: retained online/offline
    commands: str  # central -> gateway: signed commands (§8)


def gateway_topics(venue: str, gateway: str) -> GatewayTopics:
    base = f"venues/{venue}/gateways/{gateway}"
    return GatewayTopics(f"{base}/batches", f"{base}/status", f"{base}/commands")


BATCH_FILTER = "venues/+/gateways/+/batches"  # every gateway's batches, for central's consumers

# The gateway's MQTT 5 sessions (clean start off) outlive it this long on either broker: frames
# devices publish and commands central publishes while the agent is away are delivered when
# it comes back.
SESSION_EXPIRY_S = 7 * 24 * 3600
