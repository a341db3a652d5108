# Run by MicroPython (the unix port) from the wristband's bundle directory for its board: the
# CPU time of each kind of wake-up of the band's app (apps/wristband/app.py) on the board's own
# hal (hal/zephyr.py, hal/machineboard.py, hal/lis3dh.py), with the fakes of
# tests/firmware/fakes.py (on the module path) standing in for machine and bluetooth.
# The firmware_wakeups benchmark (tests/bench/bench_firmware.py) turns these into the band's
# energy on the nRF52840. Prints one JSON line of microseconds per wake (median of many):
#   nap      one look at the poll set between two naps of the hal's wait() (hal/zephyr.py)
#   advert   a loop turn that builds a new advert: status, counter, AES-CCM, gap_advertise
#   fifo     a loop turn that reads one FIFO watermark batch (16 samples) into the detector
#   fall     the loop turn after a free-fall interrupt: 32 samples from the FIFO
# The fakes' own Python time (the fake I2C part, the fake BLE controller) is measured around
# each call into them and taken out: on the board that work is the peripheral's (the I2C bus
# time is added by the benchmark from the bytes moved).
# usage: micropython mp_band_wakes.py <board file> <scratch dir>
import json
import os
import sys
from time import ticks_diff, ticks_us

import fakes
from apps.wristband import app
from clock import ticks_add, ticks_ms
from hal import zephyr

_REPS = 300


class _Look:
    # select.poll(0) on a board with only the wake flag registered
    def __init__(self, wake):
        self.wake = wake

    def poll(self, ms):
        return [self.wake] if self.wake.ioctl(3, 1) else []


def main(board_file, scratch):
    with open(board_file) as f:
        spec = json.load(f)
    m = fakes.Machine(esp32=False)
    bt = fakes.Bluetooth(rotates=False)
    part = fakes.Lis3dh(m, spec["accel"]["addr"])
    board = zephyr.Board(spec, m, None, bt, None, None, clock=(lambda: 789004800, zephyr.EPOCH_2000))
    in_fakes = [0]

    def timed(fn):
        def call(*a, **kw):
            t = ticks_us()
            try:
                return fn(*a, **kw)
            finally:
                in_fakes[0] += ticks_diff(ticks_us(), t)

        return call

    part.read = timed(part.read)
    part.write = timed(part.write)
    cfg = dict(app.DEFAULTS)
    cfg.update({"id": "WB-BENCH", "key": bytes(range(32)), "data_dir": scratch})
    try:
        os.mkdir(scratch)
    except OSError:
        pass
    band = app.Wristband(cfg, board)
    ble = bt.bles[0]
    ble.gap_advertise = timed(ble.gap_advertise)
    ble.config = timed(ble.config)
    acc = band.acc
    naps = [0]
    board.wait = lambda poller, ms: None  # the loop's sleep is measured on its own ("nap")

    def turn(setup):
        setup()
        in_fakes[0] = 0
        t = ticks_us()
        band.step()
        return ticks_diff(ticks_us(), t) - in_fakes[0]

    def no_advert():
        band.next_adv = ticks_add(ticks_ms(), 1000000)

    def advert():
        band.next_adv = ticks_ms()

    def batch(n):
        def setup():
            no_advert()
            for _ in range(n):
                part.push(0, 0, 1000)
            acc.dev.pending = 1

        return setup

    def median(setup):
        for _ in range(20):
            turn(setup)
        got = sorted(turn(setup) for _ in range(_REPS))
        return got[len(got) // 2]

    out = {"advert": median(advert), "fifo": median(batch(16)), "fall": median(batch(32))}
    # the nap loop: zephyr.Board.wait with the sleep taken out, over a fixed time. Its look
    # at the poll set is what a board's select.poll(0) does for the band's one object (calls
    # the wake flag's ioctl, modselect.c poll_set_poll_once): the unix port's poll(0) would
    # add a system poll() of a millisecond that a board does not make
    real_sleep = zephyr.sleep_ms

    def no_sleep(ms):
        naps[0] += 1

    zephyr.sleep_ms = no_sleep
    try:
        t = ticks_us()
        zephyr.Board.wait(board, _Look(board.wake), 200)
        spent = ticks_diff(ticks_us(), t)
    finally:
        zephyr.sleep_ms = real_sleep
    out["nap"] = round(spent / max(1, naps[0]), 2)
    # the schedule, from the code: looks of the hal's wait in one second (the real sleep),
    # the app's advert interval and the interval the controller was given while idle
    wrapped = zephyr.sleep_ms

    def counted(ms):
        naps[0] += 1
        wrapped(ms)

    naps[0] = 0
    zephyr.sleep_ms = counted
    try:
        zephyr.Board.wait(board, _Look(board.wake), 1000)
    finally:
        zephyr.sleep_ms = wrapped
    intervals = [a[0] for a in ble.adverts if a[0] is not None]
    out["naps_per_s"] = naps[0]
    out["adverts_per_s"] = 1000 / cfg["interval_ms"]
    out["adv_events_per_s"] = 1e6 / intervals[-1]
    print(json.dumps(out))


main(*sys.argv[1:])
