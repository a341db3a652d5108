"""Replay protection for device frames (docs/protocol.md §6, step 7).

Per device, the record of which (boot, seq) were accepted, in two parts:

- the top: the highest accepted (boot, seq) and a 64-bit bitmap of which of the 64 sequence
  numbers just below it (same boot) were accepted. Frames in order pass here in O(1).
- the gaps: ranges of (boot, seq) below the window that were never accepted, oldest first,
  at most MAX_GAPS of them. A frame that was lost and comes again later, after newer ones
  (a broker that dropped it, an agent knocked off its broker, a device that resends its
  outbox after a reboot), finds its number in a gap.

A frame is new when it is above the top, an unset bit of the window, or inside a gap; it is
accepted at most once: accepting sets its bit or cuts it out of its gap. Everything else
below the top counts as seen. When the window moves up, the numbers it leaves unset become
gaps; when more than MAX_GAPS are open, the oldest gap is closed (its numbers count as seen
from then on), so a device's record never grows past MAX_GAPS ranges, whatever order frames
come in. Closing a gap can only refuse a frame, never let one through twice.

Keys are `boot << 32 | seq` (both are 32-bit), so the order of keys is the order of
(boot, seq). The state is persisted with the events it admits (agent/gateway/buffer.py:
the top per commit round, the gaps when they changed), so it survives restarts with no grace
window.
"""

from __future__ import annotations

import struct
from bisect import bisect_right

WINDOW = 64
MAX_GAPS = 64  # per device: at most 1 KiB of gaps when persisted
_MASK = (1 << WINDOW) - 1
_GAP = struct.Struct(">QQ")
_NO_GAPS = b""


class ReplayState:
    """The replay record of one device."""

    __slots__ = ("bitmap", "boot", "gaps", "gaps_blob", "seq")

    def __init__(self, boot: int = 0, seq: int = 0, bitmap: int = 0, gaps: list[tuple[int, int]] | None = None) -> None:
        self.boot = boot
        self.seq = seq
        self.bitmap = bitmap
        self.gaps: list[tuple[int, int]] = gaps if gaps is not None else []  # (first key, last key), ascending
        # the gaps as persisted; a new object exactly when the gaps change (the store writes
        # a device's gaps only when this is not the object it last wrote)
        self.gaps_blob = _pack(self.gaps)

    def is_new(self, boot: int, seq: int) -> bool:
        if boot == self.boot:
            if seq > self.seq:
                return True
            distance = self.seq - seq
            if distance == 0:
                return False
            if distance <= WINDOW:
                return not (self.bitmap >> (distance - 1)) & 1
        elif boot > self.boot:
            return True
        return self._gap_at(boot << 32 | seq) >= 0

    def accept(self, boot: int, seq: int) -> None:
        """Record (boot, seq) as accepted; call only after is_new() said True."""
        if boot == self.boot:
            shift = seq - self.seq
            if shift > 0:
                if shift <= WINDOW:
                    # the numbers that leave the window: any of them never accepted becomes a
                    # gap (in order, the bits leaving are all set and this is one comparison)
                    if self.bitmap >> (WINDOW - shift) != (1 << shift) - 1 and seq > WINDOW + 1:
                        self._retire(boot, seq)
                    self.bitmap = ((self.bitmap << shift) | (1 << (shift - 1))) & _MASK
                else:
                    self._retire(boot, seq)
                    self.bitmap = 0
                self.seq = seq
            elif -shift <= WINDOW:
                self.bitmap |= 1 << (-shift - 1)
            else:
                self._fill(boot << 32 | seq)
        elif boot > self.boot:
            self._retire(boot, seq)
            self.boot, self.seq, self.bitmap = boot, seq, 0
        else:
            self._fill(boot << 32 | seq)

    def _gap_at(self, key: int) -> int:
        """Index of the gap holding `key`, -1 when none does."""
        gaps = self.gaps
        i = bisect_right(gaps, (key, 1 << 64)) - 1
        return i if i >= 0 and gaps[i][1] >= key else -1

    def _retire(self, boot: int, seq: int) -> None:
        """The top moves to (boot, seq): what falls below the new window unaccepted becomes gaps."""
        low = boot << 32 | max(1, seq - WINDOW)  # the lowest key the new window holds
        top = self.boot << 32 | self.seq
        gaps = self.gaps
        changed = False
        # the old window, oldest first: bit i stands for seq - 1 - i (only seq >= 1 exists)
        for i in range(min(WINDOW, self.seq - 1) - 1, -1, -1):
            key = top - 1 - i
            if key >= low:
                break
            if not (self.bitmap >> i) & 1:
                _append(gaps, key, key)
                changed = True
        # never seen at all: between the old top and the new window
        first = max(top + 1, 1 << 32 | 1)  # boot and seq start at 1
        if first < low:
            _append(gaps, first, low - 1)
            changed = True
        if changed:
            self._changed()

    def _fill(self, key: int) -> None:
        """A far-behind frame was accepted: cut its key out of its gap."""
        i = self._gap_at(key)
        if i < 0:
            raise ValueError(f"key {key:#x} is not in a gap; accept() only what is_new() allowed")
        lo, hi = self.gaps[i]
        self.gaps[i : i + 1] = [g for g in ((lo, key - 1), (key + 1, hi)) if g[0] <= g[1]]
        self._changed()

    def _changed(self) -> None:
        if len(self.gaps) > MAX_GAPS:
            del self.gaps[: len(self.gaps) - MAX_GAPS]  # the oldest close: counted as seen
        self.gaps_blob = _pack(self.gaps)

    def as_row(self) -> tuple[int, int, int, bytes]:
        # SQLite integers are signed 64-bit: store the bitmap as its two's complement
        bitmap = self.bitmap - (1 << 64) if self.bitmap >= 1 << 63 else self.bitmap
        return (self.boot, self.seq, bitmap, self.gaps_blob)

    @classmethod
    def from_row(cls, boot: int, seq: int, bitmap: int, gaps: bytes = _NO_GAPS) -> ReplayState:
        """The state as_row() gave; gaps that do not parse as ascending, disjoint ranges below
        the window are dropped (their frames then count as seen: refused, never twice)."""
        return cls(boot, seq, bitmap & _MASK, _unpack(gaps, boot << 32 | max(1, seq - WINDOW)))


def _append(gaps: list[tuple[int, int]], lo: int, hi: int) -> None:
    if gaps and gaps[-1][1] + 1 == lo:
        gaps[-1] = (gaps[-1][0], hi)
    else:
        gaps.append((lo, hi))


def _pack(gaps: list[tuple[int, int]]) -> bytes:
    return b"".join(_GAP.pack(lo, hi) for lo, hi in gaps) if gaps else _NO_GAPS


def _unpack(blob: bytes, below: int) -> list[tuple[int, int]]:
    if len(blob) % _GAP.size or len(blob) > MAX_GAPS * _GAP.size:
        return []
    gaps = list(_GAP.iter_unpack(blob))
    last = -1
    for lo, hi in gaps:
        if not last < lo <= hi < below:
            return []
        last = hi
    return gaps
