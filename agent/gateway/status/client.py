"""`guardian-agent status`: the running agent's view, read from its own status page.

It asks the page's JSON endpoint (/api/status) at the address in the agent's config, with the
token from the root-only token file, so the terminal shows exactly what the page shows and the
agent has one reader of its state, not two. (The Prometheus metrics carry the counters but not
the devices or the alarms with their receipts.) The standard library's HTTP client is enough
for one GET.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent.gateway.config import TOKEN_FILE, AgentConfig
from agent.gateway.status.auth import read_token_file
from agent.shared.errors import AgentError

TIMEOUT_S = 5.0


def fetch_status(cfg: AgentConfig, token_file: Path | None = None) -> dict[str, Any]:
    """The view from the running agent's page; AgentError says what is wrong and what to do."""
    page = cfg.status_page
    if page is None:
        raise AgentError(
            f"{cfg.path}: the status page is off; add a [status_page] table (docs/configuration.md) "
            "and restart the agent"
        )
    token_file = token_file or cfg.path.resolve().parent / TOKEN_FILE
    try:
        token = read_token_file(token_file)
    except PermissionError:
        raise AgentError(f"{token_file}: permission denied (the token file is root's: run with sudo)") from None
    except OSError as exc:
        raise AgentError(
            f"{token_file}: {exc.strerror}; make one with: guardian-agent status-token --config {cfg.path}"
        ) from None
    host, port = page.listen
    context = None
    if page.tls_cert is not None:
        # the page's own certificate is the one to trust (it is usually self-signed)
        context = ssl.create_default_context(cafile=str(page.tls_cert))
        context.check_hostname = False
    url = f"{'https' if context else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as resp:  # noqa: S310 - http(s) only
            view: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise AgentError(
                f"{url}: the token in {token_file} is not the one the agent has "
                f"([status_page] token_sha256 in {cfg.path}); restart the agent after changing it"
            ) from None
        raise AgentError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AgentError(
            f"{url}: no answer ({reason}); is the agent running (systemctl status guardian-agent)?"
        ) from None
    except json.JSONDecodeError as exc:
        raise AgentError(f"{url}: not the status page's JSON: {exc}") from None
    return view
