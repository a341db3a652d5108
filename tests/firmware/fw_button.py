# Button debouncer: press, long press, release, bounce, glitches, ticks wrap. Runs on
# MicroPython and CPython.
import button
import clock
from button import LONG, PRESS, RELEASE
from fwsupport import IS_MICROPYTHON, raises

# boards' ticks_ms period; the unix port's is 2^62, CPython's clock does not wrap at all
_BOARD_PERIOD = 1 << 30
_BOARD_MASK = _BOARD_PERIOD - 1
_BOARD_HALF = _BOARD_PERIOD >> 1


def _board_ticks_diff(a, b):
    # time.ticks_diff as a board with 30-bit ticks computes it
    return ((a - b + _BOARD_HALF) & _BOARD_MASK) - _BOARD_HALF


def _feed(d, samples, t0=0, add=clock.ticks_add):
    # samples: (level, ms after t0); returns [(ms, event, held_ms)] for every event
    out = []
    for level, t in samples:
        ev = d.update(level, add(t0, t))
        if ev is not None:
            out.append((t, ev, d.held_ms if ev == RELEASE else None))
    return out


def _steady(level, start, end, step=1):
    return [(level, t) for t in range(start, end, step)]


def _click(at, held, bounce_ms=0):
    # One press at `at` held for `held` ms, sampled every ms, with contact bounce for
    # bounce_ms at each edge. Returns the samples and the last rising and falling edges.
    s = []
    t = at
    while t < at + bounce_ms:
        s.append((1, t))
        s.append((0, t + 1))
        t += 3
    rise = t
    s.extend(_steady(1, t, at + held))
    t = at + held
    while t < at + held + bounce_ms:
        s.append((0, t))
        s.append((1, t + 1))
        t += 3
    fall = t
    s.extend(_steady(0, t, t + 40))
    return s, rise, fall


def test_event_constants_distinct():
    assert len({PRESS, LONG, RELEASE}) == 3
    assert None not in (PRESS, LONG, RELEASE)


def test_bad_parameters_raise():
    raises(ValueError, button.Debouncer, 0, 3000)
    raises(ValueError, button.Debouncer, 30, 30)
    raises(ValueError, button.Debouncer, 30, 10)


def test_idle_produces_nothing():
    d = button.Debouncer()
    assert _feed(d, _steady(0, 0, 5000, 7)) == []
    assert d.pressed == 0


def test_clean_press_and_release():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    s = _steady(0, 0, 100) + _steady(1, 100, 600) + _steady(0, 600, 700)
    got = _feed(d, s)
    # PRESS the moment the level has been 1 for 30 ms, not at the release
    assert got == [(130, PRESS, None), (630, RELEASE, 500)], got
    assert d.held_ms == 500 and d.pressed == 0


def test_press_reported_while_still_held():
    d = button.Debouncer(stable_ms=20, long_ms=3000)
    got = _feed(d, _steady(1, 0, 1000))
    assert got == [(20, PRESS, None)], got
    assert d.pressed == 1


def test_bounce_on_press_and_release():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    s, rise, fall = _click(100, 400, bounce_ms=20)
    assert (rise, fall) == (121, 521)
    got = _feed(d, s)
    # contacts bounce for 20 ms: the press starts at its last rising edge and ends at the
    # last falling edge, and only one PRESS and one RELEASE come out
    assert got == [(151, PRESS, None), (551, RELEASE, 400)], got


def test_glitch_shorter_than_stable_ignored():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    s = _steady(0, 0, 50) + _steady(1, 50, 79) + _steady(0, 79, 300)
    assert _feed(d, s) == []
    # a 29 ms dropout while held is not a release
    s = _steady(1, 300, 500) + _steady(0, 500, 529) + _steady(1, 529, 700) + _steady(0, 700, 800)
    got = _feed(d, s)
    assert got == [(330, PRESS, None), (730, RELEASE, 400)], got


def test_level_flapping_faster_than_stable_produces_nothing():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    s = []
    for i in range(1000):
        s.append((i & 1, i * 29))
    assert _feed(d, s) == []


def test_truthy_levels_accepted():
    d = button.Debouncer(stable_ms=10, long_ms=100)
    got = _feed(d, [(True, 0), (True, 10), (False, 20), (0, 30)])
    assert got == [(10, PRESS, None), (30, RELEASE, 20)], got


def test_long_press_timing():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    s = _steady(1, 0, 5000, 10) + _steady(0, 5000, 5100, 10)
    got = _feed(d, s)
    assert got == [(30, PRESS, None), (3000, LONG, None), (5030, RELEASE, 5000)], got


def test_release_just_before_long_is_not_long():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    s = _steady(1, 0, 2999) + _steady(0, 2999, 3100)
    got = _feed(d, s)
    assert got == [(30, PRESS, None), (3029, RELEASE, 2999)], got


def test_sparse_samples_report_long_from_the_edges():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    # the button went up at 3100 and the loop only saw it then: still held past long_ms
    got = _feed(d, [(1, 0), (1, 40), (0, 3100), (0, 3200)])
    assert got == [(40, PRESS, None), (3100, LONG, None), (3200, RELEASE, 3100)], got
    # released at 2999, seen late: no LONG
    got = _feed(d, [(1, 5000), (1, 5040), (0, 7999), (0, 9000)])
    assert got == [(5040, PRESS, None), (9000, RELEASE, 2999)], got


def test_press_and_long_due_together_come_one_per_update():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    got = _feed(d, [(1, 0), (1, 4000), (1, 4001), (1, 4002)])
    assert got == [(4000, PRESS, None), (4001, LONG, None)], got


def test_long_reported_once():
    d = button.Debouncer(stable_ms=30, long_ms=1000)
    got = _feed(d, _steady(1, 0, 20000, 5))
    assert [e for _, e, _ in got] == [PRESS, LONG], got


def _wrap_case():
    # a long press and two short ones, 500 ms before to 4 s after a chosen instant
    s = _steady(0, 0, 100, 10) + _steady(1, 100, 3500, 10) + _steady(0, 3500, 3600, 10)
    s += _click(3600, 200)[0] + _click(3900, 60)[0]
    want = [
        (130, PRESS, None),
        (3100, LONG, None),
        (3530, RELEASE, 3400),
        (3630, PRESS, None),
        (3830, RELEASE, 200),
        (3930, PRESS, None),
        (3990, RELEASE, 60),
    ]
    return s, want


def test_ticks_wrap_native():
    # On MicroPython the ticks run up to ticks_add(0, -1) and wrap to 0 (2^62 on the unix
    # port): start 500 ms before the wrap. On CPython clock is plain arithmetic through 0.
    s, want = _wrap_case()
    t0 = clock.ticks_add(0, -500)
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    got = _feed(d, s, t0)
    assert got == want, got
    if IS_MICROPYTHON:
        times = [clock.ticks_add(t0, t) for _, t in s]
        assert times[0] > times[-1], "the sample times did not wrap"


def test_ticks_wrap_board_period():
    # A board's 30-bit ticks on both interpreters: raw values wrap from 2^30-1 to 0 and
    # only ticks_diff (the board's, patched in) makes sense of them.
    s, want = _wrap_case()
    t0 = _BOARD_PERIOD - 500

    def add(a, d):
        return (a + d) & _BOARD_MASK

    saved = button.ticks_diff
    button.ticks_diff = _board_ticks_diff
    try:
        d = button.Debouncer(stable_ms=30, long_ms=3000)
        got = _feed(d, s, t0, add)
        # and again right across the half-period boundary, where signed arithmetic flips
        d2 = button.Debouncer(stable_ms=30, long_ms=3000)
        got2 = _feed(d2, s, _BOARD_HALF - 500, add)
    finally:
        button.ticks_diff = saved
    assert add(t0, s[-1][1]) < t0, "the sample times did not wrap"
    assert got == want, got
    assert got2 == want, got2


def test_many_presses_in_a_row():
    d = button.Debouncer(stable_ms=30, long_ms=3000)
    t = 0
    n = 0
    for i in range(200):
        s, rise, fall = _click(t, 60 + (i * 37) % 700, (i * 7) % 25)
        got = _feed(d, s)
        want = [(rise + 30, PRESS, None), (fall + 30, RELEASE, fall - rise)]
        assert got == want, (i, got, want)
        n += len(got)
        t = s[-1][1] + 1
    assert n == 400


def test_waiting_until_nothing_more_can_happen():
    d = button.Debouncer(30, 1000)
    assert not d.waiting()
    d.update(1, 0)
    assert d.waiting()  # press settling
    assert d.update(1, 30) == button.PRESS
    assert d.waiting()  # LONG still to come
    assert d.update(1, 1000) == button.LONG
    assert not d.waiting()  # held, nothing more until the level changes
    d.update(0, 1100)
    assert d.waiting()  # release settling
    assert d.update(0, 1130) == button.RELEASE
    assert not d.waiting()


def test_long_disabled_for_switches():
    d = button.Debouncer(30, 0)
    assert _feed(d, _steady(1, 0, 10000, 50)) == [(50, PRESS, None)]
    assert not d.waiting()
