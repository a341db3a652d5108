# Fall detection (lib/fall.py) on recorded-style accelerometer traces: walking with gait
# oscillation and sensor noise, falls (free fall, impact, bounce, lying still), falls the
# wearer gets up from or cancels, hard sit-downs, jumps. The traces come from a seeded
# generator that is the same on both interpreters. Runs on MicroPython and CPython.
import math

import fall
from fwsupport import raises


class _Rng:
    # 32-bit LCG (Numerical Recipes constants): same numbers on MicroPython and CPython
    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFF

    def noise(self, a):
        self.s = (self.s * 1664525 + 1013904223) & 0xFFFFFFFF
        return (self.s >> 8) % (2 * a + 1) - a


class _Trace:
    def __init__(self, seed=1, hz=50):
        self.rng = _Rng(seed)
        self.dt = 1000 // hz
        self.t = 0
        self.out = []  # (t, x, y, z) milli-g

    def _add(self, x, y, z, n=8):
        r = self.rng
        self.out.append((self.t, x + r.noise(n), y + r.noise(n), z + r.noise(n)))
        self.t += self.dt

    def walk(self, ms):
        for _ in range(ms // self.dt):
            ph = 2 * math.pi * 1.8 * self.t / 1000
            self._add(int(120 * math.sin(ph / 2)), int(80 * math.cos(ph)), 1000 + int(280 * math.sin(ph)), 40)

    def still(self, ms, axis=0):
        for _ in range(ms // self.dt):
            v = [0, 0, 0]
            v[axis] = 1000
            self._add(v[0], v[1], v[2], 25)

    def free_fall(self, ms, level=150):
        for _ in range(ms // self.dt):
            self._add(level, level // 2, level // 3, 30)

    def impact(self, peak=3500, bounce_ms=300):
        self._add(peak // 2, peak // 3, peak, 100)
        self._add(peak // 3, peak // 4, peak // 2, 100)
        for i in range(bounce_ms // self.dt):
            a = 1500 if i % 2 else 600
            self._add(a, 200, 300, 80)

    def sit_hard(self):
        for a in (800, 700, 900, 2600, 1900, 1200):
            self._add(0, 0, a, 30)


def _run(trace, cancel_after_suspect_ms=None):
    d = fall.FallDetector()
    events = []
    suspect_t = None
    for t, x, y, z in trace.out:
        r = d.feed(t, x, y, z)
        if r is not None:
            events.append((r, t))
            if r == fall.SUSPECT:
                suspect_t = t
        if suspect_t is not None and cancel_after_suspect_ms is not None and t - suspect_t >= cancel_after_suspect_ms:
            r = d.cancel()
            if r is not None:
                events.append((r, t))
            suspect_t = None
    return d, [e[0] for e in events], events


def test_fall_lying_still_is_confirmed_after_the_cancel_window():
    tr = _Trace(seed=7)
    tr.walk(5000)
    tr.free_fall(350)
    t_fall = tr.t
    tr.impact()
    tr.still(60000, axis=0)
    d, kinds, events = _run(tr)
    assert kinds == [fall.SUSPECT, fall.FALL], kinds
    suspect_t, fall_t = events[0][1], events[1][1]
    # stillness checked (settle 1.5 s + 10 s) before the band buzzes, then 30 s to cancel
    assert 11000 <= suspect_t - t_fall <= 13000, suspect_t - t_fall
    assert fall_t - suspect_t == 30000 or 30000 <= fall_t - suspect_t <= 30040
    assert fall_t - t_fall <= 90000
    assert 0 <= d.impact_at - t_fall <= 100


def test_fall_at_25_hz_too():
    tr = _Trace(seed=8, hz=25)
    tr.walk(4000)
    tr.free_fall(400)
    tr.impact(peak=4000)
    tr.still(50000, axis=1)
    assert _run(tr)[1] == [fall.SUSPECT, fall.FALL]


def test_fall_then_wearer_gets_up_is_dismissed():
    tr = _Trace(seed=9)
    tr.walk(3000)
    tr.free_fall(300)
    tr.impact()
    tr.still(3000)
    tr.walk(20000)
    kinds = _run(tr)[1]
    assert fall.SUSPECT not in kinds and fall.FALL not in kinds, kinds
    assert kinds == [fall.DISMISSED]


def test_fall_cancelled_by_the_wearer():
    tr = _Trace(seed=10)
    tr.walk(3000)
    tr.free_fall(350)
    tr.impact()
    tr.still(60000)
    kinds = _run(tr, cancel_after_suspect_ms=5000)[1]
    assert kinds == [fall.SUSPECT, fall.CANCELLED], kinds


def test_hard_sit_down_is_not_a_fall():
    tr = _Trace(seed=11)
    tr.walk(3000)
    tr.sit_hard()
    tr.still(30000, axis=2)
    assert _run(tr)[1] == []


def test_jump_and_walk_on_is_not_a_fall():
    tr = _Trace(seed=12)
    tr.walk(3000)
    tr.free_fall(250)
    tr.impact(peak=2600, bounce_ms=100)
    tr.walk(20000)
    kinds = _run(tr)[1]
    assert fall.SUSPECT not in kinds and fall.FALL not in kinds, kinds


def test_free_fall_without_impact_is_not_a_fall():
    tr = _Trace(seed=13)
    tr.walk(2000)
    tr.free_fall(400)
    tr.still(30000)  # landed softly (bed): no impact above the threshold
    assert _run(tr)[1] == []


def test_short_dip_is_not_free_fall():
    tr = _Trace(seed=14)
    tr.walk(2000)
    tr.free_fall(40)  # two samples: below ff_ms
    tr.impact()
    tr.still(30000)
    assert _run(tr)[1] == []


def test_long_walk_raises_nothing():
    tr = _Trace(seed=15)
    tr.walk(600000)
    assert _run(tr)[1] == []


def test_cancel_window_runs_out_without_samples():
    d = fall.FallDetector(settle_ms=0, still_ms=100, cancel_ms=1000)
    t = 0
    for m in (1000, 100, 100, 100, 100, 100, 1000, 3000):
        d.feed(t, 0, 0, m)
        t += 20
    r = None
    while r is None and t < 1000:
        t += 20
        r = d.feed(t, 0, 0, 1000)
    assert r == fall.SUSPECT and d.suspect()
    assert d.poll(t + 999) is None
    assert d.poll(t + 1000) == fall.FALL
    assert d.cancel() is None


def test_bad_thresholds_rejected():
    raises(ValueError, fall.FallDetector, 1200)
    raises(ValueError, fall.FallDetector, 400, 80, 900)
    raises(ValueError, fall.FallDetector, 400, 80, 2000, 1000, 1000, 1000, 150, 0)
