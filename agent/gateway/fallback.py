"""The gateway tells people itself while central is unreachable (docs/notifications.md).

    Pipeline.on_commit --committed(alerts, closers)--> AlarmWatch <--delivered(batch)-- Uplink (PUBACK)
    Fallback.run(): AlarmWatch.take_due(now, uplink down since) -> Notifier.alert()  (agent/notify)
        Notifier.on_taken (a round, a follow-up) -> NOTIFIED gateway event  -> Pipeline.gateway_event
        the acknowledgement page on the venue LAN, SMS replies to the modem -> LOCAL_ACK event,
            receipt 3 to the post (the receipt router), no command from central needed
        Sounder: a staff pager command, a relay (agent/gateway/sounder.py)
    AlarmWatch.take_handovers(): central's broker has a taken alert -> Notifier.handover()

An escalating P0 alert (SOS, FALL, EXIT, MISSING, ALARM, ALARM_HELD, SMOKE, GAS) committed to the
buffer is taken on by the gateway's own notifier (the same code as central's, agent/notify, with
its own ledger and a copy of the venue's care-circle file) when central's broker has not
acknowledged it `fallback_after_s` after it was raised, or at once while the uplink has been
down that long already. What the gateway did travels to central as gateway events committed
behind the alert in the P0 lane: NOTIFIED per round (the contacts it took on: it delivers to
them itself, with retries) and per follow-up, LOCAL_ACK per acknowledgement (docs/protocol.md
§4.4), so central, holding a late alert for them, tells nobody twice and continues the
escalation from there. Once central's broker acknowledged a taken alert, the gateway hands it
over: no further round starts here, follow-ups are central's, what it took on still goes out.

A closer (BACK_INSIDE, SENSOR_CLEAR) committed before its alert was taken on drops the alert
(nobody needs to hear of an exit that is over); after, it goes to the notifier, which tells
those it told. After a restart the buffer's pending alerts are followed again
(Store.pending_alerts), the notifier's ledger drops the ids it has, announces its rounds again
(central drops what it already has) and hands over what central acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from agent.gateway.config import NotifyConfig
from agent.gateway.signer import SealedBatch, batch_events
from agent.gateway.sounder import Sounder, open_relay
from agent.gateway.stats import FallbackCounters
from agent.notify import channels
from agent.notify.alert import ESCALATING, Alert, alert_id
from agent.notify.circle import Circle, load_circle
from agent.notify.ledger import Ledger
from agent.notify.links import Links, load_or_create_key
from agent.notify.notifier import HANDED_OVER, Notifier, Sender, Settings, Taken
from agent.shared.errors import ConfigError
from agent.shared.frames import Event
from agent.shared.protocol import RECEIPT_ACKNOWLEDGED, WRISTBAND, EventType
from agent.shared.registry import Registry

log = logging.getLogger(__name__)

Key = tuple[str, int, int]
# the closers that can end an escalating alert (BACK_INSIDE: EXIT, MISSING; SENSOR_CLEAR: SMOKE, GAS)
CLOSERS = frozenset({int(EventType.BACK_INSIDE), int(EventType.SENSOR_CLEAR)})
WATCHED = frozenset(int(t) for t in ESCALATING) | CLOSERS
TICK_S = 1.0  # the loop looks again at least this often (the sounder's time limit)
# the acknowledgement page shares the agent's event loop with the alarm path and faces the venue
# network: requests beyond this budget are answered 503 before any work (people tap a few links)
PAGE_REQUESTS_PER_S = 20.0


class UplinkState(Protocol):
    """The uplink as the fallback sees it (agent/gateway/uplink.py Uplink)."""

    @property
    def down_since_ms(self) -> int | None: ...


class AlarmWatch:
    """The escalating alerts committed and not yet acknowledged by central's broker; pure state.

    Built before the pipeline (which tells it each commit round's alerts) and the uplink (which
    tells it each PUBACK); the Fallback takes from it what is due.
    """

    types = WATCHED

    def __init__(self, gateway_id: str, after_s: float) -> None:
        self.gateway_id = gateway_id
        self.after_ms = int(after_s * 1000)
        self._pending: dict[Key, Event] = {}  # committed, not acknowledged, not taken on
        self._taken: set[Key] = set()  # taken on by the fallback, not acknowledged
        self._handovers: list[Key] = []
        self._closers: list[Event] = []
        self.changed = asyncio.Event()

    def committed(self, events: Iterable[Event]) -> None:
        """Events of `types` durable in the buffer (Pipeline.on_commit; at start, the restart's)."""
        closers = []
        for ev in events:
            if ev.device == self.gateway_id:
                continue
            if ev.type in CLOSERS:
                closers.append(ev)
            elif ev.key not in self._taken:
                self._pending.setdefault(ev.key, ev)
        for closer in closers:
            ended = Alert.from_event("", self.gateway_id, closer)
            for key, ev in list(self._pending.items()):
                alert = Alert.from_event("", self.gateway_id, ev)
                if alert.subject == ended.subject and ev.type in ended.resolves and key[1:] < closer.key[1:]:
                    # over before anyone had to be told: central drops it the same way
                    del self._pending[key]
                    log.info("fallback_alert_resolved_early alert=%s by=%s", alert.id, ended.id)
            self._closers.append(closer)
        self.changed.set()

    def delivered(self, batch: SealedBatch) -> None:
        """Central's broker acknowledged `batch` (Uplink on_delivered)."""
        if batch.prio != 0 or not (self._pending or self._taken):
            return
        for ev in batch_events(batch.blob):
            if ev.prio != 0:
                break  # a batch's P0 events come first
            self._pending.pop(ev.key, None)
            if ev.key in self._taken:
                self._taken.discard(ev.key)
                self._handovers.append(ev.key)
        self.changed.set()

    def take_due(self, now_ms: int, down_since_ms: int | None) -> list[Event]:
        """The alerts to take on now: unacknowledged `after_s` after they were raised, or
        any while the uplink has been down that long."""
        link_down = down_since_ms is not None and now_ms - down_since_ms >= self.after_ms
        due = [ev for ev in self._pending.values() if link_down or now_ms - ev.received >= self.after_ms]
        for ev in due:
            del self._pending[ev.key]
            self._taken.add(ev.key)
        return due

    def taken(self, key: Key) -> None:
        """A pending alert the fallback had taken on before a restart."""
        if self._pending.pop(key, None) is not None:
            self._taken.add(key)

    def pending(self) -> set[Key]:
        return set(self._pending) | self._taken

    def next_due_ms(self, down_since_ms: int | None) -> int | None:
        if not self._pending:
            return None
        first = min(ev.received for ev in self._pending.values()) + self.after_ms
        if down_since_ms is not None:
            first = min(first, down_since_ms + self.after_ms)
        return first

    def take_handovers(self) -> list[Key]:
        out, self._handovers = self._handovers, []
        return out

    def take_closers(self) -> list[Event]:
        out, self._closers = self._closers, []
        return out


RaiseEvent = Callable[[int, dict[int, Any]], object]
SendReceipt = Callable[[str, int, int, int], None]


def settings(cfg: NotifyConfig) -> Settings:
    """The notifier's settings on the gateway: no hold (it is the one that holds nothing back),
    no ACK commands (a post gets receipt 3 from the gateway itself)."""
    return Settings(
        fallback_after_s=cfg.fallback_after_s,
        fallback_hold_s=0.0,
        forward_acks=False,
        send_timeout_s=cfg.send_timeout_s,
        link_ttl_s=cfg.ack_ttl_s,
    )


class Fallback:
    """The gateway's own notifier, its acknowledgement page and SMS replies, and the sounder."""

    def __init__(
        self,
        cfg: NotifyConfig,
        *,
        venue: str,
        gateway_id: str,
        registry: Registry,
        watch: AlarmWatch,
        uplink: UplinkState,
        raise_event: RaiseEvent,
        send_receipt: SendReceipt,
        circle: Circle,
        ledger: Ledger,
        links: Links | None,
        sounder: Sounder | None = None,
        modem: Any = None,
        counters: FallbackCounters | None = None,
        sender: Sender = channels.send,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            watch: the alerts committed and acknowledged (fed by the pipeline and the uplink).
            uplink: whose `down_since_ms` says how long central has been unreachable.
            raise_event: queues NOTIFIED and LOCAL_ACK in the P0 lane (Pipeline.gateway_event).
            send_receipt: receipt 3 to a post acknowledged here (ReceiptRouter.send).
            circle, ledger, links: the venue's care circle (a copy), the notifier's own ledger,
                the acknowledgement links of the LAN page (None: no page, no SMS replies).
            modem: the SMS modem (agent/notify/modem.py Modem) whose replies acknowledge.
        """
        self.cfg = cfg
        self.venue = venue
        self.gateway_id = gateway_id
        self.registry = registry
        self.watch = watch
        self.uplink = uplink
        self.raise_event = raise_event
        self.send_receipt = send_receipt
        self.sounder = sounder
        self.modem = modem
        self.clock = clock
        self.counters = counters if counters is not None else FallbackCounters()
        places = {d.id: d.zone for d in registry if d.zone}
        self.notifier = Notifier(
            {circle.venue: circle},
            ledger,
            settings=settings(cfg),
            links=links,
            sender=sender,
            clock=clock,
            places=places,
            on_taken=self._on_taken,
        )
        self._responsible: dict[str, str] = {}  # alert id -> subject, until handed over
        self._restore()

    # --- start ------------------------------------------------------------------------------

    def _restore(self) -> None:
        """After a restart: alerts the ledger holds that central's broker acknowledged meanwhile
        are handed over; those still pending are taken on again and announced again."""
        pending = {alert_id(*k): k for k in self.watch.pending()}
        for row in self.notifier.ledger.alerts_in(("open", "acked")):
            if not row.alert.escalates or row.alert.gateway != self.gateway_id:
                continue
            key = pending.get(row.id)
            if key is None:
                self._handover(row.id)
                continue
            self.watch.taken(key)
            self._responsible[row.id] = row.alert.subject
            log.warning("fallback_alert_resumed alert=%s type=%s state=%s", row.id, row.alert.name, row.state)
            self._announce(row.id)

    def _announce(self, alert: str) -> None:
        """NOTIFIED again for what the ledger says was taken on (a crash may have lost it)."""
        row = self.notifier.ledger.alert(alert)
        if row is None:
            return
        rounds: dict[tuple[str, int], tuple[list[str], int]] = {}
        for d in self.notifier.ledger.deliveries(alert):
            if d.kind not in ("alert", "followup") or d.state == "cancelled":
                continue
            contacts, at = rounds.setdefault((d.kind, d.round), ([], d.created_ms))
            if d.contact not in contacts:
                contacts.append(d.contact)
            rounds[(d.kind, d.round)] = (contacts, min(at, d.created_ms))
        for (kind, rnd), (contacts, at) in sorted(rounds.items(), key=lambda kv: (kv[0][0] != "alert", kv[0][1])):
            self._on_taken(Taken(row.alert, kind, rnd, tuple(contacts), at))

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.notifier.run(stop))]
        runner = await self._start_page()
        await self._start_modem()
        try:
            while True:
                self.step()
                now_ms = int(self.clock() * 1000)
                due = self.watch.next_due_ms(self.uplink.down_since_ms)
                wait = TICK_S if due is None else min(TICK_S, max(0.0, (due - now_ms) / 1000))
                self.watch.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.watch.changed.wait(), wait)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            if self.sounder is not None:
                await self.sounder.close()
            if self.modem is not None:
                self.modem.on_sms = None
                await asyncio.to_thread(self.modem.close)
            self.notifier.ledger.close()

    def step(self) -> None:
        """Take on what is due, hand over what central has, pass closers on, drive the sounder."""
        now_ms = int(self.clock() * 1000)
        down = self.uplink.down_since_ms
        for ev in self.watch.take_due(now_ms, down):
            self._take_on(ev, now_ms, down)
        for key in self.watch.take_handovers():
            self._handover(alert_id(*key))
        for ev in self.watch.take_closers():
            closer = Alert.from_event(self.venue, self.gateway_id, ev)
            if closer.subject in self._responsible.values():
                self.notifier.alert(closer)
        active = bool(self._responsible) or (down is not None and now_ms - down >= self.watch.after_ms)
        if active != self.counters.active:
            self.counters.active = active
            log.warning("fallback_%s responsible_alerts=%d", "on" if active else "off", len(self._responsible))
        if self.sounder is not None:
            self.sounder.update(self._open_alerts())

    def _take_on(self, ev: Event, now_ms: int, down: int | None) -> None:
        alert = Alert.from_event(self.venue, self.gateway_id, ev)
        known = self.notifier.ledger.alert(alert.id) is not None
        self._responsible[alert.id] = alert.subject
        self.notifier.alert(alert)
        if known:
            self._announce(alert.id)
        self.counters.taken += 1
        log.warning(
            "fallback_alert alert=%s type=%s age_s=%.1f uplink_down_s=%s",
            alert.id,
            alert.name,
            (now_ms - alert.received_ms) / 1000,
            "-" if down is None else f"{(now_ms - down) / 1000:.0f}",
        )
        row = self.notifier.ledger.alert(alert.id)
        if self.sounder is not None and row is not None and row.state == "open":
            # (after a restart, an alert already acknowledged or over does not page anyone again)
            self.sounder.alert(alert, self.notifier.places.get(alert.device) or alert.zone)

    def _handover(self, alert: str) -> None:
        self._responsible.pop(alert, None)
        if self.notifier.handover(alert):
            self.counters.handed_over += 1

    def _open_alerts(self) -> list[str]:
        ledger = self.notifier.ledger
        out = []
        for alert in self._responsible:
            row = ledger.alert(alert)
            if row is not None and row.state in ("open", HANDED_OVER) and row.acked_ms is None:
                out.append(alert)
        return out

    def _on_taken(self, taken: Taken) -> None:
        """The notifier took on a round or a follow-up: NOTIFIED to central (docs/protocol.md §4.4)."""
        a = taken.alert
        data: dict[int, Any] = {
            1: a.device,
            2: a.boot,
            3: a.seq,
            4: list(taken.contacts),
            5: taken.round,
            6: taken.at_ms,
        }
        if taken.kind == "followup":
            data[7] = "followup"
        self.raise_event(EventType.NOTIFIED, data)
        self.counters.notified_events += 1
        log.info(
            "notified_raised alert=%s kind=%s round=%d contacts=%s",
            a.id,
            taken.kind,
            taken.round,
            ",".join(taken.contacts),
        )

    # --- acknowledgements at the gateway --------------------------------------------------------

    def acked(self, alert: str, via: str) -> None:
        """Someone acknowledged through the LAN page or an SMS reply: LOCAL_ACK, receipt 3."""
        ledger = self.notifier.ledger
        row = ledger.alert(alert)
        if row is None or row.acked_ms is None:
            return
        a = row.alert
        told = sorted({d.contact for d in ledger.deliveries(alert, "acked")})
        data: dict[int, Any] = {
            1: a.device,
            2: a.boot,
            3: a.seq,
            4: row.acked_by or "",
            5: via,
            6: row.acked_ms,
            7: told,
        }
        self.raise_event(EventType.LOCAL_ACK, data)
        self.counters.local_acks += 1
        device = self.registry.get(a.device)
        if device is not None and device.kind != WRISTBAND:
            # the post's LED turns white: "help is coming", as central's ACK command would do
            self.send_receipt(a.device, a.boot, a.seq, RECEIPT_ACKNOWLEDGED)
        log.info("local_ack alert=%s by=%s via=%s receipt3=%s", alert, row.acked_by, via, device is not None)
        if self.sounder is not None:
            self.sounder.update(self._open_alerts())

    async def _start_page(self) -> Any:
        if self.cfg.ack_listen is None or self.notifier.links is None:
            return None
        from agent.notify import web  # noqa: PLC0415 - aiohttp loads only with the page on

        def on_ack(result: Any) -> None:
            if result.alert is not None:
                self.acked(result.alert.id, "link")

        try:
            page = web.WebApp(self.notifier, on_ack, requests_per_s=PAGE_REQUESTS_PER_S)
            return await web.start(page, *self.cfg.ack_listen)
        except OSError as exc:
            # the notifier still sends; people acknowledge through central once it is back
            log.error("ack_page_unavailable listen=%s:%d reason=%r", *self.cfg.ack_listen, exc.strerror)
            return None

    async def _start_modem(self) -> None:
        if self.modem is None:
            return
        loop = asyncio.get_running_loop()

        def replied(number: str, text: str) -> None:
            result = self.notifier.ack_reply(number, text)
            if result.status == "acked" and result.alert is not None:
                self.acked(result.alert.id, "sms")

        def heard(number: str, text: str) -> None:  # the modem library's reader thread
            loop.call_soon_threadsafe(replied, number, text)

        self.modem.on_sms = heard
        from agent.notify.modem import ModemError  # noqa: PLC0415 - with the modem only

        try:
            await asyncio.to_thread(self.modem.open)
        except ModemError as exc:  # it is opened again at the first message
            log.error("modem_unavailable reason=%r", str(exc))


def build(
    cfg: NotifyConfig,
    *,
    venue: str,
    gateway_id: str,
    data_dir: Path,
    registry: Registry,
    watch: AlarmWatch,
    uplink: UplinkState,
    raise_event: RaiseEvent,
    send_receipt: SendReceipt,
) -> Fallback:
    """The fallback with its parts from [notify]: the circle copy, the ledger, the link key in
    the data directory, the modem, the sounder."""
    circle = load_circle(cfg.circle, modem=cfg.modem is not None)
    modem = None
    if cfg.modem is not None:
        from agent.notify import modem as sms  # noqa: PLC0415 - the modem library only with a modem

        modem = sms.from_config(cfg.modem)
        sms.configure(modem)
    links = None
    if cfg.ack_listen is not None:
        links = Links(load_or_create_key(data_dir / "notify-ack.key"), cfg.ack_base_url)
    counters = FallbackCounters()
    sounder = None
    if cfg.sounder is not None:
        try:
            relay = open_relay(cfg.sounder)
        except OSError as exc:
            raise ConfigError(f"notify.sounder.gpio: {cfg.sounder.gpio}: {exc.strerror}") from None
        sounder = Sounder(cfg.sounder, relay=relay, counters=counters, venue=circle.name)
    return Fallback(
        cfg,
        venue=venue,
        gateway_id=gateway_id,
        registry=registry,
        watch=watch,
        uplink=uplink,
        raise_event=raise_event,
        send_receipt=send_receipt,
        circle=circle,
        ledger=Ledger(cfg.ledger),
        links=links,
        sounder=sounder,
        modem=modem,
        counters=counters,
    )
