"""Reconnect delays: exponential with full jitter, capped (AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 0.25, cap: float = 10.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self.rng = rng or random.Random()

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(self.base / 2, max(ceiling, self.base))
