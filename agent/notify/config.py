"""guardian-notify's own settings (TOML), validated at load; errors name the file and the key.

[notifier]
data_dir = "/var/lib/guardian-notify"     # ledger.db, ack.key
circles = ["rosewood-house.toml"]         # care-circle files, one per venue (circle.py)
device_keys = "devices.toml"              # optional: device registry (re-checks device MACs,
                                          # names the zone of posts and sensors in messages)

[central]
broker = "127.0.0.1:1883"
client_id = "ge-notify"                   # persistent session: batches wait while it is down
gateway_keys = "gateways.json"            # enrolled gateways (venue of each gateway), or:
[[central.gateway]]
key = "GW-1.key.pub"
venue = "rosewood-house"
command_key = "central.key"               # optional: central's private key, to send ACKs
[central.tls]                             # optional, as the agent's
ca_file = "ca.pem"

[ack]
listen = "127.0.0.1:8080"                 # behind the home's reverse proxy
base_url = "https://notify.example.org"   # what links start with
ttl_s = 86400

[delivery]                                # agent/notify/notifier.py Settings; defaults shown
max_attempts = 6
retry_base_s = 2.0
retry_cap_s = 60.0
send_timeout_s = 20.0
concurrency = 8
max_alert_age_s = 86400
fallback_after_s = 20
fallback_hold_s = 5

[modem]                                   # optional: SMS through a serial modem (gsm://)
port = "/dev/ttyUSB2"
baudrate = 115200
pin_file = "sim.pin"                      # optional, mode 0600
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from agent.notify.modem import ModemConfig
from agent.notify.modem import load_config as load_modem_config
from agent.notify.notifier import Settings
from agent.shared import tomlcheck
from agent.shared.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path | None
    key_file: Path | None


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    path: Path
    data_dir: Path
    circles: tuple[Path, ...]
    device_keys: Path | None
    broker: tuple[str, int] | None
    client_id: str
    gateway_keys: Path | None
    gateways: tuple[tuple[Path, str], ...]  # (public key file, venue)
    command_key: Path | None
    tls: TlsFiles | None
    ack_listen: tuple[str, int] | None
    ack_base_url: str
    ack_ttl_s: int
    settings: Settings
    modem: ModemConfig | None

    @property
    def ledger_file(self) -> Path:
        return self.data_dir / "ledger.db"

    @property
    def link_key_file(self) -> Path:
        return self.data_dir / "ack.key"


def load_config(path: Path) -> NotifyConfig:
    path = Path(path)
    base = path.parent
    top = tomlcheck.Table(path, tomlcheck.load(path))
    n = top.table("notifier")
    data_dir = n.path_value("data_dir", base)
    circles = n.data.get("circles")
    n.used.add("circles")
    if not isinstance(circles, list) or not circles or not all(isinstance(c, str) for c in circles):
        raise n.fail("circles", "expected a list of care-circle files (one per venue)")
    circle_paths = tuple(p if p.is_absolute() else base / p for p in map(Path, circles))
    device_keys = n.path_value("device_keys", base, None)
    keep_days = n.integer("keep_days", 90, 7, 3650)
    n.no_unknown_keys()

    c = top.table("central", required=False)
    broker = c.address("broker", None)
    client_id = c.ident("client_id", "ge-notify")
    gateway_keys = c.path_value("gateway_keys", base, None)
    gateways = []
    for g in c.tables("gateway"):
        gateways.append((g.path_value("key", base), g.ident("venue")))
        g.no_unknown_keys()
    if broker is not None and gateway_keys is None and not gateways:
        raise c.fail("gateway_keys", "give gateway_keys (enrolled gateways) or [[central.gateway]] key and venue")
    command_key = c.path_value("command_key", base, None)
    tls = None
    if "tls" in c.data:
        t = c.table("tls")
        tls = TlsFiles(
            t.path_value("ca_file", base), t.path_value("cert_file", base, None), t.path_value("key_file", base, None)
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise t.fail("cert_file", "cert_file and key_file go together")
        t.no_unknown_keys()
    c.no_unknown_keys()

    a = top.table("ack", required=False)
    listen = a.address("listen", None)
    base_url = a.text("base_url", "" if listen is None else f"http://{listen[0]}:{listen[1]}")
    if base_url and not base_url.startswith(("https://", "http://")):
        raise a.fail("base_url", f"expected an http:// or https:// URL, got {base_url!r}")
    ttl = a.integer("ttl_s", 86400, 300, 7 * 86400)
    a.no_unknown_keys()

    d = top.table("delivery", required=False)
    settings = Settings(
        max_attempts=d.integer("max_attempts", 6, 1, 50),
        retry_base_s=d.number("retry_base_s", 2.0, 0.1, 600.0),
        retry_cap_s=d.number("retry_cap_s", 60.0, 1.0, 3600.0),
        send_timeout_s=d.number("send_timeout_s", 20.0, 1.0, 120.0),
        concurrency=d.integer("concurrency", 8, 1, 64),
        max_alert_age_s=d.number("max_alert_age_s", 86400.0, 60.0, 30 * 86400.0),
        fallback_after_s=d.number("fallback_after_s", 20.0, 1.0, 3600.0),
        fallback_hold_s=d.number("fallback_hold_s", 5.0, 0.0, 60.0),
        link_ttl_s=ttl,
        keep_s=keep_days * 86400.0,
        forward_acks=command_key is not None,
    )
    if settings.max_alert_age_s * 2 > settings.keep_s:
        raise d.fail("max_alert_age_s", f"must be at most half of notifier.keep_days ({keep_days} days)")
    d.no_unknown_keys()

    modem = load_modem_config(top.table("modem"), base) if "modem" in top.data else None
    top.no_unknown_keys()
    return NotifyConfig(
        path,
        data_dir,
        circle_paths,
        device_keys,
        broker,
        client_id,
        gateway_keys,
        tuple(gateways),
        command_key,
        tls,
        listen,
        base_url,
        ttl,
        settings,
        modem,
    )


def ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ to central's broker trusting only `ca_file` (as the agent's uplink)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"central.tls: {exc}") from None
    return ctx
