"""Resolution of wristband adverts to bands (docs/protocol.md §10.4).

For every registered band and key epoch the EIDs of the previous, current and next window
around the band's estimated clock, and of the window of its last accepted counter and the one
after it (where a band that restored its clock from flash resumes), are kept in one dict keyed
by the advert's header and EID bytes: resolving an advert is one dict probe, one counter
unmask, one AES-CCM check. The table is refreshed when a band's estimated window moves (at most
once a second, O(bands)).

Per band the last accepted counter and the gateway time of that acceptance are the replay
state; the band's clock offset follows from them. Accepting a new counter changes the state in
memory at once (so a second copy is a repeat) and marks the band dirty: the caller persists
`take_rows()` (agent/gateway/buffer.py, table band_replay) before it acts on the sighting, and loads
them at start with `load()`, so a restart opens no replay window.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from agent.gateway.wristbands.advert import (
    AAD_END,
    BATTERY_UNKNOWN,
    CLOCK_RESTORED,
    COMPANY_TEST,
    FLAGS_RESERVED,
    AdvertError,
    EpochKeys,
    Status,
    parse,
    window_start,
)

log = logging.getLogger(__name__)

SKEW_S = 60
_REFRESH_MS = 1000
_STATUS = struct.Struct(">BBHH")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class BandKey:
    """A registered band: its id, 16-byte root key, key epoch and rotation exponent."""

    band: str
    root: bytes
    epoch: int = 0
    k: int = 10

    def __repr__(self) -> str:  # never the key
        return f"BandKey(band={self.band!r}, epoch={self.epoch}, k={self.k})"


@dataclass(frozen=True, slots=True)
class Sighting:
    """An accepted advert. `new` is False for a repeat (same bytes as the last accepted)."""

    band: str
    counter: int
    status: Status
    new: bool
    clock_restored: bool
    offset_s: float  # gateway clock minus band clock, after this advert


class _Band:
    __slots__ = ("band", "dirty", "k", "keys", "last", "last_data", "offset_s", "seen_ms", "windows")

    def __init__(self, key: BandKey) -> None:
        self.band = key.band
        self.k = key.k
        self.keys: dict[int, EpochKeys] = {}
        self.last = -1  # last accepted counter, -1 for none
        self.last_data = b""
        self.seen_ms = 0
        self.offset_s = 0.0  # bands' clocks are set to unix time at provisioning
        self.windows: dict[tuple[int, int], bytes] = {}  # (epoch, window start) -> its table key
        self.dirty = False


class _Entry:
    __slots__ = ("band", "keys", "mask", "start")

    def __init__(self, band: _Band, keys: EpochKeys, start: int, mask: int) -> None:
        self.band = band
        self.keys = keys
        self.start = start
        self.mask = mask


class BandResolver:
    """Registered bands, their EID table and replay state; see the module docstring."""

    def __init__(self, bands: Iterable[BandKey], company: int = COMPANY_TEST, skew_s: int = SKEW_S) -> None:
        self.company = company
        self.skew_s = skew_s
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._bands: dict[str, _Band] = {}
        self._table: dict[bytes, _Entry] = {}
        self._next_refresh = 0
        for key in bands:
            self.add(key)

    # --- registry and state -----------------------------------------------------------

    def add(self, key: BandKey) -> None:
        """Register a band (or another key epoch of one)."""
        if len(key.root) != 16:
            raise ValueError(f"band {key.band}: root key must be 16 bytes")
        b = self._bands.get(key.band)
        if b is None:
            b = self._bands[key.band] = _Band(key)
        elif b.k != key.k:
            raise ValueError(f"band {key.band}: every key epoch must use the same K")
        b.keys[key.epoch] = EpochKeys(key.root, key.epoch, key.k)
        self._next_refresh = 0

    def load(self, rows: Iterable[tuple[str, int, int]]) -> None:
        """Replay state from the buffer: (band, counter, seen_ms) as take_rows() gave them."""
        for band, counter, seen_ms in rows:
            b = self._bands.get(band)
            if b is None:
                continue
            b.last, b.seen_ms = counter, seen_ms
            b.offset_s = seen_ms / 1000 - counter
        self._next_refresh = 0

    def take_rows(self) -> list[tuple[str, int, int]]:
        """(band, counter, seen_ms) of the bands whose state changed since the last call."""
        out = []
        for b in self._bands.values():
            if b.dirty:
                out.append((b.band, b.last, b.seen_ms))
                b.dirty = False
        return out

    def offset_s(self, band: str) -> float:
        return self._bands[band].offset_s

    # --- the EID table ----------------------------------------------------------------

    def refresh(self, now_ms: int) -> None:
        """Recompute the windows of every band whose estimated window moved."""
        self._next_refresh = now_ms + _REFRESH_MS
        now_s = now_ms // 1000
        for b in self._bands.values():
            size = 1 << b.k
            est = int(now_s - b.offset_s)
            starts = {window_start(est, b.k) + d * size for d in (-1, 0, 1)}
            if b.last >= 0:
                w = window_start(b.last, b.k)
                starts.update((w, w + size))
            want = {(keys.epoch, st) for keys in b.keys.values() for st in starts if 0 <= st <= 0xFFFFFFFF}
            if want == b.windows.keys():
                continue
            for gone in [w for w in b.windows if w not in want]:
                tkey = b.windows.pop(gone)
                entry = self._table.get(tkey)
                if entry is not None and entry.band is b:
                    del self._table[tkey]
            for epoch, st in want - b.windows.keys():
                keys = b.keys[epoch]
                eid = keys.eid(st)
                mask, _ = keys.privacy(eid)
                tkey = bytes((keys.header,)) + eid
                other = self._table.get(tkey)
                if other is not None and other.band is not b:
                    log.error("eid_collision bands=%s,%s", other.band.band, b.band)
                self._table[tkey] = _Entry(b, keys, st, mask)
                b.windows[(epoch, st)] = tkey

    # --- adverts ----------------------------------------------------------------------

    def resolve(self, data: bytes, now_ms: int) -> Sighting:
        """Check one 31-byte advert received at gateway time now_ms (unix ms).

        Returns the sighting, or raises AdvertError with the counted reason.
        """
        try:
            s = self._resolve(data, now_ms)
        except AdvertError as exc:
            self.rejected[exc.reason] += 1
            raise
        self.counts["accepted" if s.new else "repeat"] += 1
        return s

    def _resolve(self, data: bytes, now_ms: int) -> Sighting:
        if now_ms >= self._next_refresh:
            self.refresh(now_ms)
        parse(data, self.company)
        entry = self._table.get(data[4:13])
        if entry is None:
            raise AdvertError("unknown_eid", "no registered band has this EID now")
        b = entry.band
        keys = entry.keys
        counter = _U32.unpack_from(data, 13)[0] ^ entry.mask
        if not entry.start <= counter < entry.start + (1 << keys.k):
            raise AdvertError("bad_counter", f"band {b.band}: counter outside the EID's window")
        nonce = data[5:13] + struct.pack(">IB", counter, data[4])
        try:
            plain = keys.ccm.decrypt(nonce, data[AAD_END:], data[:AAD_END])
        except InvalidTag:
            raise AdvertError("bad_mic", f"band {b.band}: MIC check failed") from None
        flags, battery, event_id, age = _STATUS.unpack(plain)
        if flags & FLAGS_RESERVED or (100 < battery < BATTERY_UNKNOWN):
            raise AdvertError("bad_status", f"band {b.band}: flags 0x{flags:02x} battery {battery}")
        if counter < b.last or (counter == b.last and data != b.last_data):
            raise AdvertError("replay", f"band {b.band}: counter {counter} after {b.last}")
        restored = bool(flags & CLOCK_RESTORED)
        est = now_ms / 1000 - b.offset_s
        if counter < est - self.skew_s and not restored:
            raise AdvertError("stale", f"band {b.band}: counter {counter} is {est - counter:.0f} s behind its clock")
        status = Status(flags, battery, event_id, age)
        if counter == b.last:
            return Sighting(b.band, counter, status, False, restored, b.offset_s)
        b.last = counter
        b.last_data = bytes(data)
        b.seen_ms = now_ms
        b.offset_s = now_ms / 1000 - counter
        b.dirty = True
        if window_start(counter, b.k) != window_start(int(est), b.k):
            self._next_refresh = 0  # the band is in another window than estimated
        return Sighting(b.band, counter, status, True, restored, b.offset_s)
