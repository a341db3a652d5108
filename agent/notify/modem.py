"""SMS through a GSM/LTE modem on a serial port, as Apprise's `gsm://NUMBER` channel.

For a gateway (or a small site) with no internet: AT commands through python-gsmmodem-new
(PDU mode, so Chinese texts go as UCS-2 and long ones as concatenated parts), on pyserial.
The modem is opened on the first message and kept open; a failed send closes it so the next
one starts again from the AT handshake. One message at a time: the library's AT exchange is
not re-entrant and a modem handles one submission at a time anyway.

`register()` installs the `gsm://` schema in Apprise (its custom-plugin decorator), so a
contact's modem channel is a URL like every other; `configure()` names the port. SMS the modem
receives go to `Modem.on_sms` (a contact's "OK <code>" reply acknowledges, agent/notify/notifier.py).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from agent.shared import tomlcheck
from agent.shared.errors import ConfigError

log = logging.getLogger("agent.notify.modem")

_lock = threading.Lock()
_registered = False


@dataclass(frozen=True, slots=True)
class ModemConfig:
    """The modem's settings: notify.toml's [modem], agent.toml's [notify.modem]."""

    port: str
    baudrate: int = 115200
    pin_file: Path | None = None  # the SIM PIN, mode 0600


def load_config(t: tomlcheck.Table, base: Path) -> ModemConfig:
    """A modem table; errors name the file and the key."""
    cfg = ModemConfig(t.text("port"), t.integer("baudrate", 115200, 1200, 921600), t.path_value("pin_file", base, None))
    if cfg.pin_file is not None:
        try:
            tomlcheck.require_private(cfg.pin_file, "the SIM PIN")
        except ConfigError as exc:
            raise t.fail("pin_file", str(exc)) from None
    t.no_unknown_keys()
    return cfg


def from_config(cfg: ModemConfig) -> Modem:
    return Modem(cfg.port, cfg.baudrate, cfg.pin_file)


class Modem:
    """One serial modem, opened lazily; `send` is blocking (run it in a thread)."""

    def __init__(
        self, port: str, baudrate: int = 115200, pin_file: Path | None = None, timeout_s: float = 40.0
    ) -> None:
        # called from the library's reader thread with (sender number, text) of each SMS received
        self.on_sms: Callable[[str, str], None] | None = None
        self.port = port
        self.baudrate = baudrate
        self.pin_file = pin_file
        self.timeout_s = timeout_s
        self._modem: Any = None
        self._lock = threading.Lock()
        self.sent = 0

    def _open(self) -> Any:
        with warnings.catch_warnings():
            # the library's regular expressions predate Python's invalid-escape warnings
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            from gsmmodem.modem import GsmModem

        pin = self.pin_file.read_text().strip() if self.pin_file is not None else None
        modem = GsmModem(self.port, self.baudrate, smsReceivedCallbackFunc=self._received)
        modem.connect(pin=pin)
        log.info("modem_up port=%s", self.port)
        return modem

    def _received(self, sms: Any) -> None:
        handler = self.on_sms
        if handler is not None:
            handler(str(sms.number), str(sms.text))

    def open(self) -> None:
        """Open the modem now (to hear replies before the first message goes out); ModemError."""
        with self._lock:
            if self._modem is None:
                try:
                    self._modem = self._open()
                except Exception as exc:
                    self._close()
                    raise ModemError(f"modem {self.port}: {type(exc).__name__}") from None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        modem, self._modem = self._modem, None
        if modem is not None:
            try:
                modem.close()
            except Exception as exc:  # the port may already be gone
                log.debug("modem_close_failed reason=%r", type(exc).__name__)

    def send(self, number: str, text: str) -> None:
        """Send one SMS (split into parts when long); ModemError on any failure."""
        with self._lock:
            try:
                if self._modem is None:
                    self._modem = self._open()
                self._modem.sendSms(number, text)
            except Exception as exc:
                # a serial error, a timeout or an AT error: start afresh next time
                self._close()
                # the library's messages can hold the command sent (the PDU encodes the number)
                code = getattr(exc, "code", None)
                detail = f"{type(exc).__name__}" + (f" {code}" if code is not None else "")
                raise ModemError(f"modem {self.port}: {detail}") from None
            self.sent += 1


class ModemError(Exception):
    """A message could not be handed to the modem; the text never contains the number."""


_modem: Modem | None = None


def current() -> Modem | None:
    return _modem


def configure(modem: Modem | None) -> None:
    """The modem gsm:// channels send through (None: gsm:// messages fail)."""
    global _modem
    register()
    _modem = modem


def _send(body: str, title: str, *args: Any, **kwargs: Any) -> bool:
    meta = kwargs.get("meta") or {}
    number = unquote(str(meta.get("host") or "")).replace(" ", "")
    modem = _modem
    if modem is None or not number:
        log.error("modem_send_failed reason=%s", "no modem configured" if modem is None else "no number")
        return False
    text = f"{title}\n{body}" if title else body
    try:
        modem.send(number, text)
    except ModemError as exc:
        # a warning on Apprise's logger: the notifier records it as the attempt's reason
        logging.getLogger("apprise").warning("%s", exc)
        return False
    return True


def register() -> None:
    """Install the gsm:// schema in Apprise (once per process)."""
    global _registered
    with _lock:
        if _registered:
            return
        from apprise.decorators import notify

        notify(on="gsm", name="SMS modem")(_send)  # type: ignore[no-untyped-call]
        _registered = True
