# SOS logic (lib/sos.py): hold 2 s, burst every 100 ms for 30 s with one event id, flag kept
# until the event ages out. Runs on MicroPython and CPython.
import sos


class _Ids:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return self.n


def _hold(s, ids, t0, ms, step=10):
    got = []
    t = t0
    while t <= t0 + ms:
        if s.update(1, t, ids) == sos.STARTED:
            got.append(t)
        t += step
    while s.update(0, t, ids) is None and s.waiting():
        t += step
    return got, t


def test_short_press_is_not_sos():
    s, ids = sos.Sos(), _Ids()
    got, t = _hold(s, ids, 0, 1500)
    assert got == [] and not s.active(t) and ids.n == 0


def test_hold_two_seconds_starts_one_event_and_burst():
    s, ids = sos.Sos(), _Ids()
    got, _ = _hold(s, ids, 1000, 5000)
    assert got == [3000] and ids.n == 1 and s.event_id == 1
    assert s.bursting(3000) and s.interval(3000) == 100
    assert s.bursting(32999) and not s.bursting(33000)
    assert s.interval(33000) == 1000
    assert s.active(33000) and s.age_s(33000) == 30
    # the flag stays until the event ages out (900 s)
    assert s.active(3000 + 899999) and not s.active(3000 + 900000)


def test_second_hold_during_burst_is_the_same_event():
    s, ids = sos.Sos(), _Ids()
    _hold(s, ids, 0, 2500)
    got, _ = _hold(s, ids, 10000, 3000)
    assert got == [] and ids.n == 1


def test_second_hold_after_burst_is_a_new_event():
    s, ids = sos.Sos(), _Ids()
    _hold(s, ids, 0, 2500)
    got, _ = _hold(s, ids, 40000, 3000)
    assert got == [42000] and s.event_id == 2 and s.bursting(42000)
