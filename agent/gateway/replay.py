"""Replay protection for device frames (docs/protocol.md §6, step 7).

Per device: the highest accepted (boot, seq) and a 64-bit bitmap of which of the 64 sequence
numbers just below it were accepted in the same boot. A frame is new when its boot is newer,
or its seq is above the high-water mark, or inside the window and not yet seen. The state is
persisted with the events it admits (agent/gateway/buffer.py), so it survives restarts with no grace
window.
"""

from __future__ import annotations

WINDOW = 64
_MASK = (1 << WINDOW) - 1


class ReplayState:
    """The replay state of one device."""

    __slots__ = ("bitmap", "boot", "seq")

    def __init__(self, boot: int = 0, seq: int = 0, bitmap: int = 0) -> None:
        self.boot = boot
        self.seq = seq
        self.bitmap = bitmap

    def is_new(self, boot: int, seq: int) -> bool:
        if boot != self.boot:
            return boot > self.boot
        if seq > self.seq:
            return True
        distance = self.seq - seq
        if distance == 0 or distance > WINDOW:
            return False
        return not (self.bitmap >> (distance - 1)) & 1

    def accept(self, boot: int, seq: int) -> None:
        """Record (boot, seq) as accepted; call only after is_new() said True."""
        if boot != self.boot:
            self.boot, self.seq, self.bitmap = boot, seq, 0
        elif seq > self.seq:
            shift = seq - self.seq
            self.bitmap = ((self.bitmap << shift) | (1 << (shift - 1))) & _MASK if shift <= WINDOW else 0
            self.seq = seq
        else:
            self.bitmap |= 1 << (self.seq - seq - 1)

    def as_row(self) -> tuple[int, int, int]:
        # SQLite integers are signed 64-bit: store the bitmap as its two's complement
        bitmap = self.bitmap - (1 << 64) if self.bitmap >= 1 << 63 else self.bitmap
        return (self.boot, self.seq, bitmap)

    @classmethod
    def from_row(cls, boot: int, seq: int, bitmap: int) -> ReplayState:
        return cls(boot, seq, bitmap & _MASK)
