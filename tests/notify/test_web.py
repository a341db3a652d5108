"""The acknowledgement endpoint over real HTTP: GET shows, POST acknowledges once; /metrics."""

from __future__ import annotations

import aiohttp

from agent.notify import web
from agent.notify.notifier import Notifier
from tests.notify.conftest import deliver_due, make_alert
from tests.notify.receiver import Receiver


async def test_a_link_is_shown_then_acknowledged_once(notifier: Notifier, rx: Receiver) -> None:
    acked = []
    runner = await web.start(web.WebApp(notifier, acked.append), "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        notifier.alert(make_alert(3))
        await deliver_due(notifier)
        token = rx.at("li-wei")[0].message.rsplit("/a/", 1)[1].strip()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/a/{token}") as r:  # a link preview: changes nothing
                page = await r.text()
                assert r.status == 200 and "我来处理" in page and "Room 4" in page
            assert acked == []
            async with http.post(f"{base}/a/{token}") as r:
                assert r.status == 200 and "谢谢" in await r.text()
            assert len(acked) == 1 and acked[0].by == "Li Wei"
            async with http.post(f"{base}/a/{token}") as r:
                assert r.status == 409 and "已由Li Wei于" in await r.text()
            async with http.post(f"{base}/a/{'A' * 32}") as r:
                assert r.status == 404
            async with http.get(f"{base}/a/<script>") as r:
                assert r.status == 404 and "<script>" not in await r.text()
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
                assert 'guardian_notify_events_total{what="acks"} 1' in text
                assert 'guardian_notify_ledger{state="alert_sent"} 1' in text
    finally:
        await runner.cleanup()


async def test_a_page_with_a_budget_answers_a_flood_with_503_before_any_work(notifier: Notifier) -> None:
    # the gateway's page shares the agent's event loop with the alarm path
    runner = await web.start(web.WebApp(notifier, requests_per_s=5.0), "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(40):
                async with http.post(f"{base}/a/{'A' * 32}") as r:
                    statuses.append(r.status)
        assert statuses.count(404) <= 12, "a burst of twice the budget, then about 5 a second"
        assert statuses.count(503) >= 25 and set(statuses) == {404, 503}
        assert notifier.counts["ack_page_busy"] == statuses.count(503)
        assert notifier.counts["links_rejected_malformed"] + notifier.counts["links_rejected_bad_mac"] <= 12
    finally:
        await runner.cleanup()


def test_the_request_budget_refills_at_its_rate() -> None:
    from agent.shared.budget import RequestBudget

    now = [0.0]
    budget = RequestBudget(2.0, burst=3.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(3)] == [True, True, False], "starts with one second's worth"
    now[0] += 1.0
    assert [budget.take() for _ in range(3)] == [True, True, False], "two a second"
    now[0] += 10.0
    assert [budget.take() for _ in range(4)] == [True, True, True, False], "never more than the burst"
    now[0] += 0.5
    assert budget.take() and not budget.take()
