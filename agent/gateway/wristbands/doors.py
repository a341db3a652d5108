"""Venue sensors' door contacts for the alert engine: committed sensor events in, door changes out.

    Pipeline.on_commit --committed(events)--> DoorFeed --get()--> BleSources._door_changes()
      (DOOR_HELD_OPEN, SENSOR_CLEAR of one)                   engine.door_for(), engine.on_door()

The pipeline hands the committed events of `DoorFeed.types` of each commit round to
`committed()` (one of its `watches`, agent/gateway/pipeline.py); the feed keeps what a door
contact says (which sensor and channel, opened or shut, when) in a bounded queue on the event
loop, and the BLE source
(agent/gateway/wristbands/source.py) takes it from there to the engine, which maps the
contact to a door of an exit zone (`[[doors]]` in the venue file) or ignores it.

When a door opened: a sensor reports DOOR_HELD_OPEN once the contact has stood open for the
channel's `confirm_ms`, and says in data key 4 how long it had (docs/protocol.md §2.1), so
the opening is the acceptance time less that. A report without key 4 (firmware from before
it) is dated at its acceptance. The feed does not know `door_window_s`; a contact reporting
later than SLOW_MS after its opening is logged (throttled, per sensor and channel), since such
a channel cannot confirm an exit: an exit contact needs `confirm_ms` near 1000
(docs/wristband-alerts.md, "Door contacts").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agent.shared.frames import Event
from agent.shared.log import Throttle
from agent.shared.protocol import EventType

log = logging.getLogger(__name__)

QUEUE_MAX = 1024  # door changes waiting for the engine; more are dropped and counted
SLOW_MS = 10_000  # a contact reporting this long after the opening cannot confirm an exit
_OPEN = int(EventType.DOOR_HELD_OPEN)
_CLEAR = int(EventType.SENSOR_CLEAR)


@dataclass(frozen=True, slots=True)
class DoorChange:
    """A door contact opened (or shut) at `t_ms`, gateway unix ms."""

    sensor: str  # the venue sensor's device id
    channel: str  # the channel's name (data key 3)
    opened: bool
    t_ms: int
    held_ms: int | None  # opened: how long it had stood open when reported (None: not said)


class DoorFeed:
    """Door changes from committed venue-sensor events, for the BLE source (see the module docstring)."""

    types = frozenset((_OPEN, _CLEAR))  # the event types the pipeline hands to committed()

    def __init__(self, limit: int = QUEUE_MAX) -> None:
        self._queue: asyncio.Queue[DoorChange] = asyncio.Queue(limit)
        self._slow = Throttle(3600.0)
        self.dropped = 0

    def committed(self, events: list[Event]) -> None:
        """The committed events of `types` of one commit round."""
        for event in events:
            self.observe(event)

    def observe(self, event: Event) -> None:
        """One committed event of `types`; what is not a door contact's change is ignored."""
        data = event.data
        channel = data.get(3)
        if not isinstance(channel, str) or (event.type == _CLEAR and data.get(2) != _OPEN):
            return
        if event.type == _OPEN:
            held = data.get(4)
            held_ms = held if isinstance(held, int) and not isinstance(held, bool) and held >= 0 else None
            change = DoorChange(event.device, channel, True, event.received - (held_ms or 0), held_ms)
        else:
            change = DoorChange(event.device, channel, False, event.received, None)
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> DoorChange:
        return await self._queue.get()

    def slow(self, change: DoorChange, door: str) -> None:
        """Log a mapped contact that reports too late to confirm an exit (once an hour per channel)."""
        if change.held_ms is not None and change.held_ms <= SLOW_MS:
            return
        suppressed = self._slow.allow((change.sensor, change.channel))
        if suppressed is not None:
            log.warning(
                "door_contact_slow door=%s sensor=%s channel=%s held_ms=%s suppressed_since_last=%d hint=%r",
                door,
                change.sensor,
                change.channel,
                change.held_ms,
                suppressed,
                "exit confirmation needs the channel's confirm_ms near 1000 (docs/wristband-alerts.md)",
            )
