"""Device liveness: a post or sensor that stops reporting is a safety problem, not a metric.

    Pipeline.ingest --heard(event)-->  Liveness  <--status(device, payload)-- LocalBroker (ge/dev/+/status)
    Liveness.check(), once a second (agent/gateway/app.py):
        who has been silent too long                 -> DEVICE_OFFLINE (P1)
        who was reported offline and has been heard  -> DEVICE_ONLINE (P1)
    each event with the device's liveness row, in one transaction (Pipeline.gateway_event)

Liveness is state only: it is built before the pipeline that feeds it, and the gateway's job
that calls check() commits what it returns.

A device is followed from its first accepted frame. Its heartbeat interval is learned: the
median of its last gaps between HEARTBEAT frames of one boot (a skipped heartbeat, e.g. while
its outbox was busy, does not move it), `[liveness] default_interval_s` until one gap is
known. It is reported offline (docs/protocol.md §4.4, data `{1: device, 2: silent ms, 3: reason,
4: interval ms}`) once it has been silent for

    2 x interval + margin_s   two heartbeats missed (reason "heartbeat"), or
    1 x interval + margin_s   after its MQTT last will `offline` on ge/dev/<id>/status (reason "will").

A status message carries no MAC: the local broker's per-device logins and ACL
(agent/shared/broker_auth.py) let only the device's own login publish there, but a stolen or
shared broker password, or a broker without the ACL, lets anyone on the venue network do it. So
a will alone never reports a device that heartbeats on time: it only shortens the wait for one
that has also gone quiet. Any accepted frame (MAC-checked, fresh) is proof of life; a device
reported offline that is heard again is reported online with the time it was away.

The state is in the buffer's `liveness` table, written in the transaction of the event that
changed it (and when a device is first followed or its interval moves by a quarter), and read
back at start: a restart neither raises an offline device again nor forgets the devices it
follows; every followed device gets a full wait from the start before it can be reported.
`snapshot()` gives per device what the gateway's status page shows.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.gateway.config import LivenessConfig
from agent.gateway.planner import LivenessRow
from agent.gateway.stats import LivenessCounters
from agent.shared.frames import Event
from agent.shared.log import Throttle
from agent.shared.protocol import ALARM_POST, IDENT_RE, SENSOR, EventType
from agent.shared.registry import Registry

log = logging.getLogger(__name__)

FOLLOWED_KINDS = (ALARM_POST, SENSOR)
GAPS = 8  # heartbeat gaps the learned interval is the median of
RELEARN = 0.25  # a learned interval that moved this much (relative) is persisted again
CHECK_S = 1.0  # how often the gateway calls check()
HEARTBEAT = int(EventType.HEARTBEAT)

# an event to raise: (type, data, the liveness rows to commit with it)
Raised = tuple[int, dict[int, Any], list[LivenessRow]]


@dataclass(frozen=True, slots=True)
class DeviceLiveness:
    """One device as `snapshot()` reports it."""

    last_heard_ms: int | None  # unix ms of its last accepted frame; None: not heard since the start
    interval_ms: int  # learned heartbeat interval (or the default until learned)
    learned: bool
    offline_since_ms: int | None  # unix ms since when it is reported offline
    reason: str | None  # why: "heartbeat" or "will"


class _Device:
    __slots__ = (
        "back",
        "boot",
        "dirty",
        "gaps",
        "heard",
        "heard_ms",
        "interval_s",
        "kept_ms",
        "last_beat",
        "learned",
        "offline",
        "reason",
        "will",
    )

    def __init__(self, now: float, interval_s: float, kept_ms: int | None, learned: bool) -> None:
        self.heard = now  # monotonic
        self.heard_ms: int | None = None
        self.boot = -1
        self.last_beat: float | None = None  # monotonic time of the last heartbeat of `boot`
        self.gaps: deque[float] = deque(maxlen=GAPS)
        self.dirty = False  # a gap came in since the interval was last worked out
        self.interval_s = interval_s
        self.learned = learned  # interval_s was learned (else it is the default)
        self.kept_ms = kept_ms  # the interval the table holds (0: the default; None: no row yet)
        self.offline: int | None = None  # unix ms since when it is reported offline
        self.reason: str | None = None
        self.will = False  # its last will arrived after its last frame
        self.back: int | None = None  # unix ms of the frame that showed it is back (while offline)


class Liveness:
    """Follows the posts and sensors; check() says which DEVICE_OFFLINE / DEVICE_ONLINE to raise."""

    def __init__(
        self,
        cfg: LivenessConfig,
        registry: Registry,
        *,
        rows: Iterable[LivenessRow],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            rows: the buffer's liveness table as the restart found it (Store.load_liveness).
            clock, wall: monotonic seconds (silence is measured on it: a wall clock step must
                not report every device at once) and unix seconds (what events carry).
        """
        self.cfg = cfg
        self.registry = registry
        self._kept: list[LivenessRow] = []  # rows to persist with no event (take_kept)
        self.clock = clock
        self.wall = wall
        self.counters = LivenessCounters()
        self._throttle = Throttle()
        self._devices: dict[str, _Device] = {}
        now = clock()
        for device, interval_ms, offline, reason in rows:
            if self._followable(device):
                learned = interval_ms > 0
                interval_s = interval_ms / 1000 if learned else cfg.default_interval_s
                d = self._devices[device] = _Device(now, interval_s, interval_ms, learned)
                d.offline, d.reason = offline, reason
        self.counters.followed = len(self._devices)

    def _followable(self, device: str) -> bool:
        found = self.registry.get(device)
        return found is not None and found.kind in FOLLOWED_KINDS

    # --- in -------------------------------------------------------------------------------

    def heard(self, event: Event) -> None:
        """An accepted frame of `event.device`. Every frame comes here: it only records (measured
        at ~0.2 µs a frame); the interval is worked out in check()."""
        now = self.clock()
        d = self._devices.get(event.device)
        if d is None:
            if not self._followable(event.device):
                return
            d = self._devices[event.device] = _Device(now, self.cfg.default_interval_s, 0, False)
            self.counters.followed = len(self._devices)
            self._kept.append(self._row(event.device, d))
        if event.type == HEARTBEAT:
            if event.boot == d.boot and d.last_beat is not None:
                d.gaps.append(now - d.last_beat)
                d.dirty = True
            d.boot = event.boot
            d.last_beat = now
        d.heard = now
        d.heard_ms = event.received
        d.will = False
        if d.offline is not None and d.back is None:
            d.back = event.received

    def _learn(self, device: str, d: _Device) -> None:
        """The interval from the heartbeat gaps; persisted when it moved by a quarter."""
        d.dirty = False
        ordered = sorted(d.gaps)
        d.interval_s = max(ordered[len(ordered) // 2], 0.1)
        d.learned = True
        kept = d.kept_ms or 0
        if not kept or abs(d.interval_s * 1000 - kept) > RELEARN * kept:
            d.kept_ms = int(d.interval_s * 1000)
            self._kept.append(self._row(device, d))

    def status(self, device: str, payload: bytes) -> None:
        """A message on ge/dev/<device>/status: `online` after it connects, `offline` as its will."""
        if not IDENT_RE.fullmatch(device) or payload not in (b"online", b"offline"):
            self._reject("status_malformed", device[:40], f"payload {payload[:20]!r}")
            return
        d = self._devices.get(device)
        if d is None:
            # a device not followed (never heard, or not a post or sensor): nothing to shorten
            if not self._followable(device):
                self._reject("status_unknown_device", device, payload.decode())
            return
        d.will = payload == b"offline"

    def _reject(self, reason: str, device: str, detail: str) -> None:
        self.counters.rejected[reason] += 1
        # one line per reason every 10 s whatever the device id: junk under invented ids must
        # not write a line each
        suppressed = self._throttle.allow(reason)
        if suppressed is not None:
            log.warning(
                "status_rejected device=%s reason=%s detail=%r suppressed_since_last=%d",
                device,
                reason,
                detail,
                suppressed,
            )

    # --- out ------------------------------------------------------------------------------

    def check(self) -> list[Raised]:
        """The events to raise now: devices silent past their limit, devices heard again."""
        now = self.clock()
        margin = self.cfg.margin_s
        out: list[Raised] = []
        for device, d in list(self._devices.items()):
            if not self._followable(device):
                del self._devices[device]  # revoked
                self.counters.followed = len(self._devices)
                continue
            if d.dirty:
                self._learn(device, d)
            if d.offline is not None:
                if d.back is not None:
                    out.append(self._online(device, d, d.back))
                continue
            silent = now - d.heard
            if silent > 2 * d.interval_s + margin or (d.will and silent > d.interval_s + margin):
                out.append(self._offline(device, d, silent))
        return out

    def take_kept(self) -> list[LivenessRow]:
        """Rows to persist that come with no event (a device first followed, an interval learned
        by the last check())."""
        out, self._kept = self._kept, []
        return out

    def _offline(self, device: str, d: _Device, silent: float) -> Raised:
        d.offline = int(self.wall() * 1000)
        d.reason = "will" if d.will else "heartbeat"
        data: dict[int, Any] = {1: device, 2: int(silent * 1000), 3: d.reason, 4: int(d.interval_s * 1000)}
        self.counters.offline += 1
        log.warning(
            "device_offline device=%s silent_s=%.0f reason=%s interval_s=%.1f", device, silent, d.reason, d.interval_s
        )
        return (EventType.DEVICE_OFFLINE, data, [self._row(device, d)])

    def _online(self, device: str, d: _Device, back_ms: int) -> Raised:
        away_ms = max(0, back_ms - (d.offline or back_ms))
        d.offline, d.reason, d.back = None, None, None
        self.counters.online += 1
        log.info("device_online device=%s offline_s=%.0f", device, away_ms / 1000)
        return (EventType.DEVICE_ONLINE, {1: device, 2: away_ms}, [self._row(device, d)])

    def _row(self, device: str, d: _Device) -> LivenessRow:
        return (device, int(d.interval_s * 1000) if d.learned else 0, d.offline, d.reason)

    def snapshot(self) -> Mapping[str, DeviceLiveness]:
        """Per device followed: last heard, learned interval, offline since (for a status page)."""
        for device, d in self._devices.items():
            if d.dirty:
                self._learn(device, d)
        return {
            device: DeviceLiveness(d.heard_ms, int(d.interval_s * 1000), d.learned, d.offline, d.reason)
            for device, d in sorted(self._devices.items())
        }
