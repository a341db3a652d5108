"""A request budget (token bucket): what a page on the untrusted venue network may cost the agent.

The gateway's pages (the status page, the fallback notifier's acknowledgement page) run in the
agent's event loop, beside the alarm path; a request beyond the budget is answered 503 before
any work is done for it, so a flood on the venue's Wi-Fi cannot take the loop's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RequestBudget:
    """`per_s` requests a second on average, bursts of up to `burst` (default 2 x per_s)."""

    __slots__ = ("_at", "_left", "burst", "clock", "per_s")

    def __init__(self, per_s: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst if burst is not None else 2 * per_s
        self.clock = clock
        self._left = per_s
        self._at = clock()

    def take(self) -> bool:
        """True when one more request fits the budget (and counts it)."""
        now = self.clock()
        self._left = min(self.burst, self._left + (now - self._at) * self.per_s)
        self._at = now
        if self._left < 1.0:
            return False
        self._left -= 1.0
        return True
