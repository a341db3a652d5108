"""After the flash: did each device's first frame reach the gateway? (`flash --gateway URL`)

The gateway's own status page answers (agent/gateway/status/: GET /api/status with the
page's token as a Bearer token; the installer gives the technician a copy of the token file,
`guardian-agent status-token`). A device counts as heard when the page's `last_heard_ms` for
it is at or after the moment the board was restarted into its app, on the gateway's clock
(the page's `gateway.now_ms` gives the offset, so the two machines' clocks need not agree).
Not heard within the time allowed, the likely cause is named from the same page: a device
the gateway does not know (its key not imported), the gateway's local broker down, frames
the gateway rejected while waiting (by reason), or, when nothing arrived at all, the broker
address the device was given or its network. The standard library's HTTP client is enough
for these GETs (as `guardian-agent status` does).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.errors import ProvisionError

POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class Heard:
    device: str
    ok: bool
    after_s: float | None  # from the restart to the gateway's last_heard
    why: str = ""  # the likely cause when not heard


class StatusPage:
    """The gateway's status page JSON, read with its token."""

    def __init__(self, url: str, token_file: Path, ca_file: Path | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ProvisionError(f"--gateway {url!r}: expected the status page's http(s)://HOST:PORT")
        self.url = url.rstrip("/") + "/api/status"
        try:
            self.token = token_file.read_text().strip()
        except OSError as exc:
            raise ProvisionError(
                f"--gateway-token {token_file}: {exc.strerror} (a copy of the gateway's status token file)"
            ) from None
        self.context: ssl.SSLContext | None = None
        if url.startswith("https://"):
            self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if ca_file is not None:
                self.context.check_hostname = False  # the page's own (self-signed) certificate is pinned

    def view(self) -> dict[str, Any]:
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.token}"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as resp:  # noqa: S310 - http(s)
                view: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            hint = ": the token is not the gateway's" if exc.code == 401 else ""
            raise ProvisionError(f"{self.url}: HTTP {exc.code}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ProvisionError(f"{self.url}: the gateway's status page does not answer ({exc})") from None
        return view


def _rejects(view: dict[str, Any]) -> dict[str, int]:
    return {f"{r['source']}:{r['reason']}": int(r["total"]) for r in view.get("rejects", [])}


def _cause(view: dict[str, Any], device: str, before: dict[str, int], broker: str) -> str:
    known = {d["id"] for d in view.get("devices", [])}
    if device not in known:
        return (
            f"the gateway does not know {device}: seal its key to the gateway (guardian-provision export "
            "--format gateway) and import it there (guardian-agent devices import), then restart the agent"
        )
    if not view.get("health", {}).get("local_broker", {}).get("up", True):
        return "the gateway's local broker is down"
    grown = {k: n - before.get(k, 0) for k, n in _rejects(view).items() if n > before.get(k, 0)}
    if grown:
        return (
            "the gateway rejected frames meanwhile (" + ", ".join(f"{k} +{n}" for k, n in sorted(grown.items())) + ")"
        )
    return f"nothing arrived: check the broker address the device was given ({broker}) and its network"


def wait_heard(
    page: StatusPage,
    restarts: dict[str, float],
    broker: str,
    timeout: float,
    clock: Callable[[], float] = time.time,
) -> list[Heard]:
    """Each device's first frame after `restarts[device]` (host unix s) on the page, or why not."""
    first = page.view()
    before = _rejects(first)
    offset = first["gateway"]["now_ms"] / 1000 - clock()  # gateway clock - ours
    waiting = dict(restarts)
    heard: list[Heard] = []
    deadline = time.monotonic() + timeout
    view = first
    while True:
        rows = {d["id"]: d for d in view.get("devices", [])}
        for dev, at in list(waiting.items()):
            last = rows.get(dev, {}).get("last_heard_ms")
            if last is not None and last / 1000 >= at + offset - 1.0:
                heard.append(Heard(dev, True, max(0.0, last / 1000 - offset - at)))
                del waiting[dev]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
        view = page.view()
    heard += [Heard(dev, False, None, _cause(view, dev, before, broker)) for dev in waiting]
    return sorted(heard, key=lambda h: h.device)
