"""Central's feed: only events the verifier accepts, from a gateway at its own venue, notify."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.central.batch_verifier import BatchVerifier
from agent.central.notify_feed import CentralFeed, topic_parts
from agent.gateway.signer import Signer
from agent.notify.notifier import Notifier
from agent.shared.protocol import ZERO_HASH
from tests.notify.conftest import deliver_due
from tests.notify.receiver import Receiver


def sos(seq: int, received_ms: int, band: str = "WB-0001") -> bytes:
    return cbor2.dumps(
        {1: band, 2: 1_700_000_000, 3: seq, 4: 3, 5: 0, 6: seq, 7: received_ms,
         8: {1: "Room 4", 2: "Lounge", 3: {"event_id": seq}}, 9: b""},
        canonical=True,
    )  # fmt: skip


def feed_for(notifier: Notifier, key: Ed25519PrivateKey) -> CentralFeed:
    verifier = BatchVerifier({b"GW-1": key.public_key()})
    venues = {"GW-1": "rosewood"}
    return CentralFeed(notifier, verifier, "127.0.0.1", 1, venues=venues.get)


async def test_verified_events_notify_once_and_forgeries_never(notifier: Notifier, rx: Receiver) -> None:
    key = Ed25519PrivateKey.generate()
    feed = feed_for(notifier, key)
    now = notifier._now_ms()
    sealer = Signer(key, "GW-1", 1_700_000_000, 0, ZERO_HASH)
    good = sealer.seal([sos(1, now)], now, 0).blob
    topic = "venues/rosewood/gateways/GW-1/batches"
    assert feed.handle(topic, good) == 1
    assert feed.handle(topic, good) == 0  # the same batch again (the uplink resends): nothing new
    # a batch signed by another key, and one with a flipped byte
    forger = Signer(Ed25519PrivateKey.generate(), "GW-1", 1_700_000_000, 1, ZERO_HASH)
    assert feed.handle(topic, forger.seal([sos(2, now)], now, 0).blob) == 0
    tampered = bytearray(sealer.seal([sos(3, now)], now, 0).blob)
    tampered[-70] ^= 1
    assert feed.handle(topic, bytes(tampered)) == 0
    await deliver_due(notifier)
    assert len(rx.at("li-wei")) == 1
    assert notifier.counts["feed_bad_signature"] == 2


async def test_a_gateway_cannot_speak_for_another_venue(notifier: Notifier, rx: Receiver) -> None:
    key = Ed25519PrivateKey.generate()
    feed = feed_for(notifier, key)
    now = notifier._now_ms()
    blob = Signer(key, "GW-1", 1_700_000_000, 0, ZERO_HASH).seal([sos(1, now)], now, 0).blob
    assert feed.handle("venues/elsewhere/gateways/GW-1/batches", blob) == 0  # GW-1 is at rosewood
    assert feed.handle("venues/rosewood/gateways/GW-2/batches", blob) == 0  # the topic names another
    assert feed.handle("venues/rosewood/gateways/GW-1/status", blob) == 0
    assert notifier.counts["feed_wrong_venue"] == 1 and notifier.counts["feed_wrong_gateway"] == 1
    assert notifier.counts["feed_bad_topic"] == 1
    assert await deliver_due(notifier) == 0
    # none of these took the place of the batch on its right topic
    assert feed.handle("venues/rosewood/gateways/GW-1/batches", blob) == 1


def test_topic_parts() -> None:
    assert topic_parts("venues/v-1/gateways/GW.1/batches") == ("v-1", "GW.1")
    assert topic_parts("venues/v 1/gateways/GW/batches") is None
    assert topic_parts("venues/v/gateways/GW/batches/x") is None
