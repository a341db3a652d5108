# Millisecond clock for device code: ticks on MicroPython, monotonic time on CPython, and a
# 64-bit uptime that does not wrap (ticks_ms wraps after about 12 days on boards).
# Also every module's `const`: MicroPython's compiler folds const() wherever the name comes
# from, so one CPython fallback here serves them all (a fallback per module cost flash).
import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
except AttributeError:

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, d):
        return a + d

    def sleep_ms(ms):
        time.sleep(ms / 1000)


_last = ticks_ms()
_uptime = 0


def uptime_ms():
    # must be called at least once per ticks period (~12 days), which any main loop does
    global _last, _uptime
    now = ticks_ms()
    _uptime += ticks_diff(now, _last)
    _last = now
    return _uptime
