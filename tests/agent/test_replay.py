"""ReplayState against a model that remembers every accepted (boot, seq)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gateway.replay import WINDOW, ReplayState


def test_basic_window() -> None:
    st_ = ReplayState()
    for seq in (1, 2, 5):
        assert st_.is_new(1, seq)
        st_.accept(1, seq)
    assert not st_.is_new(1, 5) and not st_.is_new(1, 2)
    assert st_.is_new(1, 3) and st_.is_new(1, 4)
    st_.accept(1, 3)
    assert not st_.is_new(1, 3)
    st_.accept(1, 100)
    assert not st_.is_new(1, 100 - WINDOW - 1), "older than the window is refused"
    assert st_.is_new(1, 100 - WINDOW)
    assert st_.is_new(2, 1) and not st_.is_new(0, 999)
    st_.accept(2, 1)
    assert not st_.is_new(1, 101), "an older boot is refused once a newer one was seen"


def test_row_roundtrip_with_top_bit() -> None:
    st_ = ReplayState(7, 1000, (1 << 63) | 5)
    row = st_.as_row()
    assert -(2**63) <= row[2] < 2**63
    back = ReplayState.from_row(*row)
    assert (back.boot, back.seq, back.bitmap) == (7, 1000, (1 << 63) | 5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 200)), max_size=300))
def test_matches_model(frames: list[tuple[int, int]]) -> None:
    state = ReplayState()
    accepted: set[tuple[int, int]] = set()
    for boot, seq in frames:
        new = state.is_new(boot, seq)
        # never accept twice; never accept an older boot; within the window, accept the unseen
        if (boot, seq) in accepted:
            assert not new
        top_boot = max((b for b, _ in accepted), default=0)
        if boot < top_boot:
            assert not new
        if boot > top_boot:
            assert new
        if boot == top_boot and new is False and (boot, seq) not in accepted:
            top_seq = max(s for b, s in accepted if b == boot)
            assert seq <= top_seq - WINDOW
        if new:
            state.accept(boot, seq)
            accepted.add((boot, seq))
        row = ReplayState.from_row(*state.as_row())
        assert (row.boot, row.seq, row.bitmap) == (state.boot, state.seq, state.bitmap)
