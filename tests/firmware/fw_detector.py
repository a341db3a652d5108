# Venue sensor channel logic (lib/detector.py): confirmation, hysteresis, clear, low-side
# channels, faults, event order on one sample, peak, ticks wrap. Runs on MicroPython and
# CPython.
import clock
import detector
from detector import ALARM, CLEAR, FAULT, RESTORED
from fwsupport import IS_MICROPYTHON, raises

# boards' ticks_ms period; the unix port's is 2^62, CPython's clock does not wrap at all
_BOARD_PERIOD = 1 << 30
_BOARD_MASK = _BOARD_PERIOD - 1
_BOARD_HALF = _BOARD_PERIOD >> 1


def _board_ticks_diff(a, b):
    # time.ticks_diff as a board with 30-bit ticks computes it
    return ((a - b + _BOARD_HALF) & _BOARD_MASK) - _BOARD_HALF


def _smoke(confirm_ms=5000, clear_ms=10000, fault_ms=10000):
    # smoke chamber in ADC counts: alarm at >= 300, clear at <= 200, valid 10..1000
    return detector.Detector(300, 200, confirm_ms, clear_ms, 10, 1000, True, fault_ms)


def _feed(d, samples, t0=0, add=clock.ticks_add):
    # samples: (value, ms after t0); returns [(ms, event)] for every event
    out = []
    for v, t in samples:
        ev = d.update(v, add(t0, t))
        if ev is not None:
            out.append((t, ev))
    return out


def _level(v, start, end, step=100):
    return [(v, t) for t in range(start, end, step)]


def test_event_constants_distinct():
    assert len({ALARM, CLEAR, FAULT, RESTORED}) == 4
    assert None not in (ALARM, CLEAR, FAULT, RESTORED)
    assert (ALARM, CLEAR, FAULT, RESTORED) == (1, 2, 3, 4)


def test_quiet_produces_nothing():
    d = _smoke()
    assert _feed(d, _level(100, 0, 60000, 250)) == []
    assert not d.active and not d.faulty and not d.waiting()
    assert d.value == 100 and d.peak is None


def test_transient_spike_never_alarms():
    # steam from the kitchen: 4.9 s bursts above the threshold, with clean air in between
    d = _smoke(confirm_ms=5000)
    s = []
    t = 0
    for _ in range(10):
        s += _level(120, t, t + 2000)
        s += _level(650, t + 2000, t + 6900)
        t += 6900
    s += _level(120, t, t + 1000)
    assert _feed(d, s) == []
    assert not d.active and not d.waiting()


def test_sustained_level_alarms_once_at_confirm_ms():
    d = _smoke(confirm_ms=5000)
    got = _feed(d, _level(100, 0, 1000) + _level(400, 1000, 60000))
    assert got == [(6000, ALARM)], got
    assert d.active and d.peak == 400
    # samples not aligned with the timer: the first one at or after confirm_ms alarms
    d = _smoke(confirm_ms=5000)
    got = _feed(d, _level(400, 1000, 20000, 300))
    assert got == [(6100, ALARM)], got


def test_waiting_while_a_confirmation_runs():
    d = _smoke(confirm_ms=5000)
    assert not d.waiting()
    assert d.update(400, 0) is None and d.waiting()
    assert d.update(400, 4999) is None and d.waiting()
    assert d.update(400, 5000) == ALARM and not d.waiting()
    assert d.update(250, 6000) is None and not d.waiting()  # hysteresis band: nothing runs
    assert d.update(150, 7000) is None and d.waiting()  # clear timer
    assert d.update(250, 8000) is None and not d.waiting()
    assert d.update(5, 9000) is None and d.waiting()  # fault timer
    assert d.update(150, 9100) is None and d.waiting()  # clear timer again, fault stopped


def test_noisy_samples_around_threshold_restart_the_timer():
    d = _smoke(confirm_ms=5000)
    # hovering at 300..330 with a dip below `on` every 4 s: never 5 s in a row
    s = []
    for i in range(195):
        t = i * 100
        v = 290 if i % 40 == 39 else 300 + (i * 7) % 31
        s.append((v, t))
    assert _feed(d, s) == []
    assert d.waiting() and not d.active  # the last stretch is still being confirmed
    # a single dip restarts from zero: the next qualifying sample starts the timer again
    d = _smoke(confirm_ms=5000)
    s = _level(320, 0, 4000) + _level(299, 4000, 4001) + _level(320, 4100, 12000)
    got = _feed(d, s)
    assert got == [(9100, ALARM)], got


def test_hysteresis_band_neither_clears_nor_realarms():
    d = _smoke(confirm_ms=5000, clear_ms=10000)
    s = _level(400, 0, 5000 + 1) + _level(250, 5100, 65000) + _level(450, 65000, 70000)
    s += _level(250, 70000, 130000)
    got = _feed(d, s)
    assert got == [(5000, ALARM)], got
    assert d.active and d.peak == 450


def test_clear_after_clear_ms_and_timer_restarts():
    d = _smoke(confirm_ms=1000, clear_ms=10000)
    s = _level(400, 0, 2000) + _level(150, 2000, 30000)
    got = _feed(d, s)
    assert got == [(1000, ALARM), (12000, CLEAR)], got
    assert not d.active and not d.waiting()
    # a sample not meeting the clear condition (here in the band) restarts the clear timer
    d = _smoke(confirm_ms=1000, clear_ms=10000)
    s = _level(400, 0, 2000) + _level(150, 2000, 9000) + [(201, 9000)] + _level(150, 9100, 30000)
    got = _feed(d, s)
    assert got == [(1000, ALARM), (19100, CLEAR)], got
    # back above `on` while clearing: still the same alarm, the clear starts over
    d = _smoke(confirm_ms=1000, clear_ms=10000)
    s = _level(400, 0, 2000) + _level(150, 2000, 5000) + _level(500, 5000, 6000) + _level(150, 6000, 30000)
    got = _feed(d, s)
    assert got == [(1000, ALARM), (16000, CLEAR)], got


def test_realarm_after_clear_needs_new_confirmation():
    d = _smoke(confirm_ms=5000, clear_ms=3000)
    s = _level(400, 0, 5100) + _level(100, 5100, 8200) + _level(400, 8200, 20000)
    got = _feed(d, s)
    assert got == [(5000, ALARM), (8100, CLEAR), (13200, ALARM)], got
    # a short return above `on` after the clear is a new transient, not the old alarm
    d = _smoke(confirm_ms=5000, clear_ms=3000)
    s = _level(400, 0, 5100) + _level(100, 5100, 8200) + _level(400, 8200, 12000) + _level(100, 12000, 20000)
    got = _feed(d, s)
    assert got == [(5000, ALARM), (8100, CLEAR)], got


def test_low_side_channel_pressure():
    # extinguisher gauge in kPa: alarm at <= 800, clear at >= 900, valid 50..2000
    d = detector.Detector(800, 900, 2000, 5000, 50, 2000, False, 10000)
    s = _level(1200, 0, 1000) + _level(780, 1000, 2000) + [(810, 2000)]  # a transient dip
    s += _level(790, 2100, 3000) + _level(700, 3000, 5000) + _level(760, 5000, 6000)
    s += _level(850, 6000, 20000)  # in the band: stays active
    s += _level(950, 20000, 24000) + _level(890, 24000, 24001) + _level(1000, 24100, 40000)
    got = _feed(d, s)
    assert got == [(4100, ALARM), (29100, CLEAR)], got
    assert d.peak == 700  # the lowest pressure of that condition
    assert not d.active and not d.waiting()
    # a reading above `on` never alarms on a low-side channel
    d = detector.Detector(800, 900, 2000, 5000, 50, 2000, False, 10000)
    assert _feed(d, _level(1900, 0, 20000)) == []


def test_fault_after_fault_ms_and_restored_after():
    d = _smoke(confirm_ms=5000, fault_ms=10000)
    # a short-circuit glitch shorter than fault_ms is nothing
    s = _level(100, 0, 1000) + _level(1023, 1000, 10900) + _level(100, 10900, 12000)
    assert _feed(d, s) == []
    assert not d.faulty
    # an open circuit (0 counts) held for fault_ms: one FAULT; good readings for fault_ms:
    # one RESTORED, and a glitch in between restarts the restore
    s = _level(0, 12000, 40000) + _level(100, 40000, 45000) + [(0, 45000)] + _level(100, 45100, 70000)
    got = _feed(d, s)
    assert got == [(22000, FAULT), (55100, RESTORED)], got
    assert not d.faulty and not d.active and not d.waiting()


def test_invalid_samples_never_count_toward_alarm():
    d = _smoke(confirm_ms=5000, fault_ms=60000)
    # smoke level, but every other second the reading saturates above hi (a chamber fault)
    s = []
    for t in range(0, 20000, 100):
        s.append((1023 if (t // 1000) % 2 else 400, t))
    assert _feed(d, s) == []
    assert not d.active
    # a valid reading inside the stretch restarts the fault timer too: no FAULT either
    assert not d.faulty


def test_alarm_stays_active_through_a_fault():
    d = _smoke(confirm_ms=1000, clear_ms=5000, fault_ms=3000)
    # the chamber alarms, then reads 0 (open circuit, below `off`): no CLEAR, only FAULT
    s = _level(500, 0, 2000) + _level(0, 2000, 30000)
    got = _feed(d, s)
    assert got == [(1000, ALARM), (5000, FAULT)], got
    assert d.active and d.faulty and d.value == 0
    # valid clear readings return: RESTORED after fault_ms, CLEAR after clear_ms
    got = _feed(d, _level(100, 30000, 40000))
    assert got == [(33000, RESTORED), (35000, CLEAR)], got
    assert not d.active and not d.faulty


def test_alarm_while_faulty_is_not_held_back():
    # valid smoke readings come back during a fault: the alarm comes before RESTORED
    d = _smoke(confirm_ms=2000, fault_ms=10000)
    s = _level(1023, 0, 10100) + _level(500, 10100, 30000)
    got = _feed(d, s)
    assert got == [(10000, FAULT), (12100, ALARM), (20100, RESTORED)], got


def test_two_events_due_on_one_sample_come_one_per_update():
    # ALARM and RESTORED due together: ALARM first, RESTORED on the next sample
    d = _smoke(confirm_ms=3000, fault_ms=3000)
    got = _feed(d, [(0, 0), (0, 3000), (500, 4000), (500, 7000), (500, 7100), (500, 7200)])
    assert got == [(3000, FAULT), (7000, ALARM), (7100, RESTORED)], got
    # the deferred event is lost if the next sample no longer qualifies (here invalid)
    d = _smoke(confirm_ms=3000, fault_ms=3000)
    got = _feed(d, [(0, 0), (0, 3000), (500, 4000), (500, 7000)])
    assert d.waiting()
    got += _feed(d, [(0, 7100), (500, 7200), (500, 10199), (500, 10200)])
    assert got == [(3000, FAULT), (7000, ALARM), (10200, RESTORED)], got
    # RESTORED and CLEAR due together: RESTORED first, CLEAR on the next sample
    d = _smoke(confirm_ms=0, clear_ms=3000, fault_ms=3000)
    got = _feed(d, [(500, 0), (0, 100), (0, 3100), (100, 4000), (100, 7000), (100, 7100)])
    assert got == [(0, ALARM), (3100, FAULT), (7000, RESTORED), (7100, CLEAR)], got


def test_confirm_ms_zero_alarms_on_first_sample():
    d = _smoke(confirm_ms=0, clear_ms=0, fault_ms=0)
    got = _feed(d, [(100, 0), (300, 10), (310, 20), (250, 30), (200, 40), (350, 50), (5, 60), (100, 70)])
    assert got == [(10, ALARM), (40, CLEAR), (50, ALARM), (60, FAULT), (70, RESTORED)], got
    # the clear was due at 70 too: it comes on the next sample
    assert d.active and d.waiting()
    assert d.update(100, 80) == CLEAR
    assert not d.active and not d.waiting()


def test_constructor_rejects_bad_parameters():
    def bad(name, *args):
        exc = raises(ValueError, detector.Detector, *args)
        assert name in str(exc), (name, str(exc))

    bad("lo", 300, 200, 5000, 10000, 1000, 10)  # lo > hi
    bad("on", 1200, 200, 5000, 10000, 10, 1000)  # on above hi
    bad("on", 5, 200, 5000, 10000, 10, 1000, False)  # on below lo
    bad("off", 300, 2, 5000, 10000, 10, 1000)  # off below lo
    bad("off", 300, 1001, 5000, 10000, 10, 1000, False)  # off above hi
    bad("off", 300, 300, 5000, 10000, 10, 1000)  # no hysteresis
    bad("off", 300, 400, 5000, 10000, 10, 1000)  # off on the wrong side (above)
    bad("off", 800, 700, 5000, 10000, 50, 2000, False)  # off on the wrong side (below)
    bad("confirm_ms", 300, 200, -1, 10000, 10, 1000)
    bad("clear_ms", 300, 200, 5000, -1, 10, 1000)
    bad("fault_ms", 300, 200, 5000, 10000, 10, 1000, True, -1)
    # the edges are accepted
    detector.Detector(1000, 10, 0, 0, 10, 1000, True, 0)
    detector.Detector(10, 1000, 0, 0, 10, 1000, False, 0)


def test_peak():
    d = _smoke(confirm_ms=3000, clear_ms=2000, fault_ms=60000)
    # a transient sets the peak of its own confirmation only
    _feed(d, _level(900, 0, 1000) + _level(100, 1000, 2000))
    assert d.peak == 900
    # a new confirmation resets it; invalid readings (1023) never count; it keeps rising
    # while active and holds after the clear, until the next confirmation starts
    s = _level(350, 2000, 3000) + _level(1023, 3000, 3001) + _level(420, 3100, 4000) + _level(380, 4000, 6500)
    s += _level(700, 6500, 7000) + _level(250, 7000, 8000) + _level(100, 8000, 11000)
    got = _feed(d, s)
    assert got == [(6100, ALARM), (10000, CLEAR)], got
    assert d.peak == 700
    assert _feed(d, [(100, 11000), (330, 12000)]) == [] and d.peak == 330
    # the ALARM carries the peak of its own confirmation
    d = _smoke(confirm_ms=3000)
    seen = []
    for v, t in [(310, 0), (640, 1000), (520, 2000), (480, 3000), (900, 4000)]:
        if d.update(v, t) == ALARM:
            seen.append((t, d.peak))
    assert seen == [(3000, 640)], seen
    assert d.peak == 900
    # a low-side channel reports its minimum
    d = detector.Detector(800, 900, 1000, 1000, 50, 2000, False, 10000)
    assert _feed(d, [(790, 0), (600, 500), (750, 1000)]) == [(1000, ALARM)]
    assert d.peak == 600
    assert d.update(20, 1100) is None and d.peak == 600  # invalid: not a pressure reading
    assert d.update(580, 1200) is None and d.peak == 580


def _wrap_case():
    # alarm, fault through it, restore, clear and a re-alarm within 30 s
    s = _level(100, 0, 1000) + _level(500, 1000, 8000) + _level(1023, 8000, 20000)
    s += _level(100, 20000, 32000) + _level(400, 32000, 38000)
    want = [(6000, ALARM), (18000, FAULT), (30000, RESTORED), (30000 + 100, CLEAR), (37000, ALARM)]
    return s, want


def _wrap_detector():
    return _smoke(confirm_ms=5000, clear_ms=10000, fault_ms=10000)


def test_ticks_wrap_native():
    # On MicroPython the ticks run up to ticks_add(0, -1) and wrap to 0 (2^62 on the unix
    # port): start 10 s before the wrap. On CPython clock is plain arithmetic through 0.
    s, want = _wrap_case()
    t0 = clock.ticks_add(0, -10000)
    got = _feed(_wrap_detector(), s, t0)
    assert got == want, got
    if IS_MICROPYTHON:
        times = [clock.ticks_add(t0, t) for _, t in s]
        assert times[0] > times[-1], "the sample times did not wrap"


def test_ticks_wrap_board_period():
    # A board's 30-bit ticks on both interpreters: raw values wrap from 2^30-1 to 0 and
    # only ticks_diff (the board's, patched in) makes sense of them. Every timer of the
    # case spans the wrap at some start offset.
    s, want = _wrap_case()

    def add(a, d):
        return (a + d) & _BOARD_MASK

    saved = detector.ticks_diff
    detector.ticks_diff = _board_ticks_diff
    try:
        for back in (500, 3000, 10000, 25000, 31000, 36000):
            for base in (_BOARD_PERIOD, _BOARD_HALF):
                t0 = (base - back) & _BOARD_MASK
                got = _feed(_wrap_detector(), s, t0, add)
                assert got == want, (back, base, got)
    finally:
        detector.ticks_diff = saved
    assert add(_BOARD_PERIOD - 500, s[-1][1]) < _BOARD_PERIOD - 500, "the sample times did not wrap"


def test_held_ms_is_the_time_from_the_first_sample_of_the_run():
    d = _smoke(confirm_ms=5000)
    # a run broken at 2 s starts again at 3 s: held counts from there, to the confirming sample
    s = _level(400, 0, 2000, 500)
    s.append((100, 2500))
    s.extend(_level(400, 3000, 9000, 700))
    assert _feed(d, s) == [(8600, ALARM)]
    assert d.held_ms == 5600
    d2 = _smoke(confirm_ms=0)
    assert _feed(d2, [(100, 0), (500, 250)]) == [(250, ALARM)] and d2.held_ms == 0
