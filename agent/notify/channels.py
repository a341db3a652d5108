"""Channels: one Apprise URL each (DingTalk, WeCom, Feishu/Lark, Bark, ntfy, e-mail, SMS, webhooks).

Every service is Apprise's; this module only validates URLs at load, names a channel without
its secrets, and sends one message on one channel. A URL is a secret (tokens, passwords, ntfy
topics, phone numbers), so it is never logged, printed or put in an exception: a channel is
shown as its service, the host part with Apprise's privacy masking, and a fingerprint.

Webhook channels (json://, form://, xml:// and their https forms) get a `ge_delivery` field in
their payload, the same for every attempt of one delivery, so a receiver can drop a repeat
sent after a crash (docs/notifications.md, "Exactly once?"), and the alert's id and the kind of
message, for a home's own systems.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import apprise

log = logging.getLogger("agent.notify.channels")

WEBHOOK_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
MODEM_SCHEME = "gsm"
# Apprise logs through its own logger (secure logging on: no passwords or tokens in it); it is
# noisy at INFO, so WARNING and up only. Its first warning in the sending thread is the reason a
# send failed (plugin.notify() only returns False).
logging.getLogger("apprise").setLevel(logging.WARNING)


class _LastWarning(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        # the first warning is the specific one; Apprise adds a generic "Failed to send" after it
        if getattr(self.local, "message", None) is None:
            self.local.message = record.getMessage()

    def take(self) -> str | None:
        message: str | None = getattr(self.local, "message", None)
        self.local.message = None
        return message


_last = _LastWarning()
logging.getLogger("apprise").addHandler(_last)

_ASSET = apprise.AppriseAsset(secure_logging=True, storage_mode="memory")


class ChannelURLError(ValueError):
    """A channel URL Apprise cannot use; the message never contains the URL."""


@dataclass(frozen=True, slots=True)
class Channel:
    """One way to reach a contact. `label` is safe to log; `url` never is."""

    url: str = field(repr=False)
    service: str
    label: str
    fingerprint: str
    webhook: bool

    def __str__(self) -> str:
        return self.label

    @property
    def modem(self) -> bool:
        """A gsm:// channel: SMS through the notifier's own modem (replies can acknowledge)."""
        return _scheme(self.url) == MODEM_SCHEME

    @property
    def number(self) -> str:
        """The phone number of a gsm:// channel ("" for others)."""
        return unquote(urlsplit(self.url).netloc).replace(" ", "") if self.modem else ""


def fingerprint(url: str) -> str:
    """A short stable name for a URL that reveals nothing of it (domain-separated SHA-256)."""
    return hashlib.sha256(b"ge-notify-channel\0" + url.encode()).hexdigest()[:8]


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.replace("+", "").replace("-", "").isalnum() else ""


def parse(url: str, modem: bool = False) -> Channel:
    """A Channel for `url`; ChannelURLError (without the URL) when Apprise cannot use it."""
    scheme = _scheme(url)
    if not scheme:
        raise ChannelURLError("not a URL (expected SCHEME://..., e.g. ntfy://, mailto://, dingtalk://)")
    if scheme == MODEM_SCHEME and not modem:
        raise ChannelURLError("gsm:// needs a [modem] in the notifier's config")
    if scheme == MODEM_SCHEME:
        from agent.notify import modem as _modem

        _modem.register()
    # Apprise explains a URL it cannot parse on its logger, with the URL partly in it: the
    # error raised here says what is wrong without it
    apprise_log = logging.getLogger("apprise")
    was, apprise_log.disabled = apprise_log.disabled, True
    try:
        plugin = apprise.Apprise.instantiate(url, asset=_ASSET)
    finally:
        apprise_log.disabled = was
    if plugin is None:
        if not apprise.Apprise().details()["schemas"] or scheme not in _known_schemes():
            raise ChannelURLError(f"unknown service {scheme}:// (see docs/notifications.md for the services)")
        raise ChannelURLError(f"{scheme}:// URL is incomplete or has a bad value (token, host, number)")
    fp = fingerprint(url)
    if scheme == MODEM_SCHEME:
        number = urlsplit(url).netloc
        label = f"SMS modem gsm://…{number[-3:]} #{fp}"
        service = "SMS modem"
    else:
        masked = str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]
        # scheme and host part only: query strings and paths can hold secrets Apprise does not
        # know as such (ntfy topics, custom fields)
        parts = urlsplit(masked)
        label = f"{plugin.service_name} {parts.scheme}://{parts.netloc}/… #{fp}"
        service = str(plugin.service_name)
    return Channel(url, service, label, fp, scheme in WEBHOOK_SCHEMES)


_SCHEMES: set[str] = set()


def _known_schemes() -> set[str]:
    if not _SCHEMES:
        for entry in apprise.Apprise().details()["schemas"]:
            for key in ("protocols", "secure_protocols"):
                for proto in entry.get(key) or ():
                    _SCHEMES.add(str(proto).lower())
    return _SCHEMES


def delivery_url(channel: Channel, fields: Mapping[str, str]) -> str:
    """The URL for one attempt: webhooks carry `fields` (ge_delivery, ge_alert, ge_kind) in their payload."""
    if not channel.webhook or not fields:
        return channel.url
    sep = "&" if "?" in channel.url else "?"
    return channel.url + sep + "&".join(f":{k}={quote(v, safe='')}" for k, v in fields.items())


class SendError(Exception):
    """One attempt on one channel failed; the reason never contains the URL."""


def send(channel: Channel, title: str, body: str, fields: Mapping[str, str], timeout_s: float) -> None:
    """Send one message on one channel (blocking: run it in a thread); SendError on failure.

    `fields` go into a webhook's payload: `ge_delivery` (the same for every attempt of one
    delivery), `ge_alert` (device/boot/seq) and `ge_kind` (alert, followup, acked, failing, test).
    """
    url = delivery_url(channel, fields)
    plugin = apprise.Apprise.instantiate(url, asset=_ASSET)
    if plugin is None:  # validated at load; a modem that went away lands here
        raise SendError(f"{channel.service}: channel cannot be loaded")
    # Apprise's own connect and read timeouts; the notifier bounds the whole call as well
    if hasattr(plugin, "socket_connect_timeout"):
        plugin.socket_connect_timeout = min(float(plugin.socket_connect_timeout), timeout_s)
    if hasattr(plugin, "socket_read_timeout"):
        plugin.socket_read_timeout = min(float(plugin.socket_read_timeout), timeout_s)
    _last.take()
    try:
        ok = plugin.notify(body=body, title=title)
    except Exception as exc:  # a plugin bug must not take the notifier down
        raise SendError(f"{channel.service}: {type(exc).__name__}") from None
    if not ok:
        reason = _last.take() or "not accepted"
        raise SendError(f"{channel.service}: {reason[:160]}")
