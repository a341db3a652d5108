"""ReplayState against a model that remembers every accepted (boot, seq) and the gaps it closed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gateway import replay
from agent.gateway.replay import MAX_GAPS, WINDOW, ReplayState
from tests.seeds import seeded

FIRST = 1 << 32 | 1  # (boot 1, seq 1): the lowest key a frame can have


def key(boot: int, seq: int) -> int:
    return boot << 32 | seq


class Model:
    """The record as a plain set: accepted keys, and everything at or below `closed` counts as seen."""

    def __init__(self, max_gaps: int) -> None:
        self.accepted: set[int] = set()
        self.closed = 0
        self.max_gaps = max_gaps

    def is_new(self, k: int) -> bool:
        return k > self.closed and k not in self.accepted

    def accept(self, k: int) -> None:
        self.accepted.add(k)
        while len(self.gaps()) > self.max_gaps:
            self.closed = self.gaps()[0][1]

    def low(self) -> int:
        top = max(self.accepted)
        boot, seq = top >> 32, top & 0xFFFFFFFF
        return key(boot, max(1, seq - WINDOW))

    def gaps(self) -> list[tuple[int, int]]:
        """Maximal runs of keys never accepted, below the window, above what was closed."""
        low = self.low()
        start = max(FIRST, self.closed + 1)
        runs = []
        for k in [*sorted(a for a in self.accepted if start <= a < low), low]:
            if start < k:
                runs.append((start, k - 1))
            start = k + 1
        return runs


def check_against_model(frames: list[tuple[int, int]], max_gaps: int) -> None:
    state = ReplayState()
    model = Model(max_gaps)
    for boot, seq in frames:
        k = key(boot, seq)
        assert state.is_new(boot, seq) == model.is_new(k), (boot, seq)
        if model.is_new(k):
            state.accept(boot, seq)
            model.accept(k)
            assert state.gaps == model.gaps()
            assert len(state.gaps) <= max_gaps
        back = ReplayState.from_row(*state.as_row())
        assert (back.boot, back.seq, back.bitmap, back.gaps) == (state.boot, state.seq, state.bitmap, state.gaps)


frames_strategy = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 300)), max_size=300)


@seeded
@settings(max_examples=300, deadline=None)
@given(frames_strategy)
def test_matches_model(frames: list[tuple[int, int]]) -> None:
    check_against_model(frames, MAX_GAPS)


@seeded
@settings(max_examples=300, deadline=None)
@given(frames_strategy)
def test_matches_model_when_gaps_close(frames: list[tuple[int, int]]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay, "MAX_GAPS", 3)
        check_against_model(frames, 3)


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
    assert st_.is_new(1, 100 - WINDOW)
    assert st_.is_new(2, 1) and not st_.is_new(0, 999)
    st_.accept(2, 1)


def test_far_behind_frame_accepted_exactly_once() -> None:
    st_ = ReplayState()
    st_.accept(1, 1)
    # 2 is lost; 3..500 arrive: 2 falls out of the window and stays acceptable, as a gap
    for seq in range(3, 501):
        st_.accept(1, seq)
    assert st_.gaps == [(key(1, 2), key(1, 2))]
    assert st_.is_new(1, 2)
    st_.accept(1, 2)
    assert not st_.is_new(1, 2) and st_.gaps == []
    # a new boot: the tail of boot 1 that was never sent stays acceptable, boot 1's frames seen do not
    st_.accept(2, 1)
    assert st_.is_new(1, 501) and st_.is_new(1, 0xFFFFFFFF)
    assert not any(st_.is_new(1, s) for s in range(1, 501))
    st_.accept(1, 501)
    assert not st_.is_new(1, 501) and st_.is_new(1, 502)


def test_in_order_traffic_opens_no_gap() -> None:
    st_ = ReplayState()
    blob = st_.gaps_blob
    for seq in range(1, 10_000):
        st_.accept(1, seq)
    assert st_.gaps == [] and st_.gaps_blob is blob, "the hot path never rebuilds the gaps"


def test_adversarial_order_stays_bounded(seed: int) -> None:
    # every other number of a long run, then the rest in random order: the worst case for ranges
    rng = random.Random(seed)
    st_ = ReplayState()
    seqs = list(range(1, 20_001, 2))
    for s in seqs:
        st_.accept(1, s)
        assert len(st_.gaps) <= MAX_GAPS
    assert len(st_.gaps_blob) <= MAX_GAPS * 16
    accepted = set(seqs)
    rest = list(range(2, 20_001, 2))
    rng.shuffle(rest)
    for s in rest:
        if st_.is_new(1, s):
            st_.accept(1, s)
            assert s not in accepted
            accepted.add(s)
        assert len(st_.gaps) <= MAX_GAPS
    # the newest holes (the last MAX_GAPS below the window, and the window) were all filled
    assert all(s in accepted for s in range(20_000 - WINDOW - 2 * MAX_GAPS, 20_001))
    assert not any(st_.is_new(1, s) for s in range(1, 20_001))


def test_row_roundtrip_with_top_bit() -> None:
    st_ = ReplayState(7, 1000, (1 << 63) | 5)
    row = st_.as_row()
    assert -(2**63) <= row[2] < 2**63
    back = ReplayState.from_row(*row)
    assert (back.boot, back.seq, back.bitmap) == (7, 1000, (1 << 63) | 5)


@pytest.mark.parametrize(
    "blob",
    [
        b"\x00" * 15,  # not whole ranges
        bytes(16 * (MAX_GAPS + 1)),  # more than the bound
        key(1, 5).to_bytes(8, "big") + key(1, 4).to_bytes(8, "big"),  # lo > hi
        key(7, 999).to_bytes(8, "big") * 2,  # inside the window, not below it
        (key(1, 1).to_bytes(8, "big") + key(1, 9).to_bytes(8, "big")) * 2,  # overlapping
    ],
)
def test_unusable_gaps_count_as_seen(blob: bytes) -> None:
    back = ReplayState.from_row(7, 1000, 0, blob)
    assert back.gaps == [] and not back.is_new(1, 5)
