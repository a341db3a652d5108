"""The notifier's small HTTP endpoint (aiohttp): acknowledgement pages and /metrics.

    GET  /a/<token>   what the alert is, and a button: "I'm on it". GET changes nothing, because
                      chat apps and mail scanners open links to preview them.
    POST /a/<token>   the acknowledgement (agent/notify/links.py: signed, expiring, single use)
    GET  /metrics     Prometheus text: the notifier's counters and the ledger's states
    GET  /healthz     200 while the notifier runs

Pages are plain HTML with no external resources; every value is escaped.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.notify import messages
from agent.notify.links import LinkError
from agent.notify.notifier import AckResult, Notifier
from agent.shared.budget import RequestBudget

log = logging.getLogger("agent.notify.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PAGE = """<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:2em auto;padding:0 1em;line-height:1.5}}
button{{font-size:1.4em;padding:.6em 1.2em}}</style></head><body><h1>{title}</h1>{body}</body></html>"""

TEXT = {
    "en": {
        "button": "I'm on it",
        "done": "Thank you. Your acknowledgement is recorded; the others who were told will hear that you are on it.",
        "already": "Already acknowledged by {by} at {time}.",
        "invalid": "This link is not valid.",
        "expired": "This link has expired.",
        "closed": "This alert is closed ({state}).",
    },
    "zh": {
        "button": "我来处理",
        "done": "谢谢。您的确认已记录，其他收到通知的人会知道由您处理。",
        "already": "已由{by}于{time}确认。",
        "invalid": "此链接无效。",
        "expired": "此链接已过期。",
        "closed": "此警报已结束（{state}）。",
    },
}


def _page(lang: str, title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(lang=lang, title=html.escape(title), body=body),
        content_type="text/html",
        status=status,
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


class WebApp:
    def __init__(
        self,
        notifier: Notifier,
        on_ack: Callable[[AckResult], None] | None = None,
        requests_per_s: float | None = None,
    ) -> None:
        """`requests_per_s`: a budget for a page that shares its event loop with more urgent
        work (the gateway's alarm path): requests beyond it are answered 503 before any work."""
        self.notifier = notifier
        self.on_ack = on_ack
        self._budget = RequestBudget(requests_per_s) if requests_per_s is not None else None
        middlewares = [self._guard] if self._budget is not None else []
        self.app = web.Application(client_max_size=4096, middlewares=middlewares)
        self.app.add_routes(
            [
                web.get("/a/{token}", self.show),
                web.post("/a/{token}", self.acknowledge),
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.health),
            ]
        )

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._budget is not None and not self._budget.take():
            self.notifier.counts["ack_page_busy"] += 1
            return web.Response(status=503, text="busy\n", headers={"Retry-After": "1"})
        return await handler(request)

    def _lookup(self, token: str) -> tuple[str, str, str] | str:
        """(language, title, summary) for a valid token, else the reason it is not."""
        n = self.notifier
        if n.links is None:
            return "invalid"
        try:
            token_id = n.links.check(token, n.clock())
        except LinkError as exc:
            return "expired" if exc.reason == "expired" else "invalid"
        tok = n.ledger.token(token_id)
        row = None if tok is None else n.ledger.alert(tok["alert_id"])
        if tok is None or row is None:
            return "invalid"
        circle = n.circles.get(row.alert.venue)
        contact = None if circle is None else circle.contacts.get(tok["contact"])
        if circle is None or contact is None:
            return "invalid"
        msg = messages.alert_message(row.alert, circle, contact.language, int(n.clock() * 1000), places=n.places)
        return contact.language, msg.title, msg.body

    async def show(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        found = self._lookup(token)
        if isinstance(found, str):
            return _page("en", TEXT["en"][found], f"<p>{TEXT['zh'][found]}</p>", 404 if found == "invalid" else 410)
        lang, title, summary = found
        body = "".join(f"<p>{html.escape(line)}</p>" for line in summary.splitlines()[:3])
        body += f'<form method="post"><button type="submit">{html.escape(TEXT[lang]["button"])}</button></form>'
        return _page(lang, title, body)

    async def acknowledge(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        found = self._lookup(token)
        lang = found[0] if isinstance(found, tuple) else "en"
        result = self.notifier.ack_link(token)
        t = TEXT[lang]
        if result.status == "acked":
            if self.on_ack is not None:
                self.on_ack(result)
            return _page(lang, t["button"], f"<p>{html.escape(t['done'])}</p>")
        if result.status in ("used", "already") and result.alert is not None:
            circle = self.notifier.circles.get(result.alert.venue)
            when = "?" if result.at_ms is None or circle is None else messages.local_time(result.at_ms, circle, lang)
            if result.at_ms is None:
                text = t["closed"].format(state=result.by or "")
            else:
                text = t["already"].format(by=result.by or "?", time=when)
            return _page(lang, t["button"], f"<p>{html.escape(text)}</p>", 409)
        reason = "expired" if result.status == "expired" else "invalid"
        return _page("en", TEXT["en"][reason], f"<p>{TEXT['zh'][reason]}</p>", 404 if reason == "invalid" else 410)

    async def metrics(self, request: web.Request) -> web.Response:
        lines = []
        for key, value in sorted(self.notifier.counts.items()):
            lines.append(f'guardian_notify_events_total{{what="{key}"}} {value}')
        for key, value in sorted(self.notifier.ledger.counts().items()):
            lines.append(f'guardian_notify_ledger{{state="{key}"}} {value}')
        text = "# TYPE guardian_notify_events_total counter\n# TYPE guardian_notify_ledger gauge\n"
        return web.Response(text=text + "\n".join(lines) + "\n", content_type="text/plain")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


async def start(app: WebApp, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("ack_endpoint_up listen=%s:%d", host, port)
    return runner
