# Fall detection from accelerometer samples: free fall, then an impact, then stillness, then a
# cancel window in which the wearer can say "I'm fine". Pure: fed samples (ticks_ms, x, y, z
# in milli-g), returns what happened; no I/O, no allocation per sample (small ints only).
#
#   IDLE --|a| < ff_mg for ff_ms--> FREE FALL --|a| > impact_mg within impact_ms--> IMPACT
#   IMPACT --settle_ms--> STILL CHECK: over still_ms, |a| within still_mg of 1 g for at least
#     still_pct % of samples --> CANCEL WINDOW (SUSPECT: the band buzzes) --cancel_ms--> FALL
#   More movement than that in the check means the wearer got up: DISMISSED, no fall;
#   cancel() in the cancel window gives CANCELLED.
# A hard sit-down or a dropped band without free fall, or a free fall without an impact
# (a jump onto a soft bed), is not a fall. Magnitudes are compared squared (no sqrt).
from clock import const, ticks_diff

SUSPECT = const(1)  # a fall is likely: start the cancel window (buzz)
FALL = const(2)  # confirmed: the cancel window passed
CANCELLED = const(3)  # the wearer cancelled in the window
DISMISSED = const(4)  # impact seen but the wearer moved on (no fall)

_IDLE = const(0)
_FREEFALL = const(1)
_WAIT_IMPACT = const(2)
_SETTLE = const(3)
_STILL = const(4)
_CANCEL = const(5)
_G = const(1000)


class FallDetector:
    def __init__(
        self,
        ff_mg=450,
        ff_ms=80,
        impact_mg=2200,
        impact_ms=1000,
        settle_ms=1500,
        still_ms=10000,
        still_mg=150,
        still_pct=90,
        cancel_ms=30000,
    ):
        if not (0 < ff_mg < _G < impact_mg and 0 < still_mg < _G and 0 < still_pct <= 100):
            raise ValueError("fall: thresholds out of order")
        self.ff_mg = ff_mg
        self._ff2 = ff_mg * ff_mg
        self._imp2 = impact_mg * impact_mg
        self._lo2 = (_G - still_mg) * (_G - still_mg)
        self._hi2 = (_G + still_mg) * (_G + still_mg)
        self.ff_ms = ff_ms
        self.impact_ms = impact_ms
        self.settle_ms = settle_ms
        self.still_ms = still_ms
        self.still_pct = still_pct
        self.cancel_ms = cancel_ms
        self.state = _IDLE
        self._t = 0  # when the current state began
        self._n = 0  # samples in the stillness check
        self._moving = 0  # of those, outside the stillness bound
        self.impact_at = 0  # ticks of the last impact (when the fall happened)

    def suspect(self):
        return self.state == _CANCEL

    def needs_samples(self):
        # False while idle (only a free fall below ff_mg starts anything, so samples above it
        # may go unread) and in the cancel window (time alone ends it)
        return self.state != _IDLE and self.state != _CANCEL

    def feed(self, t, x, y, z):
        m2 = x * x + y * y + z * z
        s = self.state
        if s == _IDLE:
            if m2 < self._ff2:
                self.state = _FREEFALL
                self._t = t
        elif s == _FREEFALL:
            if m2 >= self._ff2:
                # free fall over: long enough to count?
                if ticks_diff(t, self._t) >= self.ff_ms:
                    self.state = _WAIT_IMPACT
                    self._t = t
                    return self._impact(t, m2)
                self.state = _IDLE
        elif s == _WAIT_IMPACT:
            return self._impact(t, m2)
        elif s == _SETTLE:
            if ticks_diff(t, self._t) >= self.settle_ms:
                self.state = _STILL
                self._t = t
                self._n = self._moving = 0
        elif s == _STILL:
            self._n += 1
            if not self._lo2 <= m2 <= self._hi2:
                self._moving += 1
            if ticks_diff(t, self._t) >= self.still_ms:
                if self._moving * 100 <= (100 - self.still_pct) * self._n:
                    self.state = _CANCEL
                    self._t = t
                    return SUSPECT
                self.state = _IDLE
                return DISMISSED
        return self.poll(t)

    def _impact(self, t, m2):
        if m2 > self._imp2:
            self.state = _SETTLE
            self._t = t
            self.impact_at = t
        elif ticks_diff(t, self._t) > self.impact_ms:
            self.state = _IDLE

    def poll(self, t):
        # the cancel window runs out even without samples
        if self.state == _CANCEL and ticks_diff(t, self._t) >= self.cancel_ms:
            self.state = _IDLE
            return FALL
        return None

    def cancel(self):
        if self.state == _CANCEL:
            self.state = _IDLE
            return CANCELLED
        return None
