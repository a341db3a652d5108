"""Prometheus metrics on a local port (prometheus-client), read from the gateway's Stats.

Counters and gauges are collected from a `Stats.snapshot()` (agent/gateway/stats.py) when Prometheus
scrapes, so the hot path pays nothing for them; the two histograms are observed per commit
(by the pipeline) and per acknowledged batch (by the uplink), not per event: the gateway hands
`commit.observe` and `delivery.observe` to those parts when it builds them. Each agent has its
own registry (several agents can run in one test process).

    ge_backlog_events{lane}            events waiting to be sealed, per lane (P0, P1, P2)
    ge_backlog_bytes{lane}             their encoded bytes
    ge_oldest_undelivered_seconds      age of the oldest event central has not acknowledged
    ge_evicted_total{lane}             events evicted from a full buffer (since it was created)
    ge_frames_accepted_total           device frames accepted
    ge_frames_rejected_total{reason}   device frames rejected, by reason (docs/protocol.md §6)
    ge_serial_rejected_total{reason}   serial link input dropped, by reason (docs/protocol.md §9)
    ge_events_delivered_total          events in batches central acknowledged
    ge_batches_sealed_total / ge_batches_acked_total / ge_receipts_sent_total
    ge_receipts_limited_total          answers to resent or replayed frames held back (rate limit)
    ge_local_broker_disconnects_total  connections to the local broker that were lost
    ge_inflight_batches                sealed batches waiting for central's PUBACK
    ge_uplink_up / ge_local_broker_up  1 when connected
    ge_store_error                     1 while commits fail (disk full, I/O error)
    ge_devices_followed                posts and sensors whose liveness is followed
    ge_device_offline_total / ge_device_online_total   DEVICE_OFFLINE / DEVICE_ONLINE raised
    ge_status_rejected_total{reason}   device status messages rejected (agent/gateway/liveness.py)
    ge_fallback_active                 1 while the gateway notifies people itself (central unreachable)
    ge_fallback_alerts_total           alerts the gateway's fallback took on
    ge_local_acks_total                acknowledgements at the gateway (its LAN page, SMS replies)
    ge_sounder_failures_total          sounder commands or relay writes that failed
    ge_commit_seconds                  histogram: duration of each group commit (incl. fsync)
    ge_delivery_seconds                histogram: for each acknowledged batch, from the gateway
                                       receiving its oldest event to central's PUBACK
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.gateway.stats import Snapshot

LANES = ("P0", "P1", "P2")


class _StatsCollector(Collector):
    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self.read = read

    def collect(self) -> Iterator[Any]:
        st = self.read()
        backlog = GaugeMetricFamily("ge_backlog_events", "Events waiting to be sealed", labels=["lane"])
        size = GaugeMetricFamily("ge_backlog_bytes", "Encoded bytes of the events waiting", labels=["lane"])
        evicted = CounterMetricFamily("ge_evicted", "Events evicted from a full buffer", labels=["lane"])
        for i, lane in enumerate(LANES):
            backlog.add_metric([lane], st.backlog[i])
            size.add_metric([lane], st.backlog_bytes[i])
            evicted.add_metric([lane], st.evicted[i])
        yield from (backlog, size, evicted)
        yield GaugeMetricFamily(
            "ge_oldest_undelivered_seconds",
            "Age of the oldest event central has not acknowledged",
            value=st.oldest_age_ms / 1000.0,
        )
        rejected = CounterMetricFamily("ge_frames_rejected", "Device frames rejected", labels=["reason"])
        for reason, n in sorted(st.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        serial = CounterMetricFamily("ge_serial_rejected", "Serial link input dropped", labels=["reason"])
        for reason, n in sorted(st.serial_rejected.items()):
            serial.add_metric([reason], n)
        yield serial
        for name, value, text in (
            ("ge_frames_accepted", st.accepted, "Device frames accepted"),
            ("ge_events_delivered", st.delivered, "Events in batches central acknowledged"),
            ("ge_batches_sealed", st.batches_sealed, "Batches sealed and signed"),
            ("ge_batches_acked", st.batches_acked, "Batches central acknowledged"),
            ("ge_receipts_sent", st.receipts_sent, "Receipts sent to devices"),
            ("ge_receipts_limited", st.receipts_limited, "Receipts for resent frames held back by the rate limit"),
            ("ge_local_broker_disconnects", st.local_disconnects, "Connections to the local broker lost"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily("ge_inflight_batches", "Batches waiting for PUBACK", value=st.inflight_batches)
        yield GaugeMetricFamily("ge_uplink_up", "1 when connected to central", value=int(st.uplink_connected))
        yield GaugeMetricFamily("ge_local_broker_up", "1 when connected locally", value=int(st.local_connected))
        yield GaugeMetricFamily("ge_store_error", "1 while commits fail", value=int(st.store_error is not None))
        status = CounterMetricFamily("ge_status_rejected", "Device status messages rejected", labels=["reason"])
        for reason, n in sorted(st.status_rejected.items()):
            status.add_metric([reason], n)
        yield status
        yield GaugeMetricFamily("ge_devices_followed", "Posts and sensors followed", value=st.devices_followed)
        yield GaugeMetricFamily("ge_fallback_active", "1 while notifying itself", value=int(st.fallback_active))
        for name, value, text in (
            ("ge_device_offline", st.devices_offline, "DEVICE_OFFLINE raised"),
            ("ge_device_online", st.devices_online, "DEVICE_ONLINE raised"),
            ("ge_fallback_alerts", st.fallback_taken, "Alerts the gateway's fallback took on"),
            ("ge_local_acks", st.local_acks, "Acknowledgements at the gateway"),
            ("ge_sounder_failures", st.sounder_failures, "Sounder commands or relay writes that failed"),
        ):
            yield CounterMetricFamily(name, text, value=value)


class Metrics:
    """The agent's metrics registry; `serve()` exposes it over HTTP on a local address.

    Built before the parts that observe its histograms; the counters and gauges are read from
    the `read` function given to `serve()` (Stats.snapshot, once every part exists).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commit = Histogram(
            "ge_commit_seconds",
            "Duration of each group commit, fsync included",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.delivery = Histogram(
            "ge_delivery_seconds",
            "Per acknowledged batch: gateway receive of its oldest event to central's PUBACK",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0),
            registry=self.registry,
        )

    def serve(self, host: str, port: int, read: Callable[[], Snapshot]) -> None:
        """Start the HTTP endpoint (a daemon thread of prometheus-client), collecting from `read`."""
        self.registry.register(_StatsCollector(read))
        start_http_server(port, addr=host, registry=self.registry)
