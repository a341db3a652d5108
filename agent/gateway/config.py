"""Agent configuration: one TOML file, validated at start into frozen dataclasses.

Every error names the file, the key and what was expected (ConfigError). See
docs/configuration.md for the keys; `guardian-agent check-config FILE` runs the same checks.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from agent.notify.modem import ModemConfig
from agent.notify.modem import load_config as load_modem_config
from agent.shared import tomlcheck
from agent.shared.commands import LINGER_MS_RANGE, MAX_EVENTS_RANGE  # the same bounds as central's CONFIG command
from agent.shared.errors import ConfigError
from agent.shared.keyfiles import load_central_public_key
from agent.shared.protocol import MAX_FRAME, GatewayTopics, gateway_topics
from agent.shared.tls import TlsConfig, tls_context


@dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """[local.mosquitto]: the local broker's files `guardian-agent devices import` writes
    (agent/gateway/broker_files.py), and the broker's pid file to signal it to reload them."""

    password_file: Path
    acl_file: Path
    pid_file: Path | None = None  # None: a systemd path unit reloads the broker (packaging/systemd/)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str
    port: int
    client_id: str
    keepalive: int
    tls: TlsConfig | None = None
    username: str | None = None  # the local broker: the agent's user name (= its client id)
    password_file: Path | None = None  # the agent's broker password, one line, mode 0600
    mosquitto: MosquittoFiles | None = None


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_events: int
    max_bytes: int
    linger_ms: int
    window: int


@dataclass(frozen=True, slots=True)
class BufferConfig:
    """Bound of the backlog (events not yet sealed), by bytes of encoded events.

    P1/P2 may use max_bytes - p0_reserve_bytes; when that is reached the oldest P2, then the
    oldest P1 are evicted. P0 may use all of max_bytes and is never evicted: past the bound it
    is still stored (an alarm is never dropped) and the overrun is logged.
    """

    max_bytes: int
    p0_reserve_bytes: int
    # the alarms' disk reserve (agent/gateway/reserve.py); None: 16 MiB or 1/16 of the data
    # filesystem, whichever is smaller (reserve.default_reserve)
    disk_reserve_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class SerialConfig:
    """One [[serial]] port: devices speaking the serial link (docs/protocol.md §9) on a UART."""

    port: Path
    baudrate: int
    device: str | None  # the one device wired to the port, if set: another kid is topic_mismatch


@dataclass(frozen=True, slots=True)
class BleScannerConfig:
    """One [[ble]] scanner (agent/gateway/wristbands/source.py): a BlueZ adapter, or a scanner on the virtual air."""

    name: str
    backend: str  # "bluez" or "sim"
    adapter: str | None = None  # bluez: "hci0"; None: BlueZ's default adapter
    air: tuple[str, int] | None = None  # sim: the virtual air's address
    position: tuple[float, float] = (0.0, 0.0)  # sim: where the scanner stands, metres
    watchdog_s: int = 60  # silent this long: restarted, SCANNER_BLIND upstream


@dataclass(frozen=True, slots=True)
class WristbandConfig:
    """[wristbands]: how the registry's wristbands advertise (docs/protocol.md §10)."""

    company: int = 0xFFFF
    k: int = 10
    skew_s: int = 60
    # venue and residents file of the alert engine (docs/wristband-alerts.md); without it
    # only SOS and FALL are forwarded
    alerts: Path | None = None


BLE_BACKENDS = ("bluez", "sim")
# next to the config: the page's token for `guardian-agent status` (a file name, not a secret)
TOKEN_FILE = "status.token"  # noqa: S105


@dataclass(frozen=True, slots=True)
class StatusPageConfig:
    """[status_page]: the gateway's own page (agent/gateway/status/); off unless configured.

    The agent holds only the SHA-256 of the token; the token itself is in a root-only file
    (`guardian-agent status-token`), which `guardian-agent status` reads.
    """

    listen: tuple[str, int]  # an address of the venue LAN (never a wildcard)
    token_sha256: bytes = field(repr=False)
    tls_cert: Path | None = None  # both or neither: the page over HTTPS
    tls_key: Path | None = None
    max_live: int = 8  # live (server-sent events) clients at once; more get 503


# what a sounder command may name in its arguments ({type} etc., agent/gateway/sounder.py)
SOUNDER_FIELDS = ("type", "alert", "device", "place", "venue")


@dataclass(frozen=True, slots=True)
class SounderConfig:
    """[notify.sounder]: what staff on site hear while the gateway notifies people itself."""

    command: tuple[str, ...] | None = None  # argv, run once per alert (no shell); {type} etc. filled in
    command_timeout_s: float = 10.0
    gpio: Path | None = None  # sysfs directory of the relay's GPIO line (value, direction)
    active_low: bool = False
    sound_s: float = 120.0  # the relay sounds this long at most per alert, less when acknowledged


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """[notify]: the gateway's own notifier, used while central is unreachable (agent/gateway/fallback.py)."""

    circle: Path  # a copy of the venue's care-circle file (docs/notifications.md)
    fallback_after_s: float = 20.0
    ledger: Path = Path("notify-ledger.db")
    ack_listen: tuple[str, int] | None = None  # the acknowledgement page on the venue LAN
    ack_base_url: str = ""
    ack_ttl_s: int = 86400
    send_timeout_s: float = 20.0
    modem: ModemConfig | None = None
    sounder: SounderConfig | None = None


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    """[liveness]: when a silent post or sensor is reported offline (agent/gateway/liveness.py)."""

    enabled: bool = True
    margin_s: float = 10.0  # offline after 2 learned intervals + margin, or 1 + margin after its last will
    default_interval_s: float = 60.0  # until a device's heartbeat interval is learned


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: Path
    gateway_id: str
    venue: str
    data_dir: Path
    key_file: Path
    devices_file: Path
    local: BrokerConfig
    central: BrokerConfig
    batch: BatchConfig
    max_frame: int
    commit_wait_ms: float
    buffer: BufferConfig
    heartbeat_s: int
    command_key: Path | None = None  # central's public key for signed commands
    metrics: tuple[str, int] | None = None  # Prometheus endpoint (host, port); None: off
    serial: tuple[SerialConfig, ...] = ()  # [[serial]] ports (agent/gateway/sources/serial.py)
    ble: tuple[BleScannerConfig, ...] = ()  # [[ble]] scanners (agent/gateway/wristbands/source.py)
    wristbands: WristbandConfig = WristbandConfig()
    status_page: StatusPageConfig | None = None  # the gateway's own page; None: off
    notify: NotifyConfig | None = None  # [notify]; None: no fallback notifier
    liveness: LivenessConfig = LivenessConfig()

    @property
    def buffer_path(self) -> Path:
        return self.data_dir / "buffer.db"

    @property
    def topics(self) -> GatewayTopics:
        return gateway_topics(self.venue, self.gateway_id)

    @property
    def batch_topic(self) -> str:
        return self.topics.batches

    @property
    def status_topic(self) -> str:
        return self.topics.status

    @property
    def command_topic(self) -> str:
        return self.topics.commands


# A broker's host: a DNS name or an IP address (IPv6 without brackets), nothing else.
_HOST_RE = re.compile(r"[A-Za-z0-9._:%-]{1,253}")
# An MQTT client id: printable ASCII without spaces (brokers and their ACLs see it verbatim).
_CLIENT_ID_RE = re.compile(r"[!-~]{1,128}")


def _broker(t: tomlcheck.Table, default_port: int, default_id: str) -> BrokerConfig:
    cfg = BrokerConfig(
        host=t.text("host"),
        port=t.integer("port", default_port, lo=1, hi=65535),
        client_id=t.text("client_id", default_id),
        keepalive=t.integer("keepalive", 30, lo=5, hi=3600),
    )
    if "host" in t.data and isinstance(cfg.host, str) and not _HOST_RE.fullmatch(cfg.host):
        t.error("host", f"expected a host name or IP address, got {cfg.host!r}")
    if isinstance(t.data.get("client_id", ""), str) and not _CLIENT_ID_RE.fullmatch(cfg.client_id):
        t.error("client_id", f"expected 1-128 printable ASCII characters without spaces, got {cfg.client_id!r}")
    t.no_unknown_keys()
    return cfg


def _local(t: tomlcheck.Table, base: Path, default_id: str) -> BrokerConfig:
    """[local]: the broker of the venue's devices; with `password_file` the agent logs in as
    `username` (the broker replaces client ids by user names, so the two are one)."""
    username = t.ident("username", None)
    password_file = t.path_value("password_file", base, None)
    client_id = t.text("client_id", username if username is not None else default_id)
    if username is not None and client_id != username:
        t.error(
            "client_id",
            f"expected {username!r} (the user name) or nothing: the broker uses each client's user name as its "
            "client id (use_username_as_clientid)",
        )
    if password_file is not None and username is None:
        username = client_id
    if username is not None and password_file is None:
        t.error("password_file", "missing: a user name needs the file that holds the agent's broker password")
    tls = _tls(t.table("tls"), base) if "tls" in t.data else None
    files = None
    if "mosquitto" in t.data:
        m = t.table("mosquitto")
        files = MosquittoFiles(
            m.path_value("password_file", base), m.path_value("acl_file", base), m.path_value("pid_file", base, None)
        )
        m.no_unknown_keys()
        if username is None:
            t.error("mosquitto", "needs password_file: the broker's files include the agent's own login")
    cfg = replace(
        _broker(t, 8883 if tls is not None else 1883, client_id),
        tls=tls,
        username=username,
        password_file=password_file,
        mosquitto=files,
    )
    return cfg


def _tls(t: tomlcheck.Table, base: Path) -> TlsConfig:
    tls = TlsConfig(
        ca_file=t.path_value("ca_file", base),
        cert_file=t.path_value("cert_file", base, None),
        key_file=t.path_value("key_file", base, None),
    )
    t.no_unknown_keys()
    if (tls.cert_file is None) != (tls.key_file is None):
        missing = "key_file" if tls.key_file is None else "cert_file"
        t.error(missing, "missing: cert_file and key_file (the client certificate and its key) go together")
        return tls
    usable = True
    for key, p in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if p is not None and not p.is_file():
            t.error(key, f"expected a PEM file, {p} does not exist or is not a file")
            usable = False
    if tls.key_file is not None and usable:
        try:
            tomlcheck.require_private(tls.key_file, "the TLS client key")
        except ConfigError as exc:
            t.error("key_file", str(exc))
            usable = False
    if usable:
        try:
            tls_context(tls, "")
        except ConfigError as exc:  # "<key>: <message>", the key without the table's prefix
            key, _, message = str(exc).partition(": ")
            t.error(key, message)
    return tls


def _central(t: tomlcheck.Table, base: Path, gateway_id: str) -> tuple[BrokerConfig, Path | None]:
    command_key = t.path_value("command_key", base, None)
    if command_key is not None:
        try:
            load_central_public_key(command_key)
        except ConfigError as exc:
            t.error("command_key", f"expected central's public key file (guardian-agent keygen): {exc}")
    tls = _tls(t.table("tls"), base) if "tls" in t.data else None
    return replace(_broker(t, 1883, gateway_id), tls=tls), command_key


def _serial_ports(top: tomlcheck.Table, base: Path) -> tuple[SerialConfig, ...]:
    ports: list[SerialConfig] = []
    for t in top.tables("serial"):
        raw = t.data.get("port")
        if isinstance(raw, str) and not raw.strip():
            t.error("port", "expected the path of a serial device, e.g. /dev/ttyUSB0, got an empty string")
        cfg = SerialConfig(
            port=t.path_value("port", base),
            baudrate=t.integer("baudrate", 115200, lo=50, hi=4_000_000),
            device=t.ident("device", None),
        )
        t.no_unknown_keys()
        for i, other in enumerate(ports):
            if other.port == cfg.port:
                t.error("port", f"{cfg.port} is already serial[{i}].port; one [[serial]] entry per port")
        ports.append(cfg)
    return tuple(ports)


def _ble_scanner(t: tomlcheck.Table) -> BleScannerConfig:
    name = t.ident("name")
    backend = t.text("backend", "bluez")
    watchdog_s = t.integer("watchdog_s", 60, lo=2, hi=86400)
    if backend == "bluez":
        adapter = t.text("adapter", None)
        if adapter is not None and not re.fullmatch(r"hci[0-9]{1,3}", adapter):
            t.error("adapter", f"expected an adapter name like hci0, got {adapter!r}")
        return BleScannerConfig(name, backend, adapter=adapter, watchdog_s=watchdog_s)
    if backend != "sim":
        t.error("backend", f"expected one of {', '.join(BLE_BACKENDS)}, got {backend!r}")
    air = t.address("air")
    pos = t.data.get("position", [0.0, 0.0])
    t.used.add("position")
    if not isinstance(pos, list) or len(pos) != 2 or not all(type(v) in (int, float) and abs(v) < 1e6 for v in pos):
        t.error("position", f"expected [x, y] in metres, got {pos!r}")
        pos = [0.0, 0.0]
    return BleScannerConfig(name, backend, air=air, position=(float(pos[0]), float(pos[1])), watchdog_s=watchdog_s)


def _ble_scanners(top: tomlcheck.Table) -> tuple[BleScannerConfig, ...]:
    scanners: list[BleScannerConfig] = []
    for t in top.tables("ble"):
        cfg = _ble_scanner(t)
        t.no_unknown_keys()
        if any(o.name == cfg.name for o in scanners):
            t.error("name", f"duplicate scanner name {cfg.name!r}")
        scanners.append(cfg)
    return tuple(scanners)


def _wristbands(top: tomlcheck.Table, base: Path) -> WristbandConfig:
    t = top.table("wristbands", required=False)
    cfg = WristbandConfig(
        company=t.integer("company", 0xFFFF, lo=0, hi=0xFFFF),
        k=t.integer("k", 10, lo=8, hi=15),
        skew_s=t.integer("skew_s", 60, lo=1, hi=3600),
        alerts=t.path_value("alerts", base, None),
    )
    t.no_unknown_keys()
    return cfg


def _status_page(top: tomlcheck.Table, base: Path) -> StatusPageConfig | None:
    if "status_page" not in top.data:
        top.used.add("status_page")
        return None
    t = top.table("status_page")
    host, port = t.address("listen")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise t.fail("listen", f"expected the gateway's venue LAN IP address and a port, got host {host!r}") from None
    if ip.is_unspecified:
        raise t.fail("listen", f"{host} listens on every interface; give the venue LAN address of the gateway")
    digest = t.text("token_sha256")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise t.fail("token_sha256", "expected 64 lowercase hex digits (guardian-agent status-token prints them)")
    cert, key = t.path_value("tls_cert", base, None), t.path_value("tls_key", base, None)
    cfg = StatusPageConfig(
        listen=(host.strip("[]"), port),
        token_sha256=bytes.fromhex(digest),
        tls_cert=cert,
        tls_key=key,
        max_live=t.integer("max_live", 8, lo=1, hi=64),
    )
    t.no_unknown_keys()
    if (cert is None) != (key is None):
        raise t.fail("tls_key" if key is None else "tls_cert", "tls_cert and tls_key go together")
    for name, p in (("tls_cert", cert), ("tls_key", key)):
        if p is not None and not p.is_file():
            raise t.fail(name, f"expected a PEM file, {p} does not exist or is not a file")
    if key is not None:
        try:
            tomlcheck.require_private(key, "the status page's TLS key")
        except ConfigError as exc:
            raise t.fail("tls_key", str(exc)) from None
    return cfg


def _sounder(t: tomlcheck.Table, base: Path) -> SounderConfig:
    command = None
    if "command" in t.data:
        raw = t._get("command", None)
        if not isinstance(raw, list) or not raw or not all(isinstance(a, str) and a for a in raw):
            raise t.fail(
                "command",
                'expected a list of arguments, the program first (no shell), e.g. ["/usr/local/bin/page", "{type}"]',
            )
        for arg in raw:
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
            except ValueError as exc:
                raise t.fail("command", f"argument {arg!r}: {exc}") from None
            unknown = [n for n in names if n not in SOUNDER_FIELDS]
            if unknown:
                raise t.fail(
                    "command", f"argument {arg!r}: unknown field {{{unknown[0]}}} (known: {', '.join(SOUNDER_FIELDS)})"
                )
        program = Path(raw[0])
        if not program.is_absolute():
            raise t.fail("command", f"the program must be an absolute path, got {raw[0]!r}")
        if not program.is_file() or not os.access(program, os.X_OK):
            raise t.fail("command", f"{program} does not exist or is not executable")
        command = tuple(raw)
    gpio = t.path_value("gpio", base, None)
    if gpio is not None and not (gpio / "value").exists():
        raise t.fail("gpio", f"expected the sysfs directory of an exported GPIO line, {gpio / 'value'} does not exist")
    cfg = SounderConfig(
        command=command,
        command_timeout_s=t.number("command_timeout_s", 10.0, 1.0, 300.0),
        gpio=gpio,
        active_low=t.flag("active_low", False),
        sound_s=t.number("sound_s", 120.0, 1.0, 3600.0),
    )
    if cfg.command is None and cfg.gpio is None:
        raise t.fail("command", "give a command, a gpio line or both (or leave [notify.sounder] out)")
    t.no_unknown_keys()
    return cfg


def _notify(top: tomlcheck.Table, base: Path, data_dir: Path, venue: str) -> NotifyConfig | None:
    if "notify" not in top.data:
        top.used.add("notify")
        return None
    t = top.table("notify")
    # [notify.modem]: an SMS modem on a serial port, for a gateway with no internet
    modem = load_modem_config(t.table("modem"), base) if "modem" in t.data else None
    listen = t.address("ack_listen", None)
    default_url = "" if listen is None or _wildcard(listen[0]) else f"http://{listen[0]}:{listen[1]}"
    base_url = t.text("ack_base_url", default_url)
    if listen is not None and not base_url:
        raise t.fail(
            "ack_base_url",
            "the address people's phones reach the acknowledgement page at on the venue LAN, e.g. http://192.168.1.10:8181",
        )
    if base_url and not base_url.startswith(("http://", "https://")):
        raise t.fail("ack_base_url", f"expected an http:// or https:// URL, got {base_url!r}")
    cfg = NotifyConfig(
        circle=t.path_value("circle", base),
        fallback_after_s=t.number("fallback_after_s", 20.0, 1.0, 3600.0),
        ledger=t.path_value("ledger", data_dir, "notify-ledger.db"),
        ack_listen=listen,
        ack_base_url=base_url,
        ack_ttl_s=t.integer("ack_ttl_s", 86400, 300, 7 * 86400),
        send_timeout_s=t.number("send_timeout_s", 20.0, 1.0, 120.0),
        modem=modem,
        sounder=_sounder(t.table("sounder"), base) if "sounder" in t.data else None,
    )
    t.no_unknown_keys()
    _check_circle(t, cfg, venue)
    return cfg


def _wildcard(host: str) -> bool:
    """An address that listens on every interface: not one a link can point at."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_circle(t: tomlcheck.Table, cfg: NotifyConfig, venue: str) -> None:
    """The care-circle copy loads (its own errors name its file and key) and is this venue's."""
    from agent.notify.circle import load_circle  # noqa: PLC0415 - Apprise loads only with [notify]

    if not cfg.circle.is_file():
        raise t.fail("circle", f"{cfg.circle} does not exist or is not a file (a copy of the venue's care-circle file)")
    circle = load_circle(cfg.circle, modem=cfg.modem is not None)
    if circle.venue != venue:
        raise t.fail(
            "circle", f"{cfg.circle} is the care circle of venue {circle.venue!r}; this gateway is at {venue!r}"
        )


def _liveness(top: tomlcheck.Table) -> LivenessConfig:
    t = top.table("liveness", required=False)
    cfg = LivenessConfig(
        enabled=t.flag("enabled", True),
        margin_s=t.number("margin_s", 10.0, 1.0, 3600.0),
        default_interval_s=t.number("default_interval_s", 60.0, 1.0, 86400.0),
    )
    t.no_unknown_keys()
    return cfg


def load_config(path: Path) -> AgentConfig:
    """The config file, checked whole: a ConfigError names every mistake in it, one per line."""
    path = Path(path)
    errors = tomlcheck.Errors(path)
    top = tomlcheck.Table(path, tomlcheck.load(path), errors=errors)
    base = path.resolve().parent
    gw = top.table("gateway")
    gateway_id = gw.ident("id")
    data_dir = gw.path_value("data_dir", base)
    key_file = gw.path_value("key_file", data_dir, "gateway.key")
    devices_file = gw.path_value("devices_file", base)
    venue = gw.ident("venue")
    heartbeat_s = gw.integer("heartbeat_s", 60, lo=1, hi=3600)
    gw.no_unknown_keys()

    local = _local(top.table("local"), base, f"{gateway_id}-agent")
    central, command_key = _central(top.table("central"), base, gateway_id)

    bt = top.table("batch", required=False)
    batch = BatchConfig(
        max_events=bt.integer("max_events", 1000, lo=MAX_EVENTS_RANGE[0], hi=MAX_EVENTS_RANGE[1]),
        max_bytes=bt.integer("max_bytes", 256 * 1024, lo=1024, hi=16 * 1024 * 1024),
        linger_ms=bt.integer("linger_ms", 20, lo=LINGER_MS_RANGE[0], hi=LINGER_MS_RANGE[1]),
        window=bt.integer("window", 8, lo=1, hi=256),
    )
    bt.no_unknown_keys()

    bf = top.table("buffer", required=False)
    max_bytes = bf.integer("max_bytes", 256 * 1024 * 1024, lo=4096, hi=1 << 40)
    buffer = BufferConfig(
        max_bytes=max_bytes,
        p0_reserve_bytes=bf.integer("p0_reserve_bytes", max_bytes // 8, lo=0, hi=max_bytes),
        disk_reserve_bytes=bf.integer("disk_reserve_bytes", None, lo=0, hi=1 << 40),
    )
    bf.no_unknown_keys()

    mt = top.table("metrics", required=False)
    metrics: tuple[str, int] | None = mt.address("listen", None)
    mt.no_unknown_keys()

    lim = top.table("limits", required=False)
    max_frame = lim.integer("max_frame_bytes", MAX_FRAME, lo=64, hi=65536)
    commit_wait_ms = lim.number("commit_wait_ms", 2.0, lo=0.0, hi=100.0)
    lim.no_unknown_keys()
    serial = _serial_ports(top, base)
    ble = _ble_scanners(top)
    wristbands = _wristbands(top, base)
    # these sections stop at their first error; it is reported with all the others
    status_page = _section(errors, lambda: _status_page(top, base), None)
    notify = _section(errors, lambda: _notify(top, base, data_dir, venue), None)
    liveness = _section(errors, lambda: _liveness(top), LivenessConfig())
    top.no_unknown_keys()
    errors.check()

    return AgentConfig(
        path=path,
        gateway_id=gateway_id,
        venue=venue,
        data_dir=data_dir,
        key_file=key_file,
        devices_file=devices_file,
        local=local,
        central=central,
        batch=batch,
        max_frame=max_frame,
        commit_wait_ms=commit_wait_ms,
        buffer=buffer,
        heartbeat_s=heartbeat_s,
        command_key=command_key,
        metrics=metrics,
        serial=serial,
        ble=ble,
        wristbands=wristbands,
        status_page=status_page,
        notify=notify,
        liveness=liveness,
    )


T = TypeVar("T")


def _section(errors: tomlcheck.Errors, read: Callable[[], T], stand_in: T) -> T:
    """A section read by code that raises its first error: the error joins the others."""
    try:
        return read()
    except ConfigError as exc:
        errors.add_message(str(exc))
        return stand_in


# --- what `run` needs of the machine ------------------------------------------------------

# The alarms' disk reserve may take at most this share of the data filesystem.
_RESERVE_SHARE_MAX = 4


def check_runnable(cfg: AgentConfig, *, probe_port: bool = True) -> None:
    """What `guardian-agent run` needs of this machine, beyond the file's syntax: a data
    directory it can create and write, a key file it can create or read, a metrics address of
    this machine (and, with `probe_port`, a free port), a disk reserve the filesystem can hold.
    A ConfigError names every problem, one per line."""
    errors = tomlcheck.Errors(cfg.path)
    _writable_dir(errors, "gateway.data_dir", cfg.data_dir)
    if cfg.key_file.exists():
        if not cfg.key_file.is_file():
            errors.add("gateway.key_file", f"{cfg.key_file} is not a file")
    elif not errors.failed("gateway.data_dir"):
        _writable_dir(errors, "gateway.key_file", cfg.key_file.parent)
    listens = {"metrics.listen": cfg.metrics}
    if cfg.status_page is not None:
        listens["status_page.listen"] = cfg.status_page.listen
    if cfg.notify is not None:
        listens["notify.ack_listen"] = cfg.notify.ack_listen
    for key, address in listens.items():
        problem = _listen_problem(*address, probe_port=probe_port) if address is not None else None
        if problem is not None:
            errors.add(key, problem)
    reserve = cfg.buffer.disk_reserve_bytes
    home = _existing(cfg.data_dir)
    if reserve is not None and home is not None and not errors.failed("gateway.data_dir"):
        st = os.statvfs(home)
        size = st.f_blocks * st.f_frsize
        if reserve > size // _RESERVE_SHARE_MAX:
            errors.add(
                "buffer.disk_reserve_bytes",
                f"{reserve} bytes is more than 1/{_RESERVE_SHARE_MAX} of the data filesystem ({size} bytes)",
            )
    errors.check()


def _existing(path: Path) -> Path | None:
    """`path` or its nearest ancestor that exists."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return None


def _writable_dir(errors: tomlcheck.Errors, key: str, path: Path) -> None:
    """`path` is a directory the agent can write, or one it can create."""
    found = _existing(path)
    if found is None or not found.is_dir():
        errors.add(key, f"{path} cannot be a directory: {found} is not one")
    elif not os.access(found, os.W_OK | os.X_OK):
        errors.add(key, f"{path}: {found} is not writable for this user")


def _listen_problem(host: str, port: int, *, probe_port: bool) -> str | None:
    """Why the metrics endpoint could not listen on host:port; None when it could."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return listen_error(host, port, exc)
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and not probe_port:
                    continue
                return listen_error(host, port, exc)
    return None


def listen_error(host: str, port: int, exc: OSError) -> str:
    """What a failure to listen on host:port means, in one line."""
    if isinstance(exc, socket.gaierror):
        return f"{host}:{port}: {host} does not resolve ({exc.strerror or exc})"
    if exc.errno == errno.EADDRINUSE:
        return f"{host}:{port} is in use by another process"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host}:{port}: {host} is not an address of this machine"
    return f"{host}:{port}: cannot listen there ({exc.strerror or exc})"
