"""Notifier: verified alerts in, messages to people out, until someone acknowledges.

    Notifier.alert(alert)     an event from wherever it comes (central's verifier, or the
                              gateway's fallback): stored once per alert id, round 0 queued
    Notifier.ack(...)         an acknowledgement (link, reply, operator): escalation stops, the
                              others who were told hear who is on it, an ACK command is owed
    Notifier.tick()           escalation rounds that are due; returns when the next thing is due
    Notifier.run(stop)        the delivery loop: due deliveries go out through the sender,
                              at most `concurrency` at once, retried with backoff
    Notifier.handover(id)     (the gateway's fallback) central has the alert now: it continues
                              the escalation, this notifier only finishes what it took on

Central learns what the gateway's fallback did from two gateway events (docs/protocol.md §4.4):
NOTIFIED (contacts the gateway took on, per round; follow-ups it sent) and LOCAL_ACK (an
acknowledgement at the gateway). `on_taken` is how the gateway hears what to put in NOTIFIED.

Everything the notifier decides is committed to the ledger (agent/notify/ledger.py) before it
acts, so a restart (kill -9 included) continues where it stopped. A delivery is marked
`sending` before the message leaves; `recover()` at start decides per channel what to do with
one that was in flight (docs/notifications.md, "Exactly once?").
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.notify import channels, messages
from agent.notify.alert import WRISTBAND_P0, Alert, wanted
from agent.notify.circle import Circle, Contact
from agent.notify.ledger import AlertRow, DeliveryRow, Ledger
from agent.notify.links import LinkError, Links
from agent.shared.log import Throttle
from agent.shared.protocol import IDENT_RE

log = logging.getLogger("agent.notify")

Sender = Callable[[channels.Channel, str, str, Mapping[str, str], float], None]
TOLD = ("sent", "sending", "unknown", "by_gateway")
TOLD_HERE = ("sent", "sending", "unknown")  # told by this notifier itself
PRUNE_EVERY_S = 3600.0
STOP_DRAIN_S = 10.0  # on stop, how long sends in flight may take to finish
ANY_CHANNEL = "*"  # a delivery row that stands for every channel of a contact (gateway fallback)
# An escalating alert that waited this long in the gateway's buffer before it was sealed was
# raised while the gateway's uplink was down: the gateway's fallback may have taken it on at
# once (its uplink down for fallback_after_s already), so central holds it for the NOTIFIED
# event that would follow it. An alarm is sealed in the commit round that stores it: tens of
# milliseconds under load (alarm_latency_idle, docs/benchmarks.md).
WAITED_HOLD_MS = 250
HANDED_OVER = "central"  # the gateway's ledger: central continues this alert's escalation


@dataclass(frozen=True, slots=True)
class Settings:
    max_attempts: int = 6  # per delivery; then the channel is reported as failing
    retry_base_s: float = 2.0  # first retry after about this long, doubling
    retry_cap_s: float = 60.0
    send_timeout_s: float = 20.0  # one attempt, connect and read
    concurrency: int = 8  # deliveries in flight at once
    max_alert_age_s: float = 86400.0  # older alerts are recorded, not sent
    # the gateway's fallback takes an alert on when its uplink has been down this long, or the
    # alert has waited this long for central's PUBACK; central holds an alert that reaches it
    # half that late (clock skew between gateway and central up to half of it is tolerated), or
    # that waited in the gateway's buffer (WAITED_HOLD_MS), for fallback_hold_s: its NOTIFIED
    # follows it in the P0 lane. 0 turns the hold off (the gateway's own notifier).
    fallback_after_s: float = 20.0
    fallback_hold_s: float = 5.0
    link_ttl_s: int = 86400
    keep_s: float = 90 * 86400.0  # the ledger forgets finished alerts older than this
    forward_acks: bool = True  # owe the gateway an ACK command for each acknowledgement


@dataclass(frozen=True, slots=True)
class Taken:
    """Deliveries the notifier took on for one alert: a round of it, or its follow-up."""

    alert: Alert
    kind: str  # "alert" (a round of the escalation) or "followup"
    round: int
    contacts: tuple[str, ...]
    at_ms: int


@dataclass(frozen=True, slots=True)
class AckResult:
    status: str  # acked | already | unknown | used | expired | invalid
    alert: Alert | None = None
    by: str | None = None
    at_ms: int | None = None


class Notifier:
    def __init__(
        self,
        circles: Mapping[str, Circle],
        ledger: Ledger,
        *,
        settings: Settings | None = None,
        links: Links | None = None,
        sender: Sender = channels.send,
        clock: Callable[[], float] = time.time,
        places: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        on_taken: Callable[[Taken], None] | None = None,
    ) -> None:
        """`on_taken(taken)`: called once the ledger holds the deliveries of a round or of a
        follow-up (the gateway's fallback turns these into its NOTIFIED events)."""
        self.circles = dict(circles)
        self.ledger = ledger
        self.settings = settings or Settings()
        self.links = links
        self.sender = sender
        self.clock = clock
        self.places = dict(places or {})
        self.rng = rng or random.Random()
        self.on_taken = on_taken
        self._taken: list[Taken] = []  # collected in a transaction, handed out after its commit
        self.counts: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._throttle = Throttle()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def wake(self) -> None:
        self._wake.set()

    # --- alerts in ------------------------------------------------------------------------

    def alert(self, alert: Alert) -> list[DeliveryRow]:
        """Take one event; returns the deliveries it queued (none for a repeat of a known id)."""
        if not wanted(alert.type):
            return []
        now = self._now_ms()
        self._taken.clear()
        queued: list[DeliveryRow] = []
        if alert.notified_alert is not None:
            self._gateway_notified(alert, now)
        elif alert.acked_alert is not None:
            self._gateway_acked(alert, now)
        else:
            queued = self._accept(alert, now)
        self._flush_taken()
        return queued

    def _flush_taken(self) -> None:
        taken, self._taken = self._taken, []
        if self.on_taken is not None:
            for t in taken:
                self.on_taken(t)

    def _hold(self, alert: Alert, age_s: float) -> bool:
        """Whether an escalating alert waits for the gateway's NOTIFIED (see Settings)."""
        s = self.settings
        return s.fallback_hold_s > 0 and (age_s >= s.fallback_after_s / 2 or alert.waited_ms >= WAITED_HOLD_MS)

    def _accept(self, alert: Alert, now: int) -> list[DeliveryRow]:
        circle = self.circles.get(alert.venue)
        age_s = (now - alert.received_ms) / 1000
        with self.ledger.tx() as db:
            if circle is None:
                if self.ledger.add_alert(db, alert, "no_circle", now):
                    self.counts["alerts_no_circle"] += 1
                    log.warning("alert_without_circle alert=%s type=%s venue=%s", alert.id, alert.name, alert.venue)
                return []
            if alert.resolves:
                closed = self._close(db, circle, alert, now) if self.ledger.add_alert(db, alert, "closer", now) else []
                self.wake()
                return [d for a in closed for d in self.ledger.deliveries(a, "followup") if d.state == "pending"]
            if age_s > self.settings.max_alert_age_s:
                if self.ledger.add_alert(db, alert, "stale", now):
                    self.counts["alerts_stale"] += 1
                    log.warning("alert_stale alert=%s type=%s age_s=%d", alert.id, alert.name, age_s)
                return []
            rounds = circle.rounds(alert)
            state = "open" if alert.escalates and rounds else "done"
            if not self.ledger.add_alert(db, alert, state, now):
                self.counts["alerts_repeated"] += 1
                return []
            self.counts["alerts"] += 1
            if not rounds:
                log.info("alert_no_recipients alert=%s type=%s venue=%s", alert.id, alert.name, alert.venue)
                return []
            if alert.escalates and self._hold(alert, age_s):
                # the gateway may have told people itself while central was unreachable: its
                # NOTIFIED event travels right behind the alert in the P0 lane; wait for it briefly
                hold_ms = int(self.settings.fallback_hold_s * 1000)
                self.ledger.set_alert(db, alert.id, next_at_ms=now + hold_ms)
                log.info("alert_held alert=%s age_s=%.0f hold_s=%.1f", alert.id, age_s, self.settings.fallback_hold_s)
            else:
                self._start_round(db, circle, alert, 0, now)
            self._resolved_early(db, circle, alert, now)
        self.wake()
        log.info("alert_accepted alert=%s type=%s venue=%s rounds=%d", alert.id, alert.name, alert.venue, len(rounds))
        return self._queued(alert.id)

    def _queued(self, alert_id: str) -> list[DeliveryRow]:
        self.wake()
        return [d for d in self.ledger.deliveries(alert_id) if d.state == "pending"]

    def _start_round(
        self, db: Any, circle: Circle, alert: Alert, rnd: int, now: int, next_at_ms: int | None = None
    ) -> None:
        """Queue round `rnd` (contacts the gateway took on are left out); the next round is due
        escalate_after later, or at `next_at_ms` (central continuing the gateway's escalation)."""
        rounds = circle.rounds(alert)
        done_by_gateway = {d.contact for d in self.ledger.deliveries(alert.id, "alert") if d.state == "by_gateway"}
        taken = []
        for contact in rounds[rnd]:
            if contact.id in done_by_gateway:
                continue
            taken.append(contact.id)
            for ch in contact.channels:
                self.ledger.add_delivery(
                    db, _key(), alert.id, "alert", alert.venue, contact.id, ch.fingerprint, rnd, now
                )
        # after the last round the timer still runs: it reports the alert as unacknowledged
        next_at = now + int(circle.escalate_after(alert) * 1000) if alert.escalates else None
        if next_at_ms is not None:
            next_at = next_at_ms
        self.ledger.set_alert(db, alert.id, round=rnd, next_at_ms=next_at)
        if taken:
            self._taken.append(Taken(alert, "alert", rnd, tuple(taken), now))
        if rnd > 0:
            self.counts["escalations"] += 1
            log.warning(
                "alert_escalated alert=%s type=%s round=%d contacts=%s",
                alert.id,
                alert.name,
                rnd,
                ",".join(c.id for c in rounds[rnd]),
            )

    def _close(self, db: Any, circle: Circle, closer: Alert, now: int) -> list[str]:
        """A closer (BACK_INSIDE, DEVICE_ONLINE, SENSOR_CLEAR) ends earlier alerts of its subject."""
        closed = []
        for row in self.ledger.open_alerts_for(closer.venue, closer.subject, closer.resolves):
            if _order(row.alert) < _order(closer):
                self._resolve(db, circle, row, closer, now)
                closed.append(row.id)
        return closed

    def _resolved_early(self, db: Any, circle: Circle, alert: Alert, now: int) -> None:
        """An alert whose closer arrived first (a gap filled late): told, then told it is over."""
        for closer in self.ledger.closers_for(alert.venue, alert.subject):
            if alert.type in closer.alert.resolves and _order(alert) < _order(closer.alert):
                row = self.ledger.alert(alert.id)
                if row is not None:
                    self._resolve(db, circle, row, closer.alert, now, told_now=True)
                return

    def _resolve(self, db: Any, circle: Circle, row: AlertRow, closer: Alert, now: int, told_now: bool = False) -> None:
        state = "resolved"
        self.ledger.set_alert(db, row.id, state=state, next_at_ms=None, resolved_by=closer.id)
        if not told_now:
            self.ledger.cancel_pending(db, row.id, ("alert",), now)
        told = [d for d in self.ledger.deliveries(row.id, "alert") if d.state in TOLD or told_now]
        # the gateway's fallback sent these contacts the follow-up itself (NOTIFIED, kind followup)
        followed = {d.contact for d in self.ledger.deliveries(row.id, "followup") if d.state == "by_gateway"}
        # the follow-up goes after the alert itself on every channel it used
        delay = 0 if not told_now else 2000
        contacts: list[str] = []
        for d in told:
            if d.contact in followed:
                continue
            for fp in self._channels_of(circle, d.contact, d.channel):
                self.ledger.add_delivery(
                    db, _key(), row.id, "followup", row.alert.venue, d.contact, fp, d.round, now + delay,
                    {"closer": closer.id},
                )  # fmt: skip
            if d.contact not in contacts:
                contacts.append(d.contact)
        if contacts:
            self._taken.append(Taken(row.alert, "followup", 0, tuple(contacts), now))
        self.counts["alerts_resolved"] += 1
        log.info("alert_resolved alert=%s by=%s told=%d", row.id, closer.id, len(told))

    def _channels_of(self, circle: Circle, contact_id: str, channel: str) -> list[str]:
        contact = circle.contacts.get(contact_id)
        if contact is None:
            return []
        if channel == ANY_CHANNEL:
            return [c.fingerprint for c in contact.channels]
        return [channel] if any(c.fingerprint == channel for c in contact.channels) else []

    def _gateway_notified(self, event: Alert, now: int) -> None:
        """The gateway's fallback took these contacts on itself (NOTIFIED, docs/protocol.md §4.4):
        they are not sent the alert (or its follow-up) again, and the escalation continues from
        the round the gateway reached."""
        target = event.notified_alert
        assert target is not None
        data = event.data
        names = _idents(data.get("4"))
        kind = "followup" if data.get("7") == "followup" else "alert"
        got_round, got_started = data.get("5"), data.get("6")
        rnd = got_round if isinstance(got_round, int) and 0 <= got_round < 64 else 0
        started = got_started if isinstance(got_started, int) else now
        with self.ledger.tx() as db:
            if not self.ledger.add_alert(db, event, "control", now):
                return
            for contact in names:
                self.ledger.add_delivery(
                    db, _key(), target, kind, event.venue, contact, ANY_CHANNEL, rnd, now, state="by_gateway"
                )
                for d in self.ledger.deliveries(target, kind):
                    if d.contact == contact and d.state in ("pending", "failed"):
                        self.ledger.set_delivery(db, d.id, now, state="by_gateway", next_at_ms=None)
            if kind == "alert":
                self._continue_from(db, target, rnd, started, now)
        self.counts["gateway_notified"] += 1
        self.wake()
        log.info("gateway_notified alert=%s kind=%s round=%d contacts=%s", target, kind, rnd, ",".join(names))

    def _continue_from(self, db: Any, alert_id: str, rnd: int, started_ms: int, now: int) -> None:
        """The gateway's escalation reached round `rnd` (started at `started_ms`): this one jumps
        there, queueing anyone of the rounds in between the gateway did not take on."""
        row = self.ledger.alert(alert_id)
        circle = None if row is None else self.circles.get(row.alert.venue)
        if row is None or circle is None or row.state != "open" or rnd <= row.round:
            return
        last = min(rnd, len(circle.rounds(row.alert)) - 1)
        for r in range(row.round + 1, last + 1):
            next_at = max(now, started_ms + int(circle.escalate_after(row.alert) * 1000)) if r == last else None
            self._start_round(db, circle, row.alert, r, now, next_at_ms=next_at)

    def _gateway_acked(self, event: Alert, now: int) -> None:
        """Someone acknowledged the alert at the gateway (LAN link or SMS reply, LOCAL_ACK): the
        device had receipt 3 from the gateway already, so no ACK command is owed; those the
        gateway told of the acknowledgement (key 7) are not told again."""
        target = event.acked_alert
        assert target is not None
        data = event.data
        by = data["4"] if isinstance(data.get("4"), str) and data["4"] else "gateway"
        via = f"gateway-{data['5']}" if data.get("5") in ("link", "sms") else "gateway"
        got_at = data.get("6")
        at = got_at if isinstance(got_at, int) else now
        with self.ledger.tx() as db:
            if not self.ledger.add_alert(db, event, "control", now):
                return
            row = self.ledger.alert(target)
            if row is None:
                self.counts["gateway_acks_unknown"] += 1
                log.warning("gateway_ack_unknown alert=%s by=%s", target, by)
                return
            result = self._ack(
                db, row, by, via, now, at_ms=at, told_elsewhere=frozenset(_idents(data.get("7"))), command=False
            )
        self.counts["gateway_acks"] += 1
        self.wake()
        log.info("gateway_acked alert=%s by=%s via=%s status=%s", target, by, via, result.status)

    # --- acknowledgements -----------------------------------------------------------------

    def ack(self, alert_id: str, by: str, via: str) -> AckResult:
        """Someone (a contact id, or a name for an operator) acknowledged the alert."""
        now = self._now_ms()
        row = self.ledger.alert(alert_id)
        if row is None:
            return AckResult("unknown")
        with self.ledger.tx() as db:
            result = self._ack(db, row, by, via, now)
        self.wake()
        return result

    def ack_link(self, token: str) -> AckResult:
        """An acknowledgement through a signed link (agent/notify/links.py)."""
        if self.links is None:
            return AckResult("invalid")
        now = self._now_ms()
        try:
            token_id = self.links.check(token, now / 1000)
        except LinkError as exc:
            self._link_rejected(exc.reason)
            return AckResult("expired" if exc.reason == "expired" else "invalid")
        tok = self.ledger.token(token_id)
        if tok is None:
            self._link_rejected("unknown_token")
            return AckResult("invalid")
        row = self.ledger.alert(tok["alert_id"])
        if row is None:
            return AckResult("invalid")
        with self.ledger.tx() as db:
            if not self.ledger.use_token(db, token_id, now):
                return AckResult("used", row.alert, self._name(row.alert.venue, row.acked_by), row.acked_ms)
            result = self._ack(db, row, tok["contact"], "link", now)
        self.wake()
        return result

    def _link_rejected(self, reason: str) -> None:
        # counted always, logged at most every 10 s per reason: anyone can send requests
        self.counts[f"links_rejected_{reason}"] += 1
        suppressed = self._throttle.allow(reason)
        if suppressed is not None:
            log.warning("ack_link_rejected reason=%s suppressed_since_last=%d", reason, suppressed)

    def _ack(
        self,
        db: Any,
        row: AlertRow,
        by: str,
        via: str,
        now: int,
        *,
        at_ms: int | None = None,
        told_elsewhere: frozenset[str] = frozenset(),
        command: bool = True,
    ) -> AckResult:
        """Record an acknowledgement, tell the others who were told (but those in
        `told_elsewhere`, whom the gateway told itself) and owe the gateway an ACK command."""
        if row.state not in ("open", HANDED_OVER) or row.acked_ms is not None:
            current = self.ledger.alert(row.id)
            assert current is not None
            by_name = self._name(row.alert.venue, current.acked_by) if current.acked_by else current.state
            return AckResult("already", row.alert, by_name, current.acked_ms)
        at = now if at_ms is None else at_ms
        circle = self.circles.get(row.alert.venue)
        state = "acked" if row.state == "open" else row.state
        self.ledger.set_alert(db, row.id, state=state, next_at_ms=None, acked_ms=at, acked_by=by, acked_via=via)
        cancelled = self.ledger.cancel_pending(db, row.id, ("alert",), now)
        name = by
        if circle is not None:
            contact = circle.contacts.get(by)
            name = contact.name if contact is not None else by
            told = {(d.contact, d.channel) for d in self.ledger.deliveries(row.id, "alert") if d.state in TOLD}
            for contact_id, channel in sorted(told):
                if contact_id == by or contact_id in told_elsewhere:
                    continue
                for fp in self._channels_of(circle, contact_id, channel):
                    self.ledger.add_delivery(
                        db, _key(), row.id, "acked", row.alert.venue, contact_id, fp, 0, now, {"by": name, "at": at}
                    )
        if self.settings.forward_acks and command:
            # the contact id, not the person's name: the gateway logs this text
            self.ledger.add_command(db, row.alert, f"acknowledged by {by} via {via}"[:64], now)
        self.counts["acks"] += 1
        log.info("alert_acked alert=%s by=%s via=%s cancelled=%d", row.id, by, via, cancelled)
        return AckResult("acked", row.alert, name, at)

    def handover(self, alert_id: str) -> bool:
        """(The gateway's fallback) central has the alert now and continues its escalation.

        Deliveries this notifier took on still go out (central left those contacts to it), an
        acknowledgement through its links still counts, but no further round starts here and
        follow-ups are central's. False when the alert is unknown or already over.
        """
        row = self.ledger.alert(alert_id)
        if row is None or row.state not in ("open", "acked"):
            return False
        with self.ledger.tx() as db:
            self.ledger.set_alert(db, alert_id, state=HANDED_OVER, next_at_ms=None)
        self.counts["handed_over"] += 1
        log.info("alert_handed_over alert=%s round=%d acked=%s", alert_id, row.round, row.acked_ms is not None)
        return True

    def _name(self, venue: str, contact_id: str | None) -> str | None:
        circle = self.circles.get(venue)
        contact = None if circle is None or contact_id is None else circle.contacts.get(contact_id)
        return contact.name if contact is not None else contact_id

    # --- time -------------------------------------------------------------------------------

    def tick(self) -> float | None:
        """Start the escalation rounds that are due; seconds until something else is due."""
        now = self._now_ms()
        for row in self.ledger.due_alerts(now):
            circle = self.circles.get(row.alert.venue)
            self._taken.clear()
            with self.ledger.tx() as db:
                if circle is None or row.state != "open":
                    self.ledger.set_alert(db, row.id, next_at_ms=None)
                    continue
                rounds = circle.rounds(row.alert)
                if row.round + 1 < len(rounds):
                    self._start_round(db, circle, row.alert, row.round + 1, now)
                else:
                    self.ledger.set_alert(db, row.id, next_at_ms=None)
                    self.counts["escalations_exhausted"] += 1
                    log.warning("alert_unacknowledged alert=%s type=%s rounds=%d", row.id, row.alert.name, len(rounds))
            self._flush_taken()
        dues = [
            t for t in (self.ledger.next_alert_due(), self.ledger.next_delivery_due(self._inflight)) if t is not None
        ]
        return None if not dues else max(0.0, (min(dues) - self._now_ms()) / 1000)

    # --- restart ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Deliveries a crash left in `sending`: decide per channel (docs/notifications.md)."""
        now = self._now_ms()
        for d in self.ledger.in_doubt():
            _, channel = self._lookup(d.venue, d.contact, d.channel)
            row = self.ledger.alert(d.alert_id)
            with self.ledger.tx() as db:
                self.ledger.end_attempt(db, d.id, d.attempts, now, "in_doubt", "notifier stopped during the send")
                if channel is None:
                    self.ledger.set_delivery(db, d.id, now, state="cancelled", last_error="channel removed")
                    continue
                still_needed = (
                    d.kind == "alert"
                    and row is not None
                    and row.state in ("open", HANDED_OVER)
                    and row.acked_ms is None
                )
                if channel.webhook or still_needed:
                    # a webhook gets the same delivery key, so the receiver can drop the repeat; a
                    # person is sent an open alert again (marked as a repeat) rather than maybe never
                    self.ledger.set_delivery(db, d.id, now, state="pending", repeat=1, next_at_ms=now)
                    self.counts["in_doubt_resent"] += 1
                    log.warning(
                        "delivery_in_doubt action=resend delivery=%d alert=%s contact=%s channel=%s",
                        d.id,
                        d.alert_id,
                        d.contact,
                        channel,
                    )
                else:
                    self.ledger.set_delivery(db, d.id, now, state="unknown", next_at_ms=None)
                    self.counts["in_doubt_dropped"] += 1
                    log.warning(
                        "delivery_in_doubt action=none delivery=%d alert=%s kind=%s contact=%s channel=%s",
                        d.id,
                        d.alert_id,
                        d.kind,
                        d.contact,
                        channel,
                    )

    def _lookup(self, venue: str, contact_id: str, fp: str) -> tuple[Contact | None, channels.Channel | None]:
        circle = self.circles.get(venue)
        contact = None if circle is None else circle.contacts.get(contact_id)
        if contact is None:
            return None, None
        return contact, next((c for c in contact.channels if c.fingerprint == fp), None)

    # --- delivery ---------------------------------------------------------------------------

    def _message(self, d: DeliveryRow, contact: Contact, now: int) -> messages.Message | None:
        circle = self.circles[d.venue]
        lang = contact.language
        if d.kind == "failing":
            n = d.note
            return messages.failing_message(circle, lang, n["contact"], n["channel"], n["attempts"], n["error"])
        if d.kind == "test":
            return messages.channel_test_message(circle, lang)
        row = self.ledger.alert(d.alert_id)
        if row is None:
            return None
        if d.kind == "alert":
            link, code = self._link(row, contact)
            return messages.alert_message(
                row.alert, circle, lang, now, link, self.places, repeat=d.repeat, reply_code=code
            )
        if d.kind == "followup":
            closer = self.ledger.alert(d.note["closer"])
            return None if closer is None else messages.followup_message(closer.alert, row.alert, circle, lang, now)
        if d.kind == "acked":
            return messages.acked_message(row.alert, circle, lang, d.note["by"], d.note["at"], now)
        return None

    def _link(self, row: AlertRow, contact: Contact) -> tuple[str | None, str | None]:
        """The contact's acknowledgement link, and an SMS reply code when it has a modem channel."""
        if self.links is None or not row.alert.escalates:
            return None, None
        expires = int(self.clock()) + self.settings.link_ttl_s
        with self.ledger.tx() as db:
            token_id = self.ledger.add_token(db, Links.new_id(), row.id, contact.id, expires)
        tok = self.ledger.token(token_id)
        assert tok is not None
        code = self.links.sms_code(token_id) if any(c.modem for c in contact.channels) else None
        return self.links.url(token_id, int(tok["expires_s"])), code

    def ack_reply(self, number: str, text: str) -> AckResult:
        """An SMS to the notifier's modem: "OK <code>" from a contact's own number acknowledges."""
        if self.links is None:
            return AckResult("invalid")
        found = re.search(r"(?<!\d)(\d{6})(?!\d)", text)
        sender = _digits(number)
        contacts = [
            c.id
            for circle in self.circles.values()
            for c in circle.contacts.values()
            if any(ch.modem and _same_number(_digits(ch.number), sender) for ch in c.channels)
        ]
        if found is None or not contacts:
            self._link_rejected("sms_unmatched")
            return AckResult("invalid")
        now = self._now_ms()
        for contact_id in contacts:
            for tok in self.ledger.open_tokens(contact_id, now // 1000):
                if self.links.sms_code(tok["id"]) != found.group(1):
                    continue
                row = self.ledger.alert(tok["alert_id"])
                if row is None:
                    continue
                with self.ledger.tx() as db:
                    if not self.ledger.use_token(db, tok["id"], now):
                        continue
                    result = self._ack(db, row, contact_id, "sms", now)
                self.wake()
                return result
        self._link_rejected("sms_bad_code")
        return AckResult("invalid")

    def _backoff_ms(self, attempts: int) -> int:
        s = self.settings
        delay = min(s.retry_cap_s, s.retry_base_s * 2 ** max(0, attempts - 1))
        return int(delay * 1000 * self.rng.uniform(0.8, 1.0))

    async def deliver(self, d: DeliveryRow) -> bool:
        """One attempt of one delivery: `sending` committed first, the result after."""
        now = self._now_ms()
        contact, channel = self._lookup(d.venue, d.contact, d.channel)
        if contact is None or channel is None:
            with self.ledger.tx() as db:
                self.ledger.set_delivery(db, d.id, now, state="cancelled", next_at_ms=None, last_error="not configured")
            return False
        message = self._message(d, contact, now)
        if message is None:
            with self.ledger.tx() as db:
                self.ledger.set_delivery(db, d.id, now, state="cancelled", next_at_ms=None, last_error="nothing to say")
            return False
        attempt = d.attempts + 1
        with self.ledger.tx() as db:
            self.ledger.set_delivery(db, d.id, now, state="sending", attempts=attempt, next_at_ms=None)
            self.ledger.add_attempt(db, d.id, attempt, now)
        error: str | None = None
        timeout = self.settings.send_timeout_s
        fields = {"ge_delivery": d.key, "ge_alert": d.alert_id, "ge_kind": d.kind}
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.sender, channel, message.title, message.body, fields, timeout), timeout + 5
            )
        except channels.SendError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"{channel.service}: no answer within {timeout + 5:.0f} s"
        end = self._now_ms()
        if error is None:
            with self.ledger.tx() as db:
                self.ledger.set_delivery(db, d.id, end, state="sent", last_error=None)
                self.ledger.end_attempt(db, d.id, attempt, end, "sent", None)
            self.counts[f"{d.kind}_sent"] += 1
            log.info(
                "delivered kind=%s alert=%s contact=%s channel=%s attempt=%d ms=%d",
                d.kind,
                d.alert_id,
                d.contact,
                channel,
                attempt,
                end - now,
            )
            return True
        self.counts["attempts_failed"] += 1
        gave_up = attempt >= self.settings.max_attempts
        with self.ledger.tx() as db:
            self.ledger.end_attempt(db, d.id, attempt, end, "failed", error)
            if gave_up:
                self.ledger.set_delivery(db, d.id, end, state="gave_up", last_error=error, next_at_ms=None)
                self._report_failing(db, d, contact, channel, attempt, error, end)
            else:
                self.ledger.set_delivery(
                    db, d.id, end, state="failed", last_error=error, next_at_ms=end + self._backoff_ms(attempt)
                )
        log.warning(
            "delivery_failed kind=%s alert=%s contact=%s channel=%s attempt=%d/%d error=%r",
            d.kind,
            d.alert_id,
            d.contact,
            channel,
            attempt,
            self.settings.max_attempts,
            error,
        )
        return False

    def _report_failing(
        self, db: Any, d: DeliveryRow, contact: Contact, channel: channels.Channel, attempts: int, error: str, now: int
    ) -> None:
        self.counts["channels_failing"] += 1
        log.error(
            "channel_failing venue=%s contact=%s channel=%s attempts=%d error=%r",
            d.venue,
            contact.id,
            channel,
            attempts,
            error,
        )
        circle = self.circles[d.venue]
        if d.kind != "failing":
            note = {"contact": contact.name, "channel": channel.label, "attempts": attempts, "error": error[:120]}
            for staff_id in circle.staff:
                staff = circle.contacts[staff_id]
                for ch in staff.channels:
                    if ch.fingerprint == channel.fingerprint:
                        continue
                    self.ledger.add_delivery(
                        db, _key(), f"failing:{d.id}", "failing", d.venue, staff_id, ch.fingerprint, 0, now, note
                    )
        if d.kind == "alert":
            # nobody of this round can be reached on any channel: escalate now, not after the timer
            row = self.ledger.alert(d.alert_id)
            if row is not None and row.state == "open" and row.round == d.round and row.next_at_ms is not None:
                same_round = [x for x in self.ledger.deliveries(d.alert_id, "alert") if x.round == d.round]
                if all(x.state in ("gave_up", "cancelled") or x.id == d.id for x in same_round):
                    self.ledger.set_alert(db, row.id, next_at_ms=now)
                    log.warning("alert_escalated_early alert=%s round=%d reason=unreachable", row.id, d.round)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver what is due, start escalation rounds, until `stop` is set."""
        self.recover()
        try:
            pruned_at = 0.0
            while not stop.is_set():
                self._wake.clear()
                if self.clock() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = self.clock()
                    removed = self.ledger.prune(self._now_ms() - int(self.settings.keep_s * 1000))
                    if removed:
                        log.info("ledger_pruned alerts=%d keep_days=%.0f", removed, self.settings.keep_s / 86400)
                self.tick()
                free = self.settings.concurrency - len(self._inflight)
                if free > 0:
                    for d in self.ledger.due_deliveries(self._now_ms(), free, self._inflight):
                        self._start(d)
                # with every slot busy, a finished delivery wakes the loop
                wait = self.tick() if len(self._inflight) < self.settings.concurrency else None
                if wait is not None and wait <= 0:
                    wait = 0.01
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
        finally:
            # a graceful stop lets the sends in flight finish (bounded), so their results are
            # recorded; what is still running then is cancelled and is in doubt at the next start
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=STOP_DRAIN_S)
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, d: DeliveryRow) -> None:
        self._inflight.add(d.id)

        async def one() -> None:
            try:
                await self.deliver(d)
            except Exception:
                log.exception("delivery_crashed delivery=%d", d.id)
            finally:
                self._inflight.discard(d.id)
                self._wake.set()

        task = asyncio.create_task(one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _idents(value: Any) -> list[str]:
    """The contact ids in a gateway event's list (anything else in it is ignored)."""
    if not isinstance(value, list):
        return []
    return [c for c in value if isinstance(c, str) and IDENT_RE.fullmatch(c)]


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def _same_number(a: str, b: str) -> bool:
    """The same phone number written with or without its country code (at least 8 digits agree)."""
    n = min(len(a), len(b))
    return n >= 8 and a[-n:] == b[-n:]


def _key() -> str:
    return secrets.token_hex(12)


def _order(alert: Alert) -> tuple[int, int]:
    return (alert.boot, alert.seq)


__all__ = ["HANDED_OVER", "WRISTBAND_P0", "AckResult", "Notifier", "Sender", "Settings", "Taken"]
