"""Agent configuration: one TOML file, validated at start into frozen dataclasses.

Every error names the file, the key and what was expected (ConfigError). See
docs/configuration.md for the keys; `guardian-agent check-config FILE` runs the same checks.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from agent.shared import tomlcheck
from agent.shared.commands import LINGER_MS_RANGE, MAX_EVENTS_RANGE  # the same bounds as central's CONFIG command
from agent.shared.errors import ConfigError
from agent.shared.keyfiles import load_central_public_key
from agent.shared.protocol import MAX_FRAME, GatewayTopics, gateway_topics
from agent.shared.tls import TlsConfig, tls_context


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str
    port: int
    client_id: str
    keepalive: int
    tls: TlsConfig | None = None


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

    local = _broker(top.table("local"), 1883, f"{gateway_id}-agent")
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
    )


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
    if cfg.metrics is not None:
        problem = _listen_problem(*cfg.metrics, probe_port=probe_port)
        if problem is not None:
            errors.add("metrics.listen", problem)
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
