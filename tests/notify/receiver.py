"""A local HTTP receiver for Apprise's webhook channels (json://127.0.0.1:PORT/<path>).

It stands in for a family's phone: every POST is recorded with its arrival time, its path (who
it was for), title, message and the notifier's delivery key. Per path it can fail the next n
requests with HTTP 500 or hold its answer (to land a kill -9 while a request is in flight).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    title: str
    message: str
    key: str | None
    t: float
    alert: str | None = None
    kind: str | None = None


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail: dict[str, int] = {}
        self.hold: dict[str, float] = {}
        self.holding = threading.Event()  # set while a held request waits
        self._cv = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.strip("/")
                try:
                    body: dict[str, Any] = json.loads(raw)
                except ValueError:
                    body = {}
                with owner._cv:
                    failing = owner.fail.get(path, 0)
                    if failing:
                        owner.fail[path] = failing - 1
                    hold = owner.hold.pop(path, 0.0)
                    if not failing:
                        owner.received.append(
                            Received(
                                path,
                                str(body.get("title", "")),
                                str(body.get("message", "")),
                                body.get("ge_delivery"),
                                time.time(),
                                body.get("ge_alert"),
                                body.get("ge_kind"),
                            )
                        )
                        owner._cv.notify_all()
                if hold:
                    owner.holding.set()
                    time.sleep(hold)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def at(self, path: str) -> list[Received]:
        with self._cv:
            return [r for r in self.received if r.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(predicate, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
