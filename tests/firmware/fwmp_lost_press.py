# Presses are never lost on a real board's hal: the alarm post app on hal/esp32.py with the
# fakes of tests/firmware/fakes.py, its loop asleep in a 1 s select.poll(), and a click made
# by another thread (the pin's hard interrupt, as the hardware raises it) entirely inside that
# poll. The wake flag (hal/machineboard.py _Wake) joined the poll set as a stream-protocol object, so the
# poll ends at the press and the app sees one ALARM.
# MicroPython only: CPython's select.poll takes only file descriptors, and what is proven here
# is MicroPython's poll of a stream object (extmod/modselect.c).
import _thread
import json

import fakes
from apps.alarm_post import app
from clock import sleep_ms, ticks_diff, ticks_ms
from fwsupport import rmtree, scratch_dir
from hal import boardspec, esp32

RUNS_ON = ("micropython",)

SPEC = {
    "board": "t-post",
    "port": "esp32",
    "button": {"pin": 9, "active": 0, "pull": "up"},
    "tamper": {"pin": 4, "active": 1, "pull": "down"},  # the lid closed
    "led": {"rgb": [1, 2, 3], "active": 1},
    "buzzer": {"pin": 10, "active": 1},
    "uart": {"id": 1, "tx": 21, "rx": 20},
}


class _Board(esp32.Board):
    # records each wait of the loop: (timeout, how long it took)
    def __init__(self, *a):
        esp32.Board.__init__(self, *a)
        self.waiting = False
        self.waits = []

    def wait(self, poller, ms):
        start = ticks_ms()
        self.waiting = True
        try:
            esp32.Board.wait(self, poller, ms)
        finally:
            self.waiting = False
            self.waits.append((ms, ticks_diff(ticks_ms(), start)))


def _post(name):
    root = scratch_dir(name)
    rmtree(root)
    root = scratch_dir(name)
    path = root + "/config.json"
    cfg = {"kind": "alarm_post", "id": "AP-0001", "key": bytes(range(32)).hex(), "transport": "uart"}
    cfg["data_dir"] = root + "/data"
    with open(path, "w") as f:
        f.write(json.dumps(cfg))
    m = fakes.Machine()
    board = _Board(boardspec.check(SPEC, "boards/t-post.json", "esp32", "t-post"), m)
    post = app.AlarmPost(app.load_config(path), board)
    return post, board, m


def _idle(post, board):
    # run the loop until it sleeps the full second (linked over the UART, nothing to do)
    start = ticks_ms()
    while not board.waits or board.waits[-1][0] < 1000:
        if ticks_diff(ticks_ms(), start) > 5000:
            raise AssertionError("the app never settled into 1 s waits: %r" % board.waits[-5:])
        post.step()


def _clicks(board, pin, clicks):
    # another thread: once the loop is in its wait, (press_ms, gap_ms) clicks on the pin
    def run():
        while not board.waiting:
            sleep_ms(1)
        sleep_ms(100)
        for press_ms, gap_ms in clicks:
            pin.drive(0)  # pressed (active low)
            sleep_ms(press_ms)
            pin.drive(1)
            sleep_ms(gap_ms)

    _thread.start_new_thread(run, ())


def _run_for(post, ms):
    start = ticks_ms()
    while ticks_diff(ticks_ms(), start) < ms:
        post.step()


def _alarms(post):
    return sorted(s for prio, _, s, _ in post.outbox.items() if prio == 0)


def test_a_150_ms_click_made_during_a_1_s_poll_gives_one_alarm():
    post, board, m = _post("lost-press-1")
    _idle(post, board)
    n = len(board.waits)
    _clicks(board, m.pins[9], ((150, 0),))
    _run_for(post, 1500)
    assert _alarms(post) == [2], post.outbox.items()  # seq 1 is ONLINE
    first = board.waits[n]
    assert first[0] == 1000 and first[1] < 400, board.waits[n : n + 3]  # the press ended the wait
    assert board.button.lost == 0


def test_two_clicks_200_ms_apart_give_two_alarms():
    post, board, m = _post("lost-press-2")
    _idle(post, board)
    _clicks(board, m.pins[9], ((150, 50), (150, 0)))
    _run_for(post, 1500)
    assert _alarms(post) == [2, 3], post.outbox.items()
