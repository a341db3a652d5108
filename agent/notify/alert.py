"""Alert: one notifiable event, its identity and what it means for people.

An alert is identified as central deduplicates events (docs/protocol.md §4.1): (device, boot,
seq). Wristband alerts carry the band as the device and the chain epoch as the boot, gateway
events (DEVICE_OFFLINE, NOTIFIED) the gateway id, so the same triple is unique for every kind.
`Alert.from_record` takes one `kind: event` record of agent.central.batch_verifier.BatchVerifier.feed()
(central); `Alert.from_event` one event the gateway committed (its fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.shared.frames import Event, data_json
from agent.shared.protocol import EventType, priority_of, type_name

# wristband alerts that go to a resident's care circle with escalation
WRISTBAND_P0 = frozenset({EventType.SOS, EventType.FALL, EventType.EXIT, EventType.MISSING})
# wristband alerts a contact may ask for (no escalation, no acknowledgement needed)
WRISTBAND_P1 = frozenset({EventType.STRAP_REMOVED, EventType.BATTERY_LOW, EventType.SCANNER_BLIND})
# venue alarms: staff first, acknowledged like a dispatcher would (the post's LED turns white)
VENUE_P0 = frozenset({EventType.ALARM, EventType.ALARM_HELD, EventType.SMOKE, EventType.GAS})
# venue state changes staff may ask for
VENUE_P1 = frozenset(
    {
        EventType.TAMPER,
        EventType.DOOR_HELD_OPEN,
        EventType.EXTINGUISHER,
        EventType.SENSOR_FAULT,
        EventType.DEVICE_OFFLINE,
        EventType.SCANNER_BLIND,
    }
)
# events that end an earlier alert: a follow-up goes to those who were told of it
CLOSERS = frozenset({EventType.BACK_INSIDE, EventType.DEVICE_ONLINE, EventType.SENSOR_CLEAR})
# what the gateway's fallback tells central about what it did itself (docs/protocol.md §4.4)
GATEWAY_NOTICES = frozenset({EventType.NOTIFIED, EventType.LOCAL_ACK})
NOTIFIABLE = WRISTBAND_P0 | WRISTBAND_P1 | VENUE_P0 | VENUE_P1
# P0 alerts for people: escalated round by round until someone acknowledges (the gateway's
# fallback sends these itself while central is unreachable)
ESCALATING = WRISTBAND_P0 | VENUE_P0
# names a care-circle file may use in `alerts = [...]`
ALERT_NAMES = {type_name(t): t for t in NOTIFIABLE}
DEFAULT_CONTACT_ALERTS = WRISTBAND_P0
DEFAULT_STAFF_ALERTS = VENUE_P0 | frozenset({EventType.DEVICE_OFFLINE})


def alert_id(device: str, boot: int, seq: int) -> str:
    return f"{device}/{boot}/{seq}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One event as the notifier sees it; `data` has the verifier's JSON shape (text keys)."""

    venue: str
    gateway: str
    device: str
    boot: int
    seq: int
    type: int
    received_ms: int  # gateway wall clock when the event was raised or the frame arrived
    data: dict[str, Any] = field(default_factory=dict)
    # how long it waited in the gateway's buffer before it was sealed into a batch: a quarter
    # of a second or more means the gateway's uplink was down when it was raised (its fallback may have
    # told people itself, docs/notifications.md)
    waited_ms: int = 0

    @property
    def id(self) -> str:
        return alert_id(self.device, self.boot, self.seq)

    @property
    def name(self) -> str:
        return type_name(self.type)

    @property
    def priority(self) -> int:
        return priority_of(self.type)

    @property
    def wristband(self) -> bool:
        return self.type in WRISTBAND_P0 | WRISTBAND_P1 | {EventType.BACK_INSIDE} and self.device != self.gateway

    @property
    def exit_watch(self) -> dict[str, Any] | None:
        """The context of a venue SCANNER_BLIND about an exit zone (not watched, or watched again:
        its `watched` is 0 or 1), None for every other alert (docs/protocol.md §4.4)."""
        if self.type != EventType.SCANNER_BLIND or self.device != self.gateway:
            return None
        ctx = self.data.get("4")
        return ctx if isinstance(ctx, dict) and ctx.get("watched") in (0, 1) else None

    @property
    def escalates(self) -> bool:
        """P0 alerts for people: escalated round by round until someone acknowledges."""
        return self.type in ESCALATING

    @property
    def context(self) -> dict[str, Any]:
        ctx = self.data.get("3")
        return ctx if isinstance(ctx, dict) and self.wristband else {}

    @property
    def resident(self) -> str | None:
        ref = self.data.get("1")
        return ref if self.wristband and isinstance(ref, str) else None

    @property
    def zone(self) -> str | None:
        zone = self.data.get("2")
        return zone if self.wristband and isinstance(zone, str) else None

    @property
    def subject(self) -> str:
        """What the alert is about, so a later event can end it (see `resolves`)."""
        if self.type in (EventType.DEVICE_OFFLINE, EventType.DEVICE_ONLINE):
            return f"device:{self.data.get('1')}"
        if self.type in (
            EventType.SMOKE,
            EventType.GAS,
            EventType.DOOR_HELD_OPEN,
            EventType.EXTINGUISHER,
            EventType.SENSOR_FAULT,
        ):
            return f"sensor:{self.device}#{self.data.get('1')}"
        if self.type == EventType.SENSOR_CLEAR:
            return f"sensor:{self.device}#{self.data.get('1')}"
        return f"device:{self.device}" if not self.wristband else f"band:{self.device}"

    @property
    def resolves(self) -> frozenset[int]:
        """The alert types this event ends (for the same subject), empty when it ends none."""
        if self.type == EventType.BACK_INSIDE:
            what = self.context.get("resolves")
            return frozenset({EventType.EXIT} if what == "EXIT" else {EventType.MISSING} if what == "MISSING" else ())
        if self.type == EventType.DEVICE_ONLINE:
            return frozenset({EventType.DEVICE_OFFLINE})
        if self.type == EventType.SENSOR_CLEAR:
            ended = self.data.get("2")
            return frozenset({ended}) if isinstance(ended, int) else frozenset()
        return frozenset()

    @property
    def notified_alert(self) -> str | None:
        """For a NOTIFIED gateway event: the id of the alert the gateway already sent."""
        if self.type != EventType.NOTIFIED or self.device != self.gateway:
            return None
        device, boot, seq = self.data.get("1"), self.data.get("2"), self.data.get("3")
        if isinstance(device, str) and isinstance(boot, int) and isinstance(seq, int):
            return alert_id(device, boot, seq)
        return None

    @property
    def acked_alert(self) -> str | None:
        """For a LOCAL_ACK gateway event: the id of the alert acknowledged at the gateway."""
        if self.type != EventType.LOCAL_ACK or self.device != self.gateway:
            return None
        device, boot, seq = self.data.get("1"), self.data.get("2"), self.data.get("3")
        if isinstance(device, str) and isinstance(boot, int) and isinstance(seq, int):
            return alert_id(device, boot, seq)
        return None

    @classmethod
    def from_event(cls, venue: str, gateway: str, event: Event) -> Alert:
        """An alert from an event the gateway committed (its fallback, agent/gateway/fallback.py)."""
        return cls(
            venue, gateway, event.device, event.boot, event.seq, event.type, event.received, data_json(event.data)
        )

    @classmethod
    def from_record(cls, venue: str, record: dict[str, Any]) -> Alert:
        """An alert from a verifier event record; KeyError/TypeError when it is not one."""
        data = record.get("data") or {}
        if not isinstance(data, dict):
            raise TypeError("data is not a map")
        received = int(record["received_ms"])
        return cls(
            venue=venue,
            gateway=str(record["gateway"]),
            device=str(record["device"]),
            boot=int(record["boot"]),
            seq=int(record["seq"]),
            type=int(record["type"]),
            received_ms=received,
            data=data,
            waited_ms=max(0, int(record.get("sealed_ms", received)) - received),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "gateway": self.gateway,
            "device": self.device,
            "boot": self.boot,
            "seq": self.seq,
            "type": self.type,
            "received_ms": self.received_ms,
            "data": self.data,
            "waited_ms": self.waited_ms,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Alert:
        return cls(**obj)


def wanted(alert_type: int) -> bool:
    """True for the types the notifier acts on (alerts, closers, the gateway's NOTIFIED and LOCAL_ACK)."""
    return alert_type in NOTIFIABLE or alert_type in CLOSERS or alert_type in GATEWAY_NOTICES
