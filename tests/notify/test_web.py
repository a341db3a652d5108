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
