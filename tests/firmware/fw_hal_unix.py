# The unix hal's input pins (hal/unix.py) without a supervisor: control lines fed as if read
# from the socket. Changes the supervisor stamped with its time keep their spacing when they
# are read together, so a press and release read in one go (the app was busy) still look as
# long as they were. Runs on MicroPython and CPython.
from clock import ticks_diff, ticks_ms
from hal.unix import Board


def _board():
    b = Board()
    edges = []
    b.button.irq(lambda pin: edges.append((pin.value(), ticks_ms())))
    return b, edges


def _service_until(b, cond, ms=2000):
    start = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), start) > ms:
            raise AssertionError("not reached within %d ms" % ms)
        b.service()


def test_press_and_release_read_together_keep_their_150_ms():
    b, edges = _board()
    b._feed(b"in button 1 5000\nin button 0 5150\n")
    assert [lv for lv, _ in edges] == [1] and b.button.value() == 1  # the release waits
    _service_until(b, lambda: len(edges) == 2)
    assert b.button.value() == 0
    gap = ticks_diff(edges[1][1], edges[0][1])
    assert 150 <= gap < 400, gap


def test_changes_read_apart_apply_at_once():
    b, edges = _board()
    b._feed(b"in button 1 5000\n")
    b._feed(b"in button 0 9000\n")  # a later read, nothing waiting: a new burst, applied now
    assert [lv for lv, _ in edges] == [1, 0]


def test_a_change_read_while_one_waits_keeps_the_order():
    b, edges = _board()
    b._feed(b"in button 1 5000\nin button 0 5100\n")
    b._feed(b"in button 1 5200\n")
    assert [lv for lv, _ in edges] == [1]
    _service_until(b, lambda: len(edges) == 3)
    assert [lv for lv, _ in edges] == [1, 0, 1]
    assert ticks_diff(edges[2][1], edges[0][1]) >= 200


def test_unstamped_lines_apply_at_once_and_a_bad_stamp_is_counted():
    b, edges = _board()
    b._feed(b"in button 1\nin button 0\n")
    assert [lv for lv, _ in edges] == [1, 0]
    b._feed(b"in button 1 soon\n")
    assert b.malformed == 1 and b.button.value() == 0
