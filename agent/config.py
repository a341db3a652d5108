"""Agent configuration: one TOML file, validated at start into frozen dataclasses.

Every error names the file, the key and what was expected (ConfigError). See
docs/configuration.md for the keys; `guardian-agent check-config FILE` runs the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent import tomlcheck
from agent.frames import DEFAULT_MAX_FRAME


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str
    port: int
    client_id: str
    keepalive: int


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_events: int
    max_bytes: int
    linger_ms: int
    window: int


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

    @property
    def buffer_path(self) -> Path:
        return self.data_dir / "buffer.db"

    @property
    def batch_topic(self) -> str:
        return f"venues/{self.venue}/gateways/{self.gateway_id}/batches"


def _broker(t: tomlcheck.Table, default_port: int, default_id: str) -> BrokerConfig:
    cfg = BrokerConfig(
        host=t.text("host"),
        port=t.integer("port", default_port, lo=1, hi=65535),
        client_id=t.text("client_id", default_id),
        keepalive=t.integer("keepalive", 30, lo=5, hi=3600),
    )
    t.no_unknown_keys()
    return cfg


def load_config(path: Path) -> AgentConfig:
    path = Path(path)
    top = tomlcheck.Table(path, tomlcheck.load(path))
    base = path.resolve().parent
    gw = top.table("gateway")
    gateway_id = gw.ident("id")
    data_dir = gw.path_value("data_dir", base)
    key_file = gw.path_value("key_file", data_dir, "gateway.key")
    devices_file = gw.path_value("devices_file", base)
    venue = gw.ident("venue")
    gw.no_unknown_keys()

    local = _broker(top.table("local"), 1883, f"{gateway_id}-agent")
    central = _broker(top.table("central"), 1883, gateway_id)

    bt = top.table("batch", required=False)
    batch = BatchConfig(
        max_events=bt.integer("max_events", 1000, lo=1, hi=100_000),
        max_bytes=bt.integer("max_bytes", 256 * 1024, lo=1024, hi=16 * 1024 * 1024),
        linger_ms=bt.integer("linger_ms", 20, lo=0, hi=10_000),
        window=bt.integer("window", 8, lo=1, hi=256),
    )
    bt.no_unknown_keys()

    lim = top.table("limits", required=False)
    max_frame = lim.integer("max_frame_bytes", DEFAULT_MAX_FRAME, lo=64, hi=65536)
    commit_wait_ms = lim.number("commit_wait_ms", 2.0, lo=0.0, hi=100.0)
    lim.no_unknown_keys()
    top.no_unknown_keys()

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
    )
