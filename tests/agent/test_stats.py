"""The read side of the counters (agent/gateway/stats.py): what a snapshot combines, the log line's fields
and the gateway heartbeat built from it (docs/protocol.md §4.4)."""

from __future__ import annotations

from agent.gateway.app import heartbeat_data, stats_line
from agent.gateway.stats import (
    BleCounters,
    CommandCounters,
    LocalCounters,
    PipelineCounters,
    ReceiptCounters,
    SerialCounters,
    Stats,
    UplinkCounters,
)

NOW = 1_700_000_010_000


def stats() -> Stats:
    p = PipelineCounters(accepted=7, committed=6, backlog=(1, 2, 3), backlog_bytes=(10, 20, 30), evicted=(0, 1, 2))
    p.rejected["bad_mac"] += 2
    p.backlog_oldest_ms = NOW - 4_000
    u = UplinkCounters(connected=True, inflight=2, inflight_oldest_ms=NOW - 9_000, batches_acked=3, delivered=5)
    s = SerialCounters(receipts_dropped=2)
    s.rejected["crc"] += 1
    cmd = CommandCounters()
    cmd.rejected["replay"] += 1
    return Stats(
        pipeline=p,
        uplink=u,
        receipts=ReceiptCounters(sent=4),
        local=LocalCounters(connected=True, receipts_dropped=1),
        serial=s,
        ble=BleCounters(accepted=1),
        commands=cmd,
    )


def test_a_snapshot_is_a_copy_that_combines_the_parts() -> None:
    st = stats()
    snap = st.snapshot(NOW)
    assert snap.oldest_age_ms == 9_000, "the oldest of the backlog and the batches in flight"
    assert snap.receipts_dropped == 3 and snap.receipts_sent == 4
    st.pipeline.rejected["bad_mac"] += 1
    st.uplink.inflight_oldest_ms = None
    assert snap.rejected == {"bad_mac": 2}, "a copy: later counts do not change it"
    assert st.snapshot(NOW).oldest_age_ms == 4_000
    st.pipeline.backlog_oldest_ms = None
    assert st.snapshot(NOW).oldest_age_ms == 0, "nothing undelivered"


def test_the_log_line_keeps_its_fields() -> None:
    line = stats_line(stats().snapshot(NOW))
    fields = [kv.split("=", 1)[0] for kv in line.split()]
    assert fields == [
        "accepted",
        "committed",
        "delivered",
        "batches_sealed",
        "batches_acked",
        "receipts_sent",
        "receipts_limited",
        "rejected",
        "serial_rejected",
        "ble_rejected",
        "commands_accepted",
        "commands_rejected",
        "backlog",
        "backlog_bytes",
        "oldest_age_ms",
        "evicted",
        "inflight_batches",
        "uplink",
        "local",
        "local_disconnects",
        "devices_followed",
        "devices_offline",
        "devices_online",
        "status_rejected",
        "fallback",
        "fallback_taken",
        "local_acks",
        "sounder_failures",
        "t",
    ]
    assert "rejected={'bad_mac':2}" in line and "backlog=[1,2,3]" in line and "uplink=up" in line


def test_heartbeat_data() -> None:
    assert heartbeat_data(stats().snapshot(NOW), 42) == {
        1: 42,
        2: [1, 2, 3],
        3: [10, 20, 30],
        4: [0, 1, 2],
        5: 9_000,
        6: {"bad_mac": 2},
        7: 1,
        8: 7,
        9: {"replay": 1},
    }
