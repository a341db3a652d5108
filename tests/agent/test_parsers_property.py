"""Property tests for the agent's parsers of untrusted bytes: device frames, batches (at
central) and commands. Whatever the input, each one either accepts exactly what was signed or
raises its own error with a named reason; nothing else escapes. Hypothesis prints the seed and
the failing example (print_blob) when one fails.
"""

from __future__ import annotations

import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.central.batch_verifier import BatchVerifier
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.signer import Signer
from agent.shared import cose
from agent.shared.commands import parse_command
from agent.shared.errors import WireError
from agent.shared.protocol import AAD_COMMAND, ZERO_HASH
from agent.shared.registry import Device, Registry
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import cbor as fwcbor  # firmware modules, found through the path above
import frame as fwframe

KEY = bytes(range(32))
REGISTRY = Registry([Device("AP-0001", "alarm_post", KEY, "v", "z")])
GOOD = fwframe.build(KEY, "AP-0001", 3, 7, 1, 1234, {1: 2}, 1)
FRAME_REASONS = {"oversize", "malformed", "unknown_device", "topic_mismatch", "bad_mac", "bad_payload"}

GW = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
CENTRAL = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

PROPERTY = settings(max_examples=400, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 flip a byte, 1 delete, 2 insert."""
    b = bytearray(data)
    for kind, pos, value in edits:
        if not b:
            b.append(value)
            continue
        i = pos % len(b)
        if kind == 0:
            b[i] ^= value or 1
        elif kind == 1:
            del b[i]
        else:
            b.insert(i, value)
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6)


@PROPERTY
@given(edits=EDITS)
def test_mutated_frames_are_rejected_with_a_reason(edits: list[tuple[int, int, int]]) -> None:
    data = mutate(GOOD, edits)
    v = FrameVerifier(REGISTRY)
    try:
        ev = v.verify(data, "AP-0001", 0)
    except WireError as exc:
        assert exc.reason in FRAME_REASONS, exc.reason
        return
    # accepted: it must be the signed frame (an edit that undid itself, or a change outside
    # the bytes the profile allows would have been rejected)
    assert data == GOOD and (ev.boot, ev.seq) == (3, 7)


@PROPERTY
@given(data=st.binary(max_size=700))
def test_random_bytes_are_rejected_with_a_reason(data: bytes) -> None:
    try:
        FrameVerifier(REGISTRY).verify(data, "AP-0001", 0)
    except WireError as exc:
        assert exc.reason in FRAME_REASONS
    else:
        raise AssertionError("random bytes accepted as a frame")


@PROPERTY
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.integers(0, 10), c, max_size=4),
        max_leaves=12,
    )
)
def test_any_mac_valid_payload_is_checked_field_by_field(body: Any) -> None:
    # a frame whose MAC is right (the device key holder) but whose payload is anything
    try:
        payload = fwcbor.dumps(body)
    except (fwcbor.CBORError, TypeError, ValueError):
        return
    data = fwframe.cose.mac0_encode(KEY, b"AP-0001", payload, fwframe.AAD_FRAME)
    try:
        ev = FrameVerifier(REGISTRY).verify(data, "AP-0001", 0)
    except WireError as exc:
        assert exc.reason in FRAME_REASONS
        return
    assert isinstance(ev.boot, int) and 1 <= ev.seq <= 0xFFFFFFFF and 1 <= ev.type <= 255


def _batch() -> bytes:
    signer = Signer(GW, "GW-1", 1, 0, ZERO_HASH)
    ev = FrameVerifier(REGISTRY).verify(GOOD, "AP-0001", 5)
    return signer.seal([ev.encoded], 10, 0).blob


BATCH = _batch()
KNOWN_KINDS = {
    "event",
    "bad_signature",
    "unknown_signer",
    "malformed",
    "duplicate_batch",
    "gap",
    "new_epoch",
    "reordered",
    "fork",
    "chain_break",
    "stale_epoch",
    "audit_failed",
    "duplicate_event",
}


@PROPERTY
@given(edits=EDITS)
def test_mutated_batches_never_pass_and_never_crash_the_verifier(edits: list[tuple[int, int, int]]) -> None:
    data = mutate(BATCH, edits)
    v = BatchVerifier({b"GW-1": GW.public_key()}, REGISTRY, clock=lambda: 100.0)
    records = v.feed("venues/v/gateways/GW-1/batches", data)
    kinds = {r["kind"] for r in records}
    assert kinds <= KNOWN_KINDS, kinds
    if "event" in kinds:
        assert data == BATCH


def _command(payload: dict[int, Any]) -> bytes:
    protected = cose.protected_header(cose.ALG_EDDSA, b"central")
    return cose.sign1_encode(CENTRAL, protected, fwcbor.dumps(payload), AAD_COMMAND)


COMMAND = _command({1: "GW-1", 2: 5, 3: 1000, 4: 2000, 5: 2, 6: {1: "AP-0001"}})


@PROPERTY
@given(edits=EDITS)
def test_mutated_commands_are_rejected_with_a_reason(edits: list[tuple[int, int, int]]) -> None:
    data = mutate(COMMAND, edits)
    try:
        cmd = parse_command(data, {b"central": CENTRAL.public_key()}, "GW-1", 1500, 0)
    except WireError as exc:
        assert exc.reason and " " not in exc.reason
        return
    assert data == COMMAND and cmd.seq == 5


def test_the_unmutated_inputs_are_accepted() -> None:
    # the properties above mean something only if the originals pass
    assert FrameVerifier(REGISTRY).verify(GOOD, "AP-0001", 0).seq == 7
    v = BatchVerifier({b"GW-1": GW.public_key()}, REGISTRY, clock=lambda: 100.0)
    assert [r["kind"] for r in v.feed("venues/v/gateways/GW-1/batches", BATCH)] == ["event"]
    assert parse_command(COMMAND, {b"central": CENTRAL.public_key()}, "GW-1", 1500, 0).seq == 5
