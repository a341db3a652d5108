"""FrameVerifier: every rejection reason of docs/protocol.md §6, and what passes."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from agent.gateway.frame_verifier import FrameVerifier
from agent.shared import cose
from agent.shared.errors import WireError
from agent.shared.protocol import AAD_FRAME, priority_of
from agent.shared.registry import Registry

KID = b"AP-0001"


def _frame(key: bytes, payload: Any, kid: bytes = KID, canonical: bool = True) -> bytes:
    blob = payload if isinstance(payload, bytes) else cbor2.dumps(payload, canonical=canonical)
    return cose.mac0_encode(key, kid, blob, AAD_FRAME)


def _reason(verifier: FrameVerifier, data: bytes, topic: str | None = "AP-0001") -> str:
    with pytest.raises(WireError) as exc:
        verifier.verify(data, topic, 1)
    return exc.value.reason


def test_vector_frames_accepted(registry: Registry, cose_vectors: Any) -> None:
    v = FrameVerifier(registry)
    ev = v.verify(bytes.fromhex(cose_vectors["frames"][0]["hex"]), "AP-0001", 99)
    assert (ev.device, ev.boot, ev.seq, ev.type, ev.prio, ev.time, ev.flags) == ("AP-0001", 3, 1, 1, 0, 123456, 1)
    assert ev.received == 99 and ev.wants_receipts
    assert cbor2.loads(ev.encoded) == {1: "AP-0001", 2: 3, 3: 1, 4: 1, 5: 0, 6: 123456, 7: 99, 8: {}, 9: ev.tag, 10: 1}
    hb = v.verify(bytes.fromhex(cose_vectors["frames"][2]["hex"]), None, 5)
    assert hb.prio == 2 and not hb.wants_receipts and 10 not in cbor2.loads(hb.encoded)


def test_rejection_reasons(registry: Registry, cose_vectors: Any) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    v = FrameVerifier(registry, max_frame=256)
    good = {1: 1, 2: 1, 3: 1, 4: 0, 5: {}}
    assert _reason(v, b"\x00" * 257) == "oversize"
    assert _reason(v, b"\xff\xfe") == "malformed"
    assert _reason(v, _frame(key, good, kid=b"NOBODY")) == "unknown_device"
    assert _reason(v, _frame(key, good), topic="AP-0002") == "topic_mismatch"
    assert _reason(v, _frame(bytes.fromhex(cose_vectors["other_key"]), good)) == "bad_mac"
    for vec in cose_vectors["bad_frames"]:
        assert _reason(v, bytes.fromhex(vec["hex"])) in ("malformed", "bad_mac", "unknown_device"), vec["why"]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ([1, 2, 3], "not a map"),
        ({1: 1, 2: 1, 3: 1, 4: 0}, "data missing"),
        ({1: 0, 2: 1, 3: 1, 4: 0, 5: {}}, "boot 0"),
        ({1: 1, 2: 0, 3: 1, 4: 0, 5: {}}, "seq 0"),
        ({1: 2**32, 2: 1, 3: 1, 4: 0, 5: {}}, "boot above 32 bits"),
        ({1: 1, 2: 1, 3: 0, 4: 0, 5: {}}, "type 0"),
        ({1: 1, 2: 1, 3: 256, 4: 0, 5: {}}, "type 256"),
        ({1: 1, 2: 1, 3: 1, 4: -1, 5: {}}, "negative time"),
        ({1: 1, 2: 1, 3: 1, 4: 0, 5: []}, "data not a map"),
        ({1: 1, 2: 1, 3: 1, 4: 0, 5: {"a": 1}}, "text data key"),
        ({1: 1, 2: 1, 3: 1, 4: 0, 5: {}, 6: 0}, "flags present but zero"),
        ({1: 1, 2: 1, 3: 1, 4: 0, 5: {}, 7: 1}, "unknown key"),
        ({1: True, 2: 1, 3: 1, 4: 0, 5: {}}, "bool as boot"),
        ({1: 1.0, 2: 1, 3: 1, 4: 0, 5: {}}, "float as boot"),
        ({1: 1, 2: 1, 3: 1, 4: 0, 5: {1: cbor2.CBORTag(1, 5)}}, "tag (datetime) in data"),
        ({1: 1, 2: 1, 3: 1, 4: 0, 5: {1: cbor2.CBORTag(35, "a+")}}, "tag (regex) in data"),
    ],
)
def test_bad_payloads(registry: Registry, cose_vectors: Any, payload: Any, why: str) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    assert _reason(FrameVerifier(registry), _frame(key, payload)) == "bad_payload", why


def test_non_canonical_payload_rejected(registry: Registry, cose_vectors: Any) -> None:
    key = bytes.fromhex(cose_vectors["key"])
    # map keys out of order, and a non-shortest integer: both decode, neither is canonical
    unordered = bytes.fromhex("a5") + bytes.fromhex("020101010301040005a0")
    assert _reason(FrameVerifier(registry), _frame(key, unordered)) == "bad_payload"
    long_int = bytes.fromhex("a501180102010301040005a0")
    assert _reason(FrameVerifier(registry), _frame(key, long_int)) == "bad_payload"


def test_priority_ranges() -> None:
    assert [priority_of(t) for t in (1, 63, 64, 127, 128, 255)] == [0, 0, 1, 1, 2, 2]
