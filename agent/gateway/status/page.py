"""The gateway's own status page: aiohttp in the agent's event loop, read-only, behind a token.

    GET  /              the page (static/index.html), or the login form without a session
    POST /login         the token (form field `token`) -> a session cookie
    POST /logout
    GET  /api/status    the view as JSON (agent/gateway/status/view.py); cookie or Bearer token
    GET  /api/live      the same view as server-sent events, one `data:` line per refresh
    GET  /static/...    the page's CSS and script (no data in them, so no login needed)

Keeping it off the alarm path: the view is built from the parts' snapshots at most once per
REFRESH_S however many clients there are (live clients share one build, pollers get the
cached one), the number of live clients is bounded (`[status_page] max_live`, more get 503),
each live client is sent only the newest view (a slow phone skips refreshes instead of
queueing them), and requests beyond a page-wide budget are answered 503 before any work.
There are no write actions: the page only reads. No request is logged (no access log), so the
token and session ids never reach the journal; failed logins are logged throttled, with the
peer address only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from agent.gateway.config import StatusPageConfig
from agent.gateway.status import view
from agent.gateway.status.auth import SESSION_S, Gate
from agent.shared.budget import RequestBudget
from agent.shared.log import Throttle

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
REFRESH_S = 1.0
KEEPALIVE_S = 15.0
WRITE_TIMEOUT_S = 10.0
REQUESTS_PER_S = 50.0  # the page-wide request budget (a phone polling or live needs ~1/s)
COOKIE = "ge_session"
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
_HEADERS = {
    # nothing from anywhere but the gateway itself: no CDN, no inline script
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusPage:
    """The page as a part of the gateway: built with the snapshot readers it shows."""

    def __init__(
        self,
        cfg: StatusPageConfig,
        *,
        gateway: str,
        venue: str,
        readers: view.Readers,
        data_dir: Path,
        buffer_path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            readers: the parts' snapshot functions (Stats.snapshot, RecentEvents.snapshot, ...).
            data_dir, buffer_path: where the disk figures are read.
        """
        self.cfg = cfg
        self.gateway = gateway
        self.venue = venue
        self.readers = readers
        self.data_dir = data_dir
        self.buffer_path = buffer_path
        self.clock = clock
        self.gate = Gate(cfg.token_sha256)
        self.history = view.RejectHistory()
        self.started = clock()
        self.live = 0  # live clients now
        self.views = 0  # views built (tests and the bench read it)
        self._cached: tuple[float, bytes] | None = None
        self._version = 0
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._budget = RequestBudget(REQUESTS_PER_S)
        self._throttle = Throttle(60.0)
        self.app = web.Application(client_max_size=4096, middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/", self.index),
                web.post("/login", self.login),
                web.post("/logout", self.logout),
                web.get("/api/status", self.status),
                web.get("/api/live", self.live_events),
                web.get("/static/{name}", self.static),
            ]
        )

    # --- the view --------------------------------------------------------------------------

    def current(self) -> bytes:
        """The view as JSON bytes, built again when the cached one is older than REFRESH_S."""
        now = self.clock()
        cached = self._cached
        if cached is not None and now - cached[0] < REFRESH_S:
            return cached[1]
        disk_state = view.disk(self.data_dir, self.buffer_path)
        body = view.build(
            self.readers,
            gateway=self.gateway,
            venue=self.venue,
            disk_state=disk_state,
            history=self.history,
            started=self.started,
            now=now,
        )
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        self._cached = (now, data)
        self.views += 1
        return data

    async def _refresh(self) -> None:
        # while live clients are connected: one new view per REFRESH_S, shared by all of them
        while True:
            await asyncio.sleep(REFRESH_S)
            if self.live:
                self.current()
                async with self._changed:
                    self._version += 1
                    self._changed.notify_all()

    # --- serving ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        host, port = self.cfg.listen
        context = self._tls()
        site = web.TCPSite(runner, host, port, ssl_context=context, backlog=16)
        refresh = asyncio.create_task(self._refresh())
        try:
            await site.start()
            log.info("status_page_listening host=%s port=%d tls=%s", host, port, context is not None)
            await asyncio.Event().wait()
        finally:
            self._stopping.set()
            async with self._changed:
                self._changed.notify_all()
            refresh.cancel()
            await runner.cleanup()

    def _tls(self) -> ssl.SSLContext | None:
        if self.cfg.tls_cert is None or self.cfg.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        return ctx

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._budget.take():
            return web.Response(status=503, text="busy\n", headers={"Retry-After": "1", **_HEADERS})
        response = await handler(request)
        if not response.prepared:
            response.headers.update(_HEADERS)
        return response

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.gate.token_ok(auth[7:])
        return self.gate.session_ok(request.cookies.get(COOKIE))

    async def index(self, request: web.Request) -> web.StreamResponse:
        name = "index.html" if self._authorised(request) else "login.html"
        return web.Response(body=(STATIC / name).read_bytes(), content_type="text/html", charset="utf-8")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        kind = _STATIC_TYPES.get(path.suffix)
        if kind is None or "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=kind, charset="utf-8")

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.gate.login_allowed():
            return web.Response(
                status=429, text="too many failed logins; wait a minute\n", headers={"Retry-After": "60"}
            )
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not self.gate.token_ok(token):
            self.gate.failed()
            suppressed = self._throttle.allow("login")
            if suppressed is not None:
                log.warning("status_login_failed peer=%s suppressed_since_last=%d", request.remote, suppressed)
            raise web.HTTPSeeOther("/?failed=1")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            self.gate.new_session(),
            max_age=SESSION_S,
            httponly=True,
            samesite="Strict",
            secure=self.cfg.tls_cert is not None,
            path="/",
        )
        log.info("status_login peer=%s", request.remote)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.gate.end_session(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/")
        response.del_cookie(COOKIE, path="/")
        return response

    async def status(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.Response(status=401, text="log in first\n", headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=self.current(), content_type="application/json", charset="utf-8")

    async def live_events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.Response(status=401, text="log in first\n")
        if self.live >= self.cfg.max_live:
            return web.Response(status=503, text="too many live views; the page polls instead\n")
        sid = request.cookies.get(COOKIE)
        response = web.StreamResponse(headers={**_HEADERS, "Content-Type": "text/event-stream"})
        self.live += 1
        try:
            await response.prepare(request)
            await self._stream(response, sid, request)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading
        finally:
            self.live -= 1
        return response

    async def _stream(self, response: web.StreamResponse, sid: str | None, request: web.Request) -> None:
        sent = -1
        bearer = request.headers.get("Authorization", "").startswith("Bearer ")
        while not self._stopping.is_set():
            if sent != self._version:
                sent = self._version
                payload = b"data: " + self.current() + b"\n\n"
            else:
                payload = b": keepalive\n\n"
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.write(payload)
            if not bearer and not self.gate.session_ok(sid):
                return  # logged out or expired: the page asks for the token again
            await self._wait_change(sent)

    async def _wait_change(self, sent: int) -> None:
        """Until a newer view than `sent` exists, the page stops, or KEEPALIVE_S passed."""
        async with self._changed:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    await self._changed.wait_for(lambda: self._version != sent or self._stopping.is_set())
            except TimeoutError:
                pass
