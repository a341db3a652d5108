# The wristband's nRF52840 on MicroPython's Zephyr port (docs/boards.md: why this SoC and
# what the port can and cannot do): the Board API of hal/machineboard.py with this port's
# differences.
# - Pins are ("gpioN", pin) tuples (the board file's JSON has them as lists: made tuples
#   here); Pin.irq(handler, trigger) runs its handler through the scheduler (no hard IRQs on
#   this port), which still ends a poll() wait.
# - No machine.RTC: rtc() is time.time() on the port's 2000-01-01 epoch, converted to unix
#   seconds, and None until set (below 2024); set_rtc() has nothing to set, so the band's clock
#   (lib/bandclock.py) runs on its own reservation records.
# - The loop's wait is a nap, not select.poll(): this port's poll() re-polls its objects every
#   millisecond while it waits (MICROPY_EVENT_POLL_HOOK is k_msleep(1) in ports/zephyr), a
#   thousand wake-ups a second, each calling the wake flag's Python ioctl. wait() instead
#   sleeps in steps of _NAP_MS (time.sleep_ms waits in k_poll() in the kernel, whose idle
#   thread puts the CPU in System ON sleep, and runs the scheduled pin handlers inside the
#   sleep) and looks at the poll set between them: 5 short wake-ups a second, and a press or
#   the accelerometer's free fall ends the wait within _NAP_MS. The BLE controller keeps
#   advertising the data it was given, every interval, on its own.
# - bluetooth.BLE().gap_advertise() sends legacy scannable adverts from the identity address:
#   config(addr_mode=...) is accepted and ignored by the port, so the radio reports
#   rotates = False (docs/boards.md: the base image needs the port patch for that).
# - machine.WDT and machine.reset_cause() only where the port build has them (checked).
import time

from clock import const, sleep_ms, ticks_add, ticks_diff, ticks_ms

from hal.machineboard import RTC_FLOOR, MachineBoard

EPOCH_2000 = const(946684800)  # unix seconds at 2000-01-01
# the longest a press or a free fall waits for the loop: a free fall's samples stay 640 ms in
# the accelerometer's FIFO, a press keeps its own time (hal/machineboard.py edge rings), and a
# look costs about 0.3 ms of CPU on the nRF52840 (docs/boards.md, Budgets)
_NAP_MS = const(200)


def port_epoch_offset(gmtime=time.gmtime):
    # seconds to add to the port's time.time() for unix time: the 2000 epoch of most
    # MicroPython ports, or 0 where the port counts from 1970
    return EPOCH_2000 if gmtime(0)[0] == 2000 else 0


def _pins(v):
    # ["gpioN", pin] lists (JSON) as the (name, pin) tuples machine.Pin takes on this port
    if isinstance(v, dict):
        return {k: _pins(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if len(v) == 2 and isinstance(v[0], str):
            return (v[0], v[1])
        return [_pins(x) for x in v]
    return v


class Board(MachineBoard):
    HARD_IRQ = False

    def __init__(self, spec, machine, network=None, bluetooth=None, neopixel=None, wifi=None, clock=None):
        MachineBoard.__init__(self, _pins(spec), machine, network, bluetooth, neopixel, wifi)
        self.naps = 0
        self._clock = clock if clock is not None else (time.time, port_epoch_offset())

    def wait(self, poller, ms):
        # until something in the poll set is ready (the wake flag included) or ms pass,
        # looking every _NAP_MS (see the top of this file)
        end = ticks_add(ticks_ms(), ms)
        while not poller.poll(0):
            left = ticks_diff(end, ticks_ms())
            if left <= 0:
                return
            self.naps += 1
            sleep_ms(left if left < _NAP_MS else _NAP_MS)

    def rtc(self):
        now, offset = self._clock
        t = int(now()) + offset
        return t if t >= RTC_FLOOR else None

    def _i2c(self, i):
        # the bus by its devicetree name; its pins and speed are the devicetree's (the board
        # file's i2c pins document the wiring)
        return self.machine.I2C("i2c%d" % i["id"])

    def set_rtc(self, unix):
        raise OSError("hal: the zephyr port has no settable RTC")


def make(spec, wifi=None):
    import bluetooth
    import machine

    return Board(spec, machine, None, bluetooth, None, wifi)
