# The unix hal's input pins (hal/unix.py) without a supervisor: control lines fed as if read
# from the socket. Changes the supervisor stamped with its time reach the pin handler at once,
# each with the time it was made on the board's clock, so a press and release read in one go
# (the app was busy) still look as long as they were, and nothing waits in the hal for a
# later poll(). Runs on MicroPython and CPython.
from clock import ticks_diff, ticks_ms
from hal.unix import Board


def _board():
    b = Board()
    edges = []
    b.button.irq(lambda pin, level, t: edges.append((level, t)))
    return b, edges


def test_press_and_release_read_together_keep_their_150_ms():
    b, edges = _board()
    b._feed(b"in button 1 5000\nin button 0 5150\n")
    assert [lv for lv, _ in edges] == [1, 0] and b.button.value() == 0
    assert ticks_diff(edges[1][1], edges[0][1]) == 150
    assert ticks_diff(edges[1][1], ticks_ms()) <= 0  # never stamped in the future


def test_a_later_read_never_stamps_a_change_before_an_earlier_one_or_in_the_future():
    b, edges = _board()
    b._feed(b"in button 1 1000\n")
    b._feed(b"in button 0 1100\n")  # a tighter bound on the offset: still after the press
    assert ticks_diff(edges[1][1], edges[0][1]) >= 0
    assert ticks_diff(edges[1][1], ticks_ms()) <= 0


def test_two_clicks_read_in_one_burst_keep_their_order_and_spacing():
    b, edges = _board()
    b._feed(b"in button 1 5000\nin button 0 5150\nin button 1 5350\nin button 0 5500\n")
    assert [lv for lv, _ in edges] == [1, 0, 1, 0]
    t0 = edges[0][1]
    assert [ticks_diff(t, t0) for _, t in edges] == [0, 150, 350, 500]


def test_unstamped_lines_apply_at_once_and_a_bad_stamp_is_counted():
    b, edges = _board()
    b._feed(b"in button 1\nin button 0\n")
    assert [lv for lv, _ in edges] == [1, 0]
    b._feed(b"in button 1 soon\n")
    assert b.malformed == 1 and b.button.value() == 0


def test_reset_cause_and_wait_are_there_for_the_apps():
    b = Board()
    assert b.reset_cause() in (0, 1, 5)
    assert b.online()
    assert b.colour() == (0, 0, 0)
    b.rgb(1, 0, 1)
    assert b.colour() == (1, 0, 1)
