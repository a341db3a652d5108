"""Wristband advert resolution at the gateway (agent/gateway/wristbands, docs/protocol.md §10.4).

Adverts are built by the cryptography-based reference in tests/vectors/wristband.py, not by
the code under test; the vectors in wristband.json pin the bytes. Restarts use a real SQLite
buffer (agent/gateway/buffer.py). The property tests run from the session's seed (tests/seeds.py: a
failure names GE_SEED=<n>, which replays it).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.gateway.buffer import Store
from agent.gateway.wristbands import advert as adv
from agent.gateway.wristbands.resolver import BandKey, BandResolver
from tests.seeds import seeded
from tests.vectors import wristband as ref

ROOT = ref.ROOT
T0 = 1_700_000_000
PROPERTY = settings(max_examples=300, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def wristband_vectors() -> Any:
    return json.loads((Path(ref.__file__).parent / "wristband.json").read_text(encoding="utf-8"))


def status(flags: int = adv.WORN, battery: int = 80, event_id: int = 0, age: int = 0) -> bytes:
    return struct.pack(">BBHH", flags, battery, event_id, age)


def make(counter: int, root: bytes = ROOT, epoch: int = 0, k: int = 10, **kw: Any) -> bytes:
    return ref.advert(root, epoch, k, counter, status(**kw))


def resolver(*keys: BandKey) -> BandResolver:
    return BandResolver(keys or (BandKey("WB-1", ROOT),))


def reason(r: BandResolver, data: bytes, now_ms: int) -> str:
    with pytest.raises(adv.AdvertError) as info:
        r.resolve(data, now_ms)
    return info.value.reason


def test_vector_adverts_resolve(wristband_vectors: dict[str, Any]) -> None:
    for vec in wristband_vectors["adverts"]:
        r = resolver(BandKey("B", bytes.fromhex(vec["root"]), vec["epoch"], vec["k"]))
        s = r.resolve(bytes.fromhex(vec["hex"]), vec["counter"] * 1000)
        assert (s.band, s.counter, s.new) == ("B", vec["counter"], True), vec["name"]
        assert s.status == adv.Status(vec["flags"], vec["battery"], vec["event_id"], vec["event_age"])


def test_vector_keys_eids_and_privacy(wristband_vectors: dict[str, Any]) -> None:
    for vec in wristband_vectors["kdf"]:
        assert adv.derive(bytes.fromhex(vec["root"]), vec["purpose"], vec["epoch"]).hex() == vec["key"]
    for vec in wristband_vectors["adverts"]:
        keys = adv.EpochKeys(bytes.fromhex(vec["root"]), vec["epoch"], vec["k"])
        eid = keys.eid(adv.window_start(vec["counter"], vec["k"]))
        assert eid.hex() == vec["eid"]
        assert keys.privacy(eid) == (vec["mask"], bytes.fromhex(vec["addr"]))


def test_vector_bad_adverts_rejected_with_their_reason(wristband_vectors: dict[str, Any]) -> None:
    for vec in wristband_vectors["bad_adverts"]:
        if vec["near"] != wristband_vectors["adverts"][0]["counter"]:
            continue  # a window the gateway's table covers (it holds the next window too)
        r = resolver()
        assert reason(r, bytes.fromhex(vec["hex"]), vec["near"] * 1000) == vec["reason"], vec["name"]
        assert r.rejected[vec["reason"]] == 1


def test_literal_layout_pinned() -> None:
    data = make(T0)
    assert len(data) == 31 and data[:5] == bytes.fromhex("1effffff40")
    assert adv.from_manufacturer_data(0xFFFF, data[4:]) == data
    with pytest.raises(adv.AdvertError, match="malformed"):
        adv.from_manufacturer_data(0xFFFF, data[4:-1])


def test_repeat_replay_and_order() -> None:
    r = resolver()
    a1, a2, a3 = make(T0), make(T0 + 1), make(T0 + 2, flags=adv.WORN | adv.SOS, event_id=3)
    assert r.resolve(a2, T0 * 1000).new
    # the same bytes again (another scanner, a burst repeat): a sighting, not a new state
    again = r.resolve(a2, T0 * 1000 + 50)
    assert not again.new and again.counter == T0 + 1
    assert reason(r, a1, T0 * 1000 + 100) == "replay"
    s = r.resolve(a3, T0 * 1000 + 2000)
    assert s.new and s.status.flags & adv.SOS and s.status.event_id == 3
    assert reason(r, a2, T0 * 1000 + 2100) == "replay"
    assert r.counts == {"accepted": 2, "repeat": 1} and r.rejected == {"replay": 2}


def test_same_counter_other_status_is_a_replay() -> None:
    # cannot happen without the key (the band never reuses a counter); refused if it does
    r = resolver()
    r.resolve(make(T0, battery=50), T0 * 1000)
    assert reason(r, make(T0, battery=49), T0 * 1000) == "replay"


def test_unknown_band_forged_and_other_company() -> None:
    r = resolver()
    assert reason(r, make(T0, root=ref.OTHER_ROOT), T0 * 1000) == "unknown_eid"
    forged = bytearray(make(T0))
    forged[19] ^= 0x01  # an "I'm fine" edit of the encrypted status
    assert reason(r, bytes(forged), T0 * 1000) == "bad_mic"
    other = ref.advert(ROOT, 0, 10, T0, status(), company=0x0059)
    assert reason(r, other, T0 * 1000) == "other_company"
    assert reason(r, b"\x1e\xff" + bytes(29), T0 * 1000) == "other_company"
    assert reason(r, b"\x1e\xff\xff\xff" + bytes(27), T0 * 1000) == "unsupported"
    assert reason(r, b"", T0 * 1000) == "malformed"


def test_stale_advert_rejected_unless_clock_restored() -> None:
    r = resolver()
    now = (T0 + 120) * 1000
    assert reason(r, make(T0), now) == "stale"  # a captured advert played back 2 min later
    assert r.resolve(make(T0 + 61), now).new  # inside the 60 s skew
    # a band that restored its clock from flash says so; the gateway learns the new offset
    r2 = resolver()
    r2.resolve(make(T0), T0 * 1000)
    later = (T0 + 3 * 3600) * 1000  # off for three hours
    assert reason(r2, make(T0 + 300), later) == "stale"
    s = r2.resolve(make(T0 + 301, flags=adv.WORN | adv.CLOCK_RESTORED), later)
    assert s.new and s.clock_restored and s.offset_s == pytest.approx(3 * 3600 - 301)
    # from now on the band's lagging clock is the expected one
    assert r2.resolve(make(T0 + 302), later + 1000).new
    assert reason(r2, make(T0 + 200), later + 2000) == "replay"


def test_clock_offset_tracked_across_windows() -> None:
    # a band whose clock runs 500 s behind: found through the resume windows first, then
    # through the estimate as its windows move on
    r = resolver()
    r.resolve(make(T0), T0 * 1000)
    for i in range(1, 60):
        band_t = T0 + i * 100
        s = r.resolve(make(band_t), (band_t + 20) * 1000)
        assert s.new and s.offset_s == pytest.approx(20)
    # the table holds at most five windows of the band
    assert len(r._table) <= 5


def test_restart_keeps_replay_protection(tmp_path: Path) -> None:
    store = Store(tmp_path / "buffer.db")
    r = resolver()
    seen = [make(T0 + i) for i in range(5)]
    for i, a in enumerate(seen):
        r.resolve(a, (T0 + i) * 1000)
    rows = r.take_rows()
    assert rows == [("WB-1", T0 + 4, (T0 + 4) * 1000)] and r.take_rows() == []
    with store.transaction():
        store.save_band_replay(rows)
    store.close()
    # a new agent process: everything seen before is refused, the next advert passes
    store = Store(tmp_path / "buffer.db")
    r2 = resolver()
    r2.load(store.load_band_replay())
    for i, a in enumerate(seen):
        assert reason(r2, a, (T0 + 5 + i) * 1000) == "replay"
    assert r2.resolve(make(T0 + 6), (T0 + 6) * 1000).new
    assert r2.offset_s("WB-1") == pytest.approx(0)
    store.close()


def test_two_key_epochs_during_rekey() -> None:
    r = resolver(BandKey("WB-1", ROOT, 0), BandKey("WB-1", ROOT, 1))
    assert r.resolve(make(T0, epoch=0), T0 * 1000).new
    assert r.resolve(make(T0 + 1, epoch=1), (T0 + 1) * 1000).new
    # the counter is per band, whatever the epoch
    assert reason(r, make(T0, epoch=1), (T0 + 2) * 1000) == "replay"
    with pytest.raises(ValueError, match="same K"):
        r.add(BandKey("WB-1", ROOT, 2, k=12))


def test_band_key_repr_hides_the_key() -> None:
    assert ROOT.hex() not in repr(BandKey("WB-1", ROOT)) and "WB-1" in repr(BandKey("WB-1", ROOT))


# --- properties ---------------------------------------------------------------------------


@seeded
@PROPERTY
@given(
    counter=st.integers(T0 - 10**6, T0 + 10**6),
    edits=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255), st.integers(0, 2)), min_size=1, max_size=4),
)
def test_mutated_adverts_rejected_with_a_named_reason(counter: int, edits: list[tuple[int, int, int]]) -> None:
    good = make(counter)
    data = bytearray(good)
    for pos, val, op in edits:
        if op == 0 and pos < len(data):
            data[pos] ^= val or 1
        elif op == 1:
            del data[pos % max(len(data), 1) :]
        else:
            data.insert(min(pos, len(data)), val)
    r = resolver()
    try:
        s = r.resolve(bytes(data), counter * 1000)
    except adv.AdvertError as exc:
        assert exc.reason in adv.REASONS
        assert sum(r.rejected.values()) == 1
        return
    # only the unmodified advert gets through
    assert bytes(data) == good and s.counter == counter


@seeded
@PROPERTY
@given(steps=st.lists(st.tuples(st.integers(-5, 30), st.integers(0, 3)), min_size=1, max_size=40))
def test_accepted_counters_strictly_increase(steps: list[tuple[int, int]]) -> None:
    # a band sending, an attacker replaying anything it heard: no counter is accepted as new
    # twice and accepted counters only go up
    r = resolver()
    heard: list[bytes] = []
    counter, now = T0, T0 * 1000
    accepted: list[int] = []
    for delta, replay in steps:
        now += max(delta, 0) * 1000
        if replay and heard:
            data = heard[(delta + replay) % len(heard)]
        else:
            counter = max(counter + 1, now // 1000)
            data = make(counter)
            heard.append(data)
        try:
            s = r.resolve(data, now)
        except adv.AdvertError as exc:
            assert exc.reason in ("replay", "stale")
            continue
        if s.new:
            assert not accepted or s.counter > accepted[-1]
            accepted.append(s.counter)
        else:
            assert accepted and s.counter == accepted[-1]
