# Button debouncer fed by samples: PRESS as soon as the level has been 1 for stable_ms (an
# alarm must not wait for the release), LONG once when still held at long_ms, RELEASE when
# the level has been back at 0 for stable_ms; held_ms then holds the press duration.
# Level flapping faster than stable_ms produces nothing. long_ms=0: no LONG (a switch, not a
# button).
#
# Times are ticks_ms values and are only ever compared through ticks_diff, so the ticks
# wrap (2^30 ms on boards) is harmless as long as update() is called more often than every
# half period (~6 days), which any main loop does; held_ms is exact for presses shorter than
# that half period. Durations are measured from the edges: a press starts when the level
# went to 1 and ends when it went back to 0, so held_ms excludes the debounce delay and LONG
# fires long_ms after the button went down (at the first sample from then on).
# update() allocates nothing (small ints only): it can run from a fast polling loop.
from clock import const, ticks_diff

PRESS = const(1)
LONG = const(2)
RELEASE = const(3)


class Debouncer:
    def __init__(self, stable_ms=30, long_ms=3000):
        if stable_ms < 1 or (long_ms and long_ms <= stable_ms):
            raise ValueError("need 1 <= stable_ms < long_ms, got %d and %d" % (stable_ms, long_ms))
        self.stable_ms = stable_ms
        self.long_ms = long_ms
        self.pressed = 0  # the debounced level
        self.held_ms = 0  # duration of the last released press
        self._raw = 0  # last sampled level
        self._edge = 0  # ticks when the sampled level last changed
        self._down = 0  # ticks when the current press began (its rising edge)
        self._long = False  # LONG already reported for the current press

    def update(self, level, now_ms):
        level = 1 if level else 0
        if level != self._raw:
            self._raw = level
            self._edge = now_ms
        if self.pressed:
            # held time so far; while a release is pending it ends at the falling edge, so a
            # button let go before long_ms never reports LONG however late it is sampled
            end = now_ms if level else self._edge
            if self.long_ms and not self._long and ticks_diff(end, self._down) >= self.long_ms:
                self._long = True
                return LONG
            if not level and ticks_diff(now_ms, self._edge) >= self.stable_ms:
                self.pressed = 0
                self.held_ms = ticks_diff(self._edge, self._down)
                return RELEASE
        elif level and ticks_diff(now_ms, self._edge) >= self.stable_ms:
            self.pressed = 1
            self._down = self._edge
            self._long = False
            return PRESS
        return None

    def level(self):
        # the last level fed in: an edge's caller feeds it at the edge's time first (the
        # level held until then), then the new level
        return self._raw

    def waiting(self):
        # True while update() can still report something without a new level change (a
        # press or release settling, or LONG not reached yet): the caller keeps sampling.
        return self._raw != self.pressed or (self.pressed and self.long_ms and not self._long)
