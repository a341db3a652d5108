# The wristband's clock and advert counter (lib/bandclock.py): counters strictly increase
# across reboots, the reservation is written ahead, torn slots, restored clocks, event ids.
# Runs on MicroPython and CPython.
import bandclock
import store
from fwsupport import raises, rmtree, scratch_dir


def _fresh(name):
    rmtree(scratch_dir(name))
    return scratch_dir(name)


class _Rtc:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_counter_follows_rtc_and_strictly_increases():
    root = _fresh("bc1")
    rtc = _Rtc(1700000000)
    c = bandclock.BandClock(root, 10, rtc)
    assert c.counter() == 1700000000
    assert c.counter() == 1700000001  # a second change within the same second
    rtc.t = 1700000005
    assert c.counter() == 1700000005
    assert c.last() == 1700000005


def test_reservation_is_written_ahead_and_rarely():
    root = _fresh("bc2")
    rtc = _Rtc(1700000000)
    c = bandclock.BandClock(root, 10, rtc)
    for i in range(4096):
        rtc.t = 1700000000 + i
        c.counter()
    # a write every 2^K/4 = 256 s or so
    assert 14 <= c.writes <= 18, c.writes
    r = c._reserved
    assert c.last() < r <= c.last() + 512


def test_reboot_never_reuses_a_counter_even_with_the_rtc_behind():
    root = _fresh("bc3")
    rtc = _Rtc(1700000000)
    c = bandclock.BandClock(root, 10, rtc)
    used = [c.counter() for _ in range(50)]
    rtc.t = 1600000000  # an RTC that was reset to an older time
    c2 = bandclock.BandClock(root, 10, rtc)
    n = c2.counter()
    assert n > max(used)
    assert not c2.restored(n)  # an RTC runs: no restored flag


def test_clock_restored_from_flash_without_rtc():
    root = _fresh("bc4")
    c = bandclock.BandClock(root, 10)
    c.set(1700000000)
    first = c.counter()
    assert first >= 1700000000 and not c.restored(first)
    c2 = bandclock.BandClock(root, 10)
    n = c2.counter()
    assert n > first and n <= first + 512 + 1
    assert c2.restored(n) and not c2.restored(n + 1024)


def test_torn_slot_does_not_send_the_reservation_back():
    root = _fresh("bc5")
    rtc = _Rtc(1700000000)
    c = bandclock.BandClock(root, 10, rtc)
    for i in range(1000):
        rtc.t = 1700000000 + i
        c.counter()
    top = c.last()
    with open(root + "/clock.1", "wb") as f:
        f.write(b"GE\x01garbage")
    c2 = bandclock.BandClock(root, 10, _Rtc(1))
    assert c2.counter() > top and c2.damaged == 1


def test_event_ids_persist_and_wrap():
    root = _fresh("bc6")
    c = bandclock.BandClock(root, 10, _Rtc(1700000000))
    assert c.new_event() == 1 and c.new_event() == 2
    c2 = bandclock.BandClock(root, 10, _Rtc(1700000000))
    assert c2.new_event() == 3
    store.atomic_write(root + "/clock.0", b"\x65\x53\xf1\x00\xff\xff")
    store.atomic_write(root + "/clock.1", b"\x65\x53\xf1\x00\xff\xff")
    c3 = bandclock.BandClock(root, 10, _Rtc(1700000000))
    assert c3.new_event() == 1


def test_bad_k_rejected():
    raises(bandclock.ClockError, bandclock.BandClock, _fresh("bc7"), 7)
