"""Prometheus metrics of a running agent, scraped over HTTP like Prometheus does."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.gateway.config import load_config
from agent.shared.errors import ConfigError
from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR, free_port, wait_until

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above
from mqtt import MQTTClient

KEY = bytes(range(32))


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Metrics:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_until(port: int, check: Callable[[Metrics], bool], what: str, timeout: float = 10) -> Metrics:
    """Scrape until `check` holds for the metrics (another process's counters: polled)."""

    def metrics() -> Metrics | None:
        m = scrape(port)
        return m if check(m) else None

    found = wait_until(metrics, timeout, what)
    assert found is not None
    return found


DELIVERED = ("ge_events_delivered_total", ())
BACKLOG_P0 = ("ge_backlog_events", (("lane", "P0"),))


def test_metrics_follow_the_pipeline(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]) -> None:
    local, central = broker_pair
    port = free_port()
    agent = AgentProcess(
        tmp_path / "gw",
        local.address,
        central.address,
        [Device("AP-0001", "alarm_post", KEY, "venue-1", "hall")],
        extra_config=f'[metrics]\nlisten = "127.0.0.1:{port}"\n',
    )
    verifier = CentralVerifier(central.address, [agent.public_key_file])
    verifier.start()
    try:
        agent.start()
        agent.wait_log("metrics_listening")
        agent.wait_log("uplink_up")
        client = MQTTClient("dev", "127.0.0.1", local.port)
        client.connect()
        for seq in range(1, 6):
            client.publish("ge/dev/AP-0001/up", fwframe.build(KEY, "AP-0001", 1, seq, 1, 0, {}, 0), qos=1)
        client.publish("ge/dev/AP-0001/up", b"\x00" * 10, qos=1)
        client.publish("ge/dev/AP-0001/up", fwframe.build(KEY, "AP-0001", 1, 3, 1, 0, {}, 0), qos=1)
        client.disconnect()
        verifier.wait_events(5, 15, device="AP-0001")
        # central has the events before the agent has central's PUBACK for their batch:
        # the delivered counter catches up a moment later
        # delivered counts each event central has, once (the gateway's heartbeat too)
        m = scrape_until(port, lambda m: m[DELIVERED] == len(verifier.events()), "delivered == events at central")
        assert m[DELIVERED] >= 5
        assert m[("ge_frames_accepted_total", ())] == 5
        assert m[("ge_frames_rejected_total", (("reason", "malformed"),))] == 1
        assert m[("ge_frames_rejected_total", (("reason", "replay"),))] == 1
        assert m[("ge_uplink_up", ())] == 1 and m[("ge_local_broker_up", ())] == 1
        assert m[("ge_backlog_events", (("lane", "P0"),))] == 0
        assert m[("ge_evicted_total", (("lane", "P2"),))] == 0
        assert m[("ge_commit_seconds_count", ())] >= 1
        assert m[("ge_delivery_seconds_count", ())] >= 1
        # central away: the backlog and the oldest age show it
        central.stop()
        agent.wait_log("uplink_down")
        client = MQTTClient("dev", "127.0.0.1", local.port)
        client.connect()
        client.publish("ge/dev/AP-0001/up", fwframe.build(KEY, "AP-0001", 1, 9, 1, 0, {}, 0), qos=1)
        client.disconnect()
        # the publish returned after the broker's PUBACK; the agent commits within ms
        m = scrape_until(port, lambda m: m[BACKLOG_P0] == 1, "the alarm in the P0 backlog")
        assert m[("ge_uplink_up", ())] == 0
        assert m[("ge_oldest_undelivered_seconds", ())] > 0
    finally:
        verifier.stop()
        agent.kill()


def test_metrics_listen_address_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[gateway]\nid = "GW"\nvenue = "v"\ndata_dir = "d"\ndevices_file = "x.toml"\n'
        '[local]\nhost = "h"\n[central]\nhost = "h"\n[metrics]\nlisten = "9108"\n'
    )
    with pytest.raises(ConfigError, match=r"agent.toml: metrics.listen: expected HOST:PORT"):
        load_config(cfg)
