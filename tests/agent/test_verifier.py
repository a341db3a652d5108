"""The central verifier's chain and dedupe checks, fed batches built by the agent's Signer."""

from __future__ import annotations

from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.central.batch_verifier import BatchVerifier
from agent.gateway.signer import SealedBatch, Signer
from agent.shared import cose
from agent.shared.frames import Event
from agent.shared.protocol import AAD_FRAME, ZERO_HASH
from agent.shared.registry import Device, Registry

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DEVICE_KEY = bytes(range(100, 132))
TOPIC = "venues/v/gateways/GW-1/batches"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_event(seq: int, typ: int = 1, device: str = "AP-1") -> Event:
    payload = cbor2.dumps({1: 1, 2: seq, 3: typ, 4: seq, 5: {1: seq}}, canonical=True)
    tag = cbor2.loads(cose.mac0_encode(DEVICE_KEY, device.encode(), payload, AAD_FRAME)).value[3]
    return Event(device, 1, seq, typ, seq, 5, {1: seq}, tag)


def batches(n: int, epoch: int = 1, per: int = 2) -> list[SealedBatch]:
    signer = Signer(KEY, "GW-1", epoch, 0, ZERO_HASH)
    return [signer.seal([make_event(i * per + j + 1).encoded for j in range(per)], 7, 0) for i in range(n)]


def kinds(records: list[dict[str, Any]]) -> list[str]:
    return [r["kind"] for r in records]


def verifier(clock: Clock | None = None, registry: Registry | None = None) -> BatchVerifier:
    return BatchVerifier({b"GW-1": KEY.public_key()}, registry, gap_grace_s=5.0, clock=clock or Clock())


def test_in_order_chain_prints_each_event_once() -> None:
    v = verifier()
    out = [r for b in batches(3) for r in v.feed(TOPIC, b.blob)]
    assert kinds(out) == ["event"] * 6
    assert [r["seq"] for r in out] == [1, 2, 3, 4, 5, 6]
    assert out[0]["type_name"] == "ALARM" and out[0]["data"] == {"1": 1}
    assert v.integrity_ok and kinds(v.finish()) == ["summary"]


def test_duplicate_batch_and_duplicate_events() -> None:
    v = verifier()
    b = batches(2)
    v.feed(TOPIC, b[0].blob)
    assert kinds(v.feed(TOPIC, b[0].blob)) == ["duplicate_batch"]
    # the same events re-sealed in a later batch (a gateway that lost its buffer mid-flight)
    signer = Signer(KEY, "GW-1", 1, 1, b[0].hash)
    again = signer.seal([make_event(1).encoded, make_event(9).encoded], 7, 0)
    out = v.feed(TOPIC, again.blob)
    assert [r.get("seq") for r in out if r["kind"] == "event"] == [9]
    assert v.counts["duplicate_event"] == 1 and v.integrity_ok


def test_reordered_batches_fill_the_gap() -> None:
    clock = Clock()
    v = verifier(clock)
    b = batches(3)
    v.feed(TOPIC, b[0].blob)
    assert kinds(v.feed(TOPIC, b[2].blob)) == ["event", "event"], "events of a later batch are not held back"
    clock.t += 1
    assert kinds(v.feed(TOPIC, b[1].blob)) == ["reordered", "event", "event"]
    clock.t += 10
    assert v.tick() == [] and v.integrity_ok


def test_gap_reported_after_grace() -> None:
    clock = Clock()
    v = verifier(clock)
    b = batches(4)
    v.feed(TOPIC, b[0].blob)
    v.feed(TOPIC, b[3].blob)
    assert v.tick() == []
    clock.t += 6
    assert v.tick() == [{"kind": "gap", "gateway": "GW-1", "epoch": 1, "missing": [2, 3]}]
    assert v.tick() == [], "reported once"
    assert not v.integrity_ok


def test_fork_and_chain_break() -> None:
    v = verifier()
    b = batches(2)
    v.feed(TOPIC, b[0].blob)
    forged = Signer(KEY, "GW-1", 1, 0, ZERO_HASH).seal([make_event(50).encoded], 8, 0)
    assert kinds(v.feed(TOPIC, forged.blob)) == ["fork"]
    broken = Signer(KEY, "GW-1", 1, 1, b"\x01" * 32).seal([make_event(60).encoded], 8, 0)
    assert kinds(v.feed(TOPIC, broken.blob))[0] == "chain_break"
    assert not v.integrity_ok


def test_chain_break_detected_when_the_later_batch_came_first() -> None:
    v = verifier()
    b = batches(1)
    wrong_next = Signer(KEY, "GW-1", 1, 1, b"\x02" * 32).seal([make_event(9).encoded], 8, 0)
    v.feed(TOPIC, wrong_next.blob)
    assert "chain_break" in kinds(v.feed(TOPIC, b[0].blob))


def test_new_epoch_reports_open_gaps() -> None:
    v = verifier()
    old = batches(3)
    v.feed(TOPIC, old[0].blob)
    v.feed(TOPIC, old[2].blob)
    new = Signer(KEY, "GW-1", 2, 0, ZERO_HASH).seal([make_event(100).encoded], 9, 0)
    assert kinds(v.feed(TOPIC, new.blob)) == ["gap", "new_epoch", "event"]


def test_bad_signature_unknown_signer_malformed() -> None:
    v = verifier()
    blob = bytearray(batches(1)[0].blob)
    blob[-3] ^= 1
    assert kinds(v.feed(TOPIC, bytes(blob))) == ["bad_signature"]
    other = Ed25519PrivateKey.generate()
    stranger = Signer(other, "GW-2", 1, 0, ZERO_HASH).seal([make_event(1).encoded], 1, 0)
    assert kinds(v.feed(TOPIC, stranger.blob)) == ["unknown_signer"]
    impostor = Signer(other, "GW-1", 1, 0, ZERO_HASH).seal([make_event(1).encoded], 1, 0)
    assert kinds(v.feed(TOPIC, impostor.blob)) == ["bad_signature"], "GW-1's kid with another key"
    assert kinds(v.feed(TOPIC, b"\x00garbage")) == ["malformed"]
    not_events = Signer(KEY, "GW-1", 1, 0, ZERO_HASH)
    raw = not_events.payload(1, ZERO_HASH, [cbor2.dumps(5)], 1)
    blob2 = cose.sign1_encode(KEY, not_events.protected, raw, b"ge/1/batch")
    assert kinds(v.feed(TOPIC, blob2)) == ["malformed"]
    assert v.counts["events"] == 0


def test_audit_rechecks_device_macs() -> None:
    reg = Registry([Device("AP-1", "alarm_post", DEVICE_KEY, "v", "z")])
    v = verifier(registry=reg)
    assert kinds(v.feed(TOPIC, batches(1)[0].blob)) == ["event", "event"]
    forged = Event("AP-1", 1, 77, 1, 0, 5, {}, b"\x00" * 8)
    batch = Signer(KEY, "GW-1", 1, 1, batches(1)[0].hash).seal([forged.encoded], 1, 0)
    assert kinds(v.feed(TOPIC, batch.blob)) == ["audit_failed"]
    assert not v.integrity_ok


def test_a_verifier_started_after_the_gateway_joins_its_chain_without_a_false_gap() -> None:
    clock = Clock()  # the verifier starts at t=1000; the chain's epoch (1) is long before
    v = verifier(clock)
    b = batches(6)
    out = v.feed(TOPIC, b[3].blob)
    assert kinds(out) == ["joined", "event", "event"]
    assert out[0] == {"kind": "joined", "gateway": "GW-1", "epoch": 1, "seq": 4}
    assert kinds(v.feed(TOPIC, b[5].blob)) == ["event", "event"]
    clock.t += 1
    assert kinds(v.feed(TOPIC, b[4].blob)) == ["reordered", "event", "event"], "after the join, gaps count"
    # a batch from before the join that arrives late (published concurrently) is no problem
    assert kinds(v.feed(TOPIC, b[2].blob)) == ["event", "event"]
    clock.t += 10
    assert v.tick() == []
    assert v.integrity_ok, v.counts


def test_after_joining_a_missing_batch_is_still_a_gap() -> None:
    clock = Clock()
    v = verifier(clock)
    b = batches(6)
    v.feed(TOPIC, b[2].blob)
    v.feed(TOPIC, b[5].blob)
    clock.t += 6
    assert v.tick() == [{"kind": "gap", "gateway": "GW-1", "epoch": 1, "missing": [4, 5]}]
    assert not v.integrity_ok


def test_a_chain_that_began_while_the_verifier_watched_must_be_complete() -> None:
    clock = Clock()
    v = verifier(clock)
    # the gateway's chain began 5 min after the verifier started (more than JOIN_SKEW_S of
    # clock difference): batches 1 and 2 were sent while it watched, so their absence is a gap
    b = batches(3, epoch=int(clock.t) + 300)
    assert kinds(v.feed(TOPIC, b[2].blob)) == ["event", "event"]
    clock.t += 6
    assert v.tick() == [{"kind": "gap", "gateway": "GW-1", "epoch": 1300, "missing": [1, 2]}]


def test_events_carry_their_venue_and_reference() -> None:
    v = verifier()
    out = v.feed("venues/rosewood/gateways/GW-1/batches", batches(1)[0].blob)
    assert [(r["venue"], r["ref"]) for r in out] == [("rosewood", "AP-1/1/1"), ("rosewood", "AP-1/1/2")]
