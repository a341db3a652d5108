"""The pipeline (agent/gateway/pipeline.py) and the receipts (agent/gateway/receipts.py) with small fakes: the
committer's inbox is a list, the sources are routes that record what they are given, and the
committer's results are built by the test. Frames are built by the firmware's own code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from agent.gateway.buffer import LEDGER_PER_DEVICE
from agent.gateway.committer import CommitResult
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.pipeline import Pipeline
from agent.gateway.planner import State, Submitted
from agent.gateway.receipts import RESEND_BURST, RESEND_PER_S, ReceiptLedger, ReceiptRouter
from agent.gateway.replay import ReplayState
from agent.gateway.signer import SealedBatch
from agent.shared import cose
from agent.shared.protocol import AAD_RECEIPT, EventType
from agent.shared.registry import Device, Registry
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above

KEY1, KEY2 = bytes(range(32)), bytes(range(1, 33))
ALARM, HEARTBEAT = 1, 128
SERIAL = "serial:/dev/ttyGE0"


class Commits:
    """The committer's inbox, as a list."""

    def __init__(self) -> None:
        self.items: list[Submitted] = []
        self.groups: list[tuple[list[Submitted], list[tuple[str, int, int]]]] = []

    def submit(self, item: Submitted) -> None:
        self.items.append(item)

    def submit_group(self, items: list[Submitted], band_rows: list[tuple[str, int, int]]) -> None:
        self.groups.append((items, band_rows))


class Rig:
    def __init__(
        self,
        ledger: dict[tuple[str, int, int], int] | None = None,
        buffer: State | None = None,
        replay: dict[str, ReplayState] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.registry = Registry(
            [Device("AP-0001", "alarm_post", KEY1, "v", "hall"), Device("AP-0002", "alarm_post", KEY2, "v", "bar")]
        )
        self.router = ReceiptRouter("GW-T", self.registry)
        self.sent: dict[str, list[tuple[str, dict[int, int]]]] = {"mqtt": [], SERIAL: []}
        self.router.register("mqtt", self.route("mqtt"), default=True)
        self.router.register(SERIAL, self.route(SERIAL))
        if clock is None:
            self.ledger = ReceiptLedger(dict(ledger or {}), self.router, self.registry)
        else:
            self.ledger = ReceiptLedger(dict(ledger or {}), self.router, self.registry, clock=clock)
        self.commits = Commits()
        self.published: list[tuple[SealedBatch, int]] = []
        self.commit_times: list[float] = []
        self.pipeline = Pipeline(
            "GW-T",
            FrameVerifier(self.registry),
            replay=dict(replay or {}),
            ledger=self.ledger,
            receipts=self.router,
            commits=self.commits,
            publish=lambda batch, oldest: self.published.append((batch, oldest)),
            epoch=1000,
            buffer=buffer,
            observe_commit=self.commit_times.append,
        )
        self.acked: list[int] = []

    def route(self, name: str) -> Callable[[str, bytes], None]:
        def send(device: str, message: bytes) -> None:
            key = self.registry.get(device)
            assert key is not None
            mac0 = cose.mac0_parse(message)
            assert mac0.kid == b"GW-T" and mac0.verify(key.key, AAD_RECEIPT), "a receipt under the device key"
            self.sent[name].append((device, cbor2.loads(mac0.payload)))

        return send

    def ingest(self, seq: int, typ: int = ALARM, device: str = "AP-0001", source: str = "mqtt", **kw: Any) -> bool:
        key = kw.pop("key", KEY1 if device == "AP-0001" else KEY2)
        flags = kw.pop("flags", 1 if typ == ALARM else 0)
        frame = fwframe.build(key, device, 1, seq, typ, 0, {}, flags)
        return self.pipeline.ingest(frame, kw.pop("topic", device), lambda: self.acked.append(seq), source)

    def receipts(self, source: str = "mqtt") -> list[tuple[str, int, int]]:
        """(device, seq, kind) of each receipt sent on `source`, in order."""
        return [(d, p[2], p[3]) for d, p in self.sent[source]]

    def commit(self, **kw: Any) -> None:
        items, self.commits.items = self.commits.items, []
        self.pipeline.on_commit(CommitResult(committed=items, **kw))


def test_accepted_frames_are_acked_and_receipted_only_once_durable() -> None:
    rig = Rig()
    assert rig.ingest(1) and rig.ingest(2, HEARTBEAT)
    assert [s.event.seq for s in rig.commits.items] == [1, 2] and rig.commits.items[0].replay_row == (1, 1, 0, b"")
    assert rig.acked == [] and rig.receipts() == [], "nothing before the commit"
    assert rig.pipeline.counters.accepted == 2
    rig.commit(backlog=(1, 0, 1), backlog_bytes=(30, 0, 40), oldest_ms=5, evicted=(0, 0, 7), commit_ms=3.0)
    assert rig.acked == [1, 2]
    assert rig.receipts() == [("AP-0001", 1, 1)], "receipt 1 for the event that asked"
    c = rig.pipeline.counters
    assert (c.committed, c.backlog, c.backlog_bytes) == (2, (1, 0, 1), (30, 0, 40))
    assert (c.backlog_oldest_ms, c.evicted) == (5, (0, 0, 7))
    assert rig.commit_times == [0.003]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"key": KEY2}, "bad_mac"),
        ({"device": "AP-0404", "key": KEY1}, "unknown_device"),
        ({"topic": "AP-0002"}, "topic_mismatch"),
    ],
)
def test_rejected_frames_are_counted_by_reason_and_released_at_once(kw: dict[str, Any], reason: str) -> None:
    rig = Rig()
    assert not rig.ingest(1, **kw)
    assert rig.acked == [1], "the source's ack is released at once"
    assert rig.commits.items == [] and rig.pipeline.counters.rejected == {reason: 1}
    assert not rig.pipeline.ingest(b"\x00" * 10, "AP-0001", lambda: rig.acked.append(0), "mqtt")
    assert rig.pipeline.counters.rejected[reason] == 1 and sum(rig.pipeline.counters.rejected.values()) == 2


def test_a_replay_is_rejected_and_told_what_its_event_earned() -> None:
    # as a restart finds the buffer: event 3 seen and delivered
    seen = ReplayState()
    seen.accept(1, 3)
    rig = Rig(ledger={("AP-0001", 1, 3): 2}, replay={"AP-0001": seen})
    assert not rig.ingest(3)
    assert rig.receipts() == [("AP-0001", 3, 2)], "delivered: receipt 2 again"
    assert rig.ingest(4)
    assert not rig.ingest(4), "pending: no receipt yet"
    assert rig.receipts() == [("AP-0001", 3, 2)]
    rig.commit()
    assert rig.receipts()[-1] == ("AP-0001", 4, 1)
    assert not rig.ingest(4), "stored: receipt 1 again"
    assert rig.receipts()[-1] == ("AP-0001", 4, 1)
    rig.ledger.delivered(SealedBatch(1, 1, b"", b"", 1, 0, (("AP-0001", 1, 4),)))
    assert not rig.ingest(4)
    assert rig.receipts()[-2:] == [("AP-0001", 4, 2), ("AP-0001", 4, 2)], "delivered, then again on the replay"
    assert not rig.ingest(4, HEARTBEAT, flags=0), "no receipts asked: none given"
    assert len(rig.receipts()) == 5
    assert rig.pipeline.counters.rejected == {"replay": 5}
    assert rig.commits.items == [], "a replay is never committed"
    assert rig.acked == [3, 4, 4, 4, 4, 4], "each rejection released at once, the accepted one at its commit"


def test_receipts_go_back_the_way_each_device_last_spoke() -> None:
    rig = Rig()
    rig.ingest(1, source=SERIAL)
    rig.ingest(1, device="AP-0002")
    rig.commit()
    assert rig.receipts(SERIAL) == [("AP-0001", 1, 1)] and rig.receipts() == [("AP-0002", 1, 1)]
    rig.ingest(2)  # the post is back on the local broker
    rig.commit()
    assert rig.receipts()[-1] == ("AP-0001", 2, 1) and len(rig.receipts(SERIAL)) == 1
    rig.router.send("AP-0001", 1, 1, 3)  # central's ACK follows the device too
    assert rig.receipts()[-1] == ("AP-0001", 1, 3)
    rig.router.send("AP-0404", 1, 1, 3)  # not registered (revoked): nothing
    assert rig.router.counters.sent == 4


def test_sealed_batches_are_published_and_evicted_events_get_receipt_4() -> None:
    rig = Rig()
    b1, b2 = (SealedBatch(1, seq, b"x", b"h", 1, 2, ()) for seq in (1, 2))
    rig.commit(sealed=[b1, b2], sealed_oldest=[10, 20], dropped=[("AP-0002", 1, 9)])
    assert rig.published == [(b1, 10), (b2, 20)] and rig.pipeline.counters.batches_sealed == 2
    assert rig.receipts() == [("AP-0002", 9, 4)] and rig.ledger.entries[("AP-0002", 1, 9)] == 4


def test_a_failed_commit_is_reported_and_changes_nothing_else() -> None:
    rig = Rig(buffer=State(backlog=(0, 0, 5), evicted=(0, 1, 2), gw_seq=7))
    c = rig.pipeline.counters
    assert (c.backlog, c.evicted) == ((0, 0, 5), (0, 1, 2)), "the buffer as recovered until the first round"
    rig.ingest(1)
    items = list(rig.commits.items)
    rig.pipeline.on_commit(CommitResult(error="database or disk is full"))
    assert c.store_error == "database or disk is full" and rig.acked == [] and rig.receipts() == []
    rig.pipeline.on_commit(CommitResult(committed=items))
    assert c.store_error is None and rig.acked == [1]


def test_the_gateways_own_events_continue_its_numbering() -> None:
    rig = Rig(buffer=State(gw_seq=7))
    rig.pipeline.gateway_event(EventType.GATEWAY_HEARTBEAT, {1: 0})
    rig.pipeline.band_events([("WB-1", 3, {1: "r"}), ("WB-1", 4, {1: "r"})], [("WB-1", 5, 6)])
    (hb,) = rig.commits.items
    assert (hb.event.device, hb.event.boot, hb.event.seq, hb.replay_row) == ("GW-T", 1000, 8, None)
    ((alerts, rows),) = rig.commits.groups
    assert [(s.event.device, s.event.seq) for s in alerts] == [("WB-1", 9), ("WB-1", 10)] and rows == [("WB-1", 5, 6)]
    assert rig.pipeline.counters.band_events == 2


def test_receipts_for_replays_are_rate_limited_per_device() -> None:
    now = [1000.0]
    rig = Rig(ledger={("AP-0001", 1, 3): 2, ("AP-0002", 1, 3): 2}, clock=lambda: now[0])
    for device in ("AP-0001", "AP-0002"):
        seen = rig.pipeline.replay.setdefault(device, ReplayState())
        seen.accept(1, 3)
    # 100,000 replays of one captured frame within a second: the burst, then nothing
    for _ in range(100_000):
        rig.ingest(3)
    assert len(rig.receipts()) == RESEND_BURST
    assert rig.router.counters.resends_limited == 100_000 - RESEND_BURST
    assert rig.pipeline.counters.rejected == {"replay": 100_000}
    # the other device is not affected: its own budget
    assert not rig.ingest(3, device="AP-0002")
    assert rig.receipts()[-1] == ("AP-0002", 3, 2)
    # the budget refills at RESEND_PER_S, never above the burst
    now[0] += 10.0
    for _ in range(1000):
        rig.ingest(3)
    assert len(rig.receipts()) == RESEND_BURST + 1 + int(10 * RESEND_PER_S)
    now[0] += 3600.0
    for _ in range(1000):
        rig.ingest(3)
    assert len(rig.receipts()) == 2 * RESEND_BURST + 1 + int(10 * RESEND_PER_S)


def test_the_ledger_mirror_stays_bounded() -> None:
    rig = Rig()
    n = LEDGER_PER_DEVICE * 2 * 2 + 10
    keys = tuple(("AP-0001", 1, seq) for seq in range(1, n + 1))
    for key in keys:
        rig.ledger.accepted(key)
    rig.ledger.delivered(SealedBatch(1, 1, b"", b"", n, 0, keys))
    assert len(rig.ledger.entries) == LEDGER_PER_DEVICE, "the newest of a device are kept"
    assert min(rig.ledger.entries) == keys[-LEDGER_PER_DEVICE]


def test_a_route_registered_twice_is_refused() -> None:
    rig = Rig()
    with pytest.raises(ValueError, match="twice"):
        rig.router.register(SERIAL, rig.route(SERIAL))
