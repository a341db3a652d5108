"""The notifier core on a controlled clock, with real Apprise sends to a local receiver."""

from __future__ import annotations

from agent.notify.notifier import Notifier, Taken
from tests.notify.conftest import Clock, deliver_due, make_alert
from tests.notify.receiver import Receiver

SOS, EXIT, BACK_INSIDE, BATTERY_LOW = 3, 5, 68, 67


async def test_sos_goes_to_the_first_round_then_escalates_then_staff(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    alert = make_alert(SOS)
    queued = notifier.alert(alert)
    assert {d.contact for d in queued} == {"li-wei"}
    assert await deliver_due(notifier) == 1
    (msg,) = rx.at("li-wei")
    assert "Room 4" in msg.title and "紧急求助" in msg.title
    assert "客厅" not in msg.message and "Lounge" in msg.message  # zone name as the gateway gave it
    assert "11月15日 06:13" in msg.message  # local time in Asia/Shanghai
    assert "https://notify.example.org/a/" in msg.message
    assert msg.key is not None and msg.alert == alert.id and msg.kind == "alert"

    clock.advance(59)
    notifier.tick()
    assert await deliver_due(notifier) == 0  # not yet
    clock.advance(1)
    notifier.tick()
    assert await deliver_due(notifier) == 3  # anna (two channels) and tom
    assert len(rx.at("anna")) == len(rx.at("anna-mail")) == len(rx.at("tom")) == 1
    assert rx.at("anna")[0].title == "SOS: Room 4 (Rosewood House)"
    clock.advance(60)
    notifier.tick()
    assert await deliver_due(notifier) == 1
    assert len(rx.at("desk")) == 1
    clock.advance(600)
    assert notifier.tick() is None  # nothing left to do
    assert notifier.counts["escalations_exhausted"] == 1
    # nobody was told twice
    assert len(rx.received) == 5


async def test_a_repeated_alert_id_notifies_nobody_again(notifier: Notifier, rx: Receiver) -> None:
    taken: list[Taken] = []
    notifier.on_taken = taken.append
    alert = make_alert(SOS)
    notifier.alert(alert)
    await deliver_due(notifier)
    assert [(t.alert.id, t.kind, t.round, t.contacts) for t in taken] == [(alert.id, "alert", 0, ("li-wei",))]
    assert notifier.alert(alert) == []
    assert len(taken) == 1
    assert await deliver_due(notifier) == 0
    assert len(rx.received) == 1
    assert notifier.counts["alerts_repeated"] == 1


async def test_ack_link_stops_escalation_and_tells_the_others(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    alert = make_alert(SOS)
    notifier.alert(alert)
    await deliver_due(notifier)
    clock.advance(60)
    notifier.tick()
    await deliver_due(notifier)
    link = rx.at("tom")[0].message.split("I'm on it: ")[1].strip()
    token = link.rsplit("/", 1)[1]
    result = notifier.ack_link(token)
    assert result.status == "acked" and result.by == "Tom"
    assert notifier.ack_link(token).status == "used"  # single use
    await deliver_due(notifier)
    # li-wei and anna (both channels) hear that Tom is on it; tom does not
    assert "Tom" in rx.at("li-wei")[-1].message and len(rx.at("li-wei")) == 2
    assert len(rx.at("anna")) == 2 and len(rx.at("tom")) == 1
    clock.advance(600)
    notifier.tick()
    assert await deliver_due(notifier) == 0
    assert rx.at("desk") == []  # staff were never needed
    assert notifier.ledger.command_state(alert.id) == "pending"  # an ACK is owed to the gateway


async def test_forged_and_expired_links_are_refused(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    notifier.alert(make_alert(SOS))
    await deliver_due(notifier)
    token = rx.at("li-wei")[0].message.rsplit("/a/", 1)[1].strip()
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert notifier.ack_link(forged).status == "invalid"
    assert notifier.ack_link("short").status == "invalid"
    clock.advance(86400 + 1)
    assert notifier.ack_link(token).status == "expired"
    assert notifier.counts["links_rejected_bad_mac"] == 1


async def test_back_inside_closes_the_loop_for_those_told(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    exit_alert = make_alert(
        EXIT, data={"1": "Room 4", "2": "Front door", "3": {"from_zone": "Lounge", "reason": "exit zone"}}
    )
    notifier.alert(exit_alert)
    await deliver_due(notifier)
    assert "最后所在区域：Lounge" in rx.at("li-wei")[0].message
    clock.advance(240)
    back = make_alert(
        BACK_INSIDE, at=clock(), data={"1": "Room 4", "2": "Lounge", "3": {"resolves": "EXIT", "away_s": 240}}
    )
    assert [(d.contact, d.kind) for d in notifier.alert(back)] == [("li-wei", "followup")]
    await deliver_due(notifier)
    follow = rx.at("li-wei")[-1]
    assert "已解除" in follow.title and "离开4分钟" in follow.message
    clock.advance(120)
    notifier.tick()
    assert await deliver_due(notifier) == 0  # resolved: no escalation
    assert rx.at("anna") == [] and rx.at("desk") == []


async def test_p1_goes_only_to_those_who_asked(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    notifier.alert(make_alert(BATTERY_LOW, data={"1": "Room 4", "3": {"battery_pct": 12}}))
    await deliver_due(notifier)
    assert [r.path for r in rx.received] == ["tom"]
    assert "12 %" in rx.received[0].message
    clock.advance(3600)
    assert notifier.tick() is None


async def test_a_failing_channel_is_retried_with_backoff_then_reported(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    rx.fail["li-wei"] = 10
    alert = make_alert(SOS)
    notifier.alert(alert)
    await deliver_due(notifier)
    (d,) = notifier.ledger.deliveries(alert.id, "alert")
    assert d.state == "failed" and d.attempts == 1
    wait = notifier.tick()
    assert wait is not None and 0.7 <= wait <= 1.0  # retry_base_s 1.0 with jitter
    clock.advance(wait + 0.002)
    await deliver_due(notifier)
    wait2 = notifier.tick()
    assert wait2 is not None and 1.5 <= wait2 <= 2.0  # doubled
    clock.advance(wait2 + 0.002)
    await deliver_due(notifier)
    (d,) = notifier.ledger.deliveries(alert.id, "alert")
    assert d.state == "gave_up" and d.attempts == 3
    assert [a["result"] for a in notifier.ledger.attempts(d.id)] == ["failed"] * 3
    assert notifier.counts["channels_failing"] == 1
    # staff hear that the channel fails; with nobody of round 0 reachable the next round starts now
    notifier.tick()
    await deliver_due(notifier)
    assert any("keep failing" in r.message for r in rx.at("desk"))
    assert len(rx.at("anna")) == 1 and len(rx.at("tom")) == 1


async def test_in_doubt_deliveries_after_a_crash_are_decided_per_channel(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    alert = make_alert(SOS)
    notifier.alert(alert)
    (d,) = notifier.ledger.due_deliveries(notifier._now_ms(), 10, set())
    # what a kill -9 between `sending` and the result leaves in the ledger
    with notifier.ledger.tx() as db:
        notifier.ledger.set_delivery(db, d.id, notifier._now_ms(), state="sending", attempts=1)
        notifier.ledger.add_attempt(db, d.id, 1, notifier._now_ms())
    notifier.recover()
    (again,) = notifier.ledger.deliveries(alert.id, "alert")
    assert again.state == "pending" and again.repeat  # a webhook: resent with the same key
    await deliver_due(notifier)
    (msg,) = rx.at("li-wei")
    assert msg.key == d.key and msg.title.startswith("（重发）")
    assert [a["result"] for a in notifier.ledger.attempts(d.id)] == ["in_doubt", "sent"]


async def test_a_follow_up_in_doubt_on_a_person_channel_is_not_repeated(notifier: Notifier, clock: Clock) -> None:
    from agent.notify import channels as ch

    exit_alert = make_alert(EXIT)
    notifier.alert(exit_alert)
    await deliver_due(notifier)
    notifier.alert(make_alert(BACK_INSIDE, data={"1": "Room 4", "2": "Lounge", "3": {"resolves": "EXIT"}}))
    (f,) = notifier.ledger.deliveries(exit_alert.id, "followup")
    with notifier.ledger.tx() as db:
        notifier.ledger.set_delivery(db, f.id, notifier._now_ms(), state="sending", attempts=1)
    # the same contact on a channel that is not a webhook (no delivery key to dedupe on)
    contact, channel = notifier._lookup(f.venue, f.contact, f.channel)
    assert channel is not None
    person = ch.Channel(channel.url, channel.service, channel.label, channel.fingerprint, webhook=False)
    circle = notifier.circles["rosewood"]
    assert contact is not None
    circle.contacts[contact.id] = type(contact)(
        contact.id, contact.name, contact.language, (person,), contact.alerts, contact.staff
    )
    notifier.recover()
    (f,) = notifier.ledger.deliveries(exit_alert.id, "followup")
    assert f.state == "unknown"
    assert notifier.counts["in_doubt_dropped"] == 1


async def test_the_gateway_fallback_already_told_them(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    # an SOS that waited 30 s at the gateway (central unreachable) is held for the NOTIFIED event
    alert = make_alert(SOS, at=clock() - 30)
    assert notifier.alert(alert) == []
    assert await deliver_due(notifier) == 0
    notified = make_alert(9, device="GW-1", data={"1": alert.device, "2": alert.boot, "3": alert.seq, "4": ["li-wei"]})
    notifier.alert(notified)
    clock.advance(5)
    notifier.tick()
    assert await deliver_due(notifier) == 0  # li-wei heard it from the gateway
    assert rx.received == []
    clock.advance(60)
    notifier.tick()
    assert await deliver_due(notifier) == 3  # escalation continues from central
    assert notifier.counts["gateway_notified"] == 1


async def test_an_old_alert_without_notified_is_sent_after_the_hold(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    alert = make_alert(SOS, at=clock() - 90)
    notifier.alert(alert)
    wait = notifier.tick()
    assert wait == 5.0
    clock.advance(5)
    notifier.tick()
    assert await deliver_due(notifier) == 1
    assert "延迟送达：2分钟前发生" in rx.at("li-wei")[0].message  # the family knows it is not new


async def test_venue_alarm_and_device_offline_go_to_staff(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    notifier.places["AP-0001"] = "Lobby"
    post = make_alert(1, device="AP-0001", data={})
    notifier.alert(post)
    offline = make_alert(74, device="GW-1", data={"1": "AP-0001", "2": 300_000, "3": "heartbeat"})
    notifier.alert(offline)
    await deliver_due(notifier)
    texts = [r.message for r in rx.at("desk")]
    assert any("Alarm post AP-0001 (Lobby) was pressed" in t for t in texts)
    assert any("AP-0001 (Lobby) stopped reporting 5 min ago" in t for t in texts)
    online = make_alert(75, device="GW-1", data={"1": "AP-0001", "2": 360_000})
    notifier.alert(online)
    await deliver_due(notifier)
    assert "AP-0001 is reporting again" in rx.at("desk")[-1].message
    assert rx.at("li-wei") == []
    # the post's alarm escalates to nobody else but is acknowledged like a dispatcher would
    assert notifier.ack(post.id, "desk", "operator").status == "acked"
    assert notifier.ledger.command_state(post.id) == "pending"


async def test_unknown_venue_and_stale_alerts_are_recorded_not_sent(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    notifier.alert(make_alert(SOS, venue="elsewhere"))
    notifier.alert(make_alert(SOS, at=clock() - 2 * 86400))
    assert await deliver_due(notifier) == 0
    assert notifier.counts["alerts_no_circle"] == 1 and notifier.counts["alerts_stale"] == 1
    assert rx.received == []


async def test_the_ledger_forgets_finished_alerts_after_keep_days(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    done = make_alert(SOS)
    notifier.alert(done)
    await deliver_due(notifier)
    assert notifier.ack(done.id, "li-wei", "operator").status == "acked"
    clock.advance(40 * 86400)
    fresh = make_alert(SOS, at=clock())
    notifier.alert(fresh)
    assert notifier.ledger.prune(notifier._now_ms() - 30 * 86400 * 1000) == 1
    assert notifier.ledger.alert(done.id) is None and notifier.ledger.deliveries(done.id) == []
    assert notifier.ledger.alert(fresh.id) is not None  # open, escalating: kept
    # the forgotten alert, replayed, is far older than max_alert_age_s: recorded as stale, not sent
    notifier.alert(done)
    assert await deliver_due(notifier) == 1  # only the fresh one
    assert notifier.counts["alerts_stale"] == 1


async def test_central_continues_the_escalation_from_the_round_the_gateway_reached(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    # the gateway told Li Wei (round 0) 70 s ago and Anna and Tom (round 1) 10 s ago itself
    alert = make_alert(SOS, at=clock() - 75)
    notifier.alert(alert)
    ids = {"1": alert.device, "2": alert.boot, "3": alert.seq}
    t0, t1 = int((clock() - 70) * 1000), int((clock() - 10) * 1000)
    notifier.alert(make_alert(9, device="GW-1", data={**ids, "4": ["li-wei"], "5": 0, "6": t0}))
    notifier.alert(make_alert(9, device="GW-1", data={**ids, "4": ["anna", "tom"], "5": 1, "6": t1}))
    row = notifier.ledger.alert(alert.id)
    assert row is not None and row.round == 1 and row.next_at_ms == t1 + 60_000
    notifier.tick()
    assert await deliver_due(notifier) == 0 and rx.received == [], "nobody is told twice"
    clock.advance(49)
    notifier.tick()
    assert await deliver_due(notifier) == 0
    clock.advance(1)
    notifier.tick()
    assert await deliver_due(notifier) == 1 and len(rx.at("desk")) == 1, "staff: 60 s after the gateway's round 1"


async def test_a_round_the_gateways_copy_left_someone_out_of_is_completed(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    alert = make_alert(SOS, at=clock() - 40)
    notifier.alert(alert)
    ids = {"1": alert.device, "2": alert.boot, "3": alert.seq}
    notifier.alert(make_alert(9, device="GW-1", data={**ids, "4": ["anna"], "5": 1, "6": int(clock() * 1000)}))
    assert await deliver_due(notifier) == 2  # li-wei (round 0) and tom (round 1): not taken on by the gateway
    assert len(rx.at("li-wei")) == 1 and len(rx.at("tom")) == 1 and rx.at("anna") == []


async def test_an_acknowledgement_at_the_gateway_is_recorded_without_a_command(
    notifier: Notifier, rx: Receiver, clock: Clock
) -> None:
    alert = make_alert(SOS)
    notifier.alert(alert)
    await deliver_due(notifier)  # central told li-wei
    clock.advance(60)
    notifier.tick()
    ids = {"1": alert.device, "2": alert.boot, "3": alert.seq}
    # Tom acknowledged on the gateway's LAN page; the gateway told Anna of it itself
    acked_at = int((clock() - 1) * 1000)
    ack = make_alert(10, device="GW-1", data={**ids, "4": "tom", "5": "link", "6": acked_at, "7": ["anna"]})
    notifier.alert(ack)
    notifier.alert(ack)  # a resent batch changes nothing
    row = notifier.ledger.alert(alert.id)
    assert row is not None and row.state == "acked" and row.acked_by == "tom" and row.acked_ms == acked_at
    assert notifier.ledger.command_state(alert.id) is None, "the post had receipt 3 from the gateway"
    await deliver_due(notifier)
    assert [r.kind for r in rx.at("li-wei")] == ["alert", "acked"], "central told li-wei of it"
    assert rx.at("anna") == [] and rx.at("tom") == [], "round 1 was cancelled; Anna heard it from the gateway"
    assert notifier.counts["gateway_acks"] == 1


async def test_a_follow_up_the_gateway_sent_is_not_sent_again(notifier: Notifier, rx: Receiver, clock: Clock) -> None:
    exit_alert = make_alert(EXIT, at=clock() - 40, data={"1": "Room 4", "2": "Front door", "3": {}})
    notifier.alert(exit_alert)
    ids = {"1": exit_alert.device, "2": exit_alert.boot, "3": exit_alert.seq}
    notifier.alert(make_alert(9, device="GW-1", data={**ids, "4": ["li-wei"], "5": 0}))
    notifier.alert(make_alert(9, device="GW-1", data={**ids, "4": ["li-wei"], "7": "followup"}))
    back = make_alert(BACK_INSIDE, data={"1": "Room 4", "2": "Lounge", "3": {"resolves": "EXIT"}})
    notifier.alert(back)
    await deliver_due(notifier)
    assert rx.received == []
    row = notifier.ledger.alert(exit_alert.id)
    assert row is not None and row.state == "resolved"


async def test_an_alert_that_waited_at_the_gateway_is_held_for_its_notified(notifier: Notifier, clock: Clock) -> None:
    # the gateway's uplink was down when it was raised (it waited 1.5 s to be sealed): held
    waited = make_alert(SOS, at=clock() - 2)
    waited = type(waited)(**{**waited.to_json(), "waited_ms": 1500})
    assert notifier.alert(waited) == []
    # half of fallback_after_s late (clock skew tolerated): held
    assert notifier.alert(make_alert(SOS, at=clock() - 10)) == []
    # a few seconds late, sealed at once: no hold
    assert len(notifier.alert(make_alert(SOS, at=clock() - 5))) == 1
