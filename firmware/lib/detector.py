# Decision logic of one venue safety sensor channel (smoke, gas, fire door, extinguisher
# pressure): turns raw samples into a few confirmed events, so one noisy reading (steam from
# a kitchen, a door bounced by a draught) never raises an alarm and one good reading never
# silences it. Pure: fed samples with their ticks, no I/O; the app reads the ADC or pin.
#
#   above=True  (smoke, gas): the condition is value >= on, it is clear when value <= off
#   above=False (pressure low): the condition is value <= on, it is clear when value >= off
# off sits on the clear side of on; samples between the two (the hysteresis band) neither
# clear nor re-alarm an active channel, though one does stop a running clear confirmation.
# Samples outside lo..hi are invalid (open or short circuit, chamber fault).
#
# Events, each returned once by update():
#   ALARM    the condition held on every sample for confirm_ms (0: on the first sample);
#            held_ms then says how long it had held (from the first sample of the run)
#   CLEAR    while active, the clear condition held on every sample for clear_ms
#   FAULT    every sample invalid for fault_ms
#   RESTORED after a FAULT, every sample valid for fault_ms
# A sample breaking a confirmation stops its timer and the next qualifying sample starts it
# again from zero. An invalid sample breaks the alarm and clear confirmations (it counts for
# neither) but never ends an active alarm: a smoke detector that alarmed and then lost its
# chamber stays active until valid samples confirm the clear. Valid samples count toward
# ALARM and CLEAR while a FAULT is still being restored (an alarm must not wait for it).
#
# One event per update(). Only ALARM+RESTORED and RESTORED+CLEAR can fall due on one sample
# (FAULT needs an invalid sample, which ALARM and CLEAR cannot use); the order is ALARM,
# FAULT, RESTORED, CLEAR (bad news first). The event not returned keeps its timer running
# and comes on the next sample if that sample still qualifies; waiting() stays True meanwhile.
#
# Times are ticks_ms values compared only through ticks_diff, so the ticks wrap (2^30 ms on
# boards) is harmless as long as update() runs more often than every half period (~6 days)
# and the durations are shorter than that. State is a few ints and bools: update()
# allocates nothing beyond small ints and can run in a fast polling loop.
from clock import const, ticks_diff

ALARM = const(1)  # the condition was confirmed (apps/sensor/app.py names the four by value)
CLEAR = const(2)  # an active condition was confirmed gone
FAULT = const(3)  # readings out of the valid range confirmed
RESTORED = const(4)  # readings valid again after a FAULT, confirmed


class Detector:
    def __init__(self, on, off, confirm_ms, clear_ms, lo, hi, above=True, fault_ms=10000):
        if lo > hi:
            raise ValueError("detector: lo must be <= hi, got lo=%r hi=%r" % (lo, hi))
        for name, v in (("on", on), ("off", off)):
            if not lo <= v <= hi:
                raise ValueError("detector: %s=%r outside lo..hi (%r..%r)" % (name, v, lo, hi))
        if (off >= on) if above else (off <= on):
            raise ValueError("detector: off must be %s on, got on=%r off=%r" % ("below" if above else "above", on, off))
        for name, ms in (("confirm_ms", confirm_ms), ("clear_ms", clear_ms), ("fault_ms", fault_ms)):
            if ms < 0:
                raise ValueError("detector: %s must be >= 0, got %r" % (name, ms))
        self.on = on
        self.off = off
        self.lo = lo
        self.hi = hi
        self.above = bool(above)
        self.confirm_ms = confirm_ms
        self.clear_ms = clear_ms
        self.fault_ms = fault_ms
        # comparisons run on s = +value (above) or -value (not above), so one code path
        # serves both directions: the condition is s >= _on, clear is s <= _off
        self._on = on if above else -on
        self._off = off if above else -off
        self.active = False  # between ALARM and CLEAR
        self.faulty = False  # between FAULT and RESTORED
        self.value = None  # last sample (None before the first)
        self.peak = None  # most extreme valid sample since the current confirmation began
        self.held_ms = 0  # at ALARM: how long the condition had held (>= confirm_ms)
        self._pk = 0  # peak in the s scale below
        self._t = 0  # ticks when the alarm (inactive) or clear (active) confirmation began
        self._timing = False  # that confirmation is running
        self._ft = 0  # ticks when the fault (valid) or restore (faulty) confirmation began
        self._ftiming = False

    def update(self, value, now):
        self.value = value
        valid = self.lo <= value <= self.hi
        alarm = clear = False
        if valid:
            s = value if self.above else -value
            if self.active:
                if s > self._pk:
                    self._set_peak(value)
                if s <= self._off:
                    if not self._timing:
                        self._timing = True
                        self._t = now
                    clear = ticks_diff(now, self._t) >= self.clear_ms
                else:
                    self._timing = False
            elif s >= self._on:
                if not self._timing:
                    self._timing = True
                    self._t = now
                    self._set_peak(value)
                elif s > self._pk:
                    self._set_peak(value)
                alarm = ticks_diff(now, self._t) >= self.confirm_ms
            else:
                self._timing = False
        else:
            self._timing = False
        # the fault timer runs while the sample contradicts the fault state
        fault = restore = False
        if valid == self.faulty:
            if not self._ftiming:
                self._ftiming = True
                self._ft = now
            if ticks_diff(now, self._ft) >= self.fault_ms:
                restore = valid
                fault = not valid
        else:
            self._ftiming = False
        if alarm:
            self.active = True
            self._timing = False
            self.held_ms = ticks_diff(now, self._t)
            return ALARM
        if fault:
            self.faulty = True
            self._ftiming = False
            return FAULT
        if restore:
            self.faulty = False
            self._ftiming = False
            return RESTORED
        if clear:
            self.active = False
            self._timing = False
            return CLEAR
        return None

    def _set_peak(self, value):
        self.peak = value
        self._pk = value if self.above else -value

    def waiting(self):
        # a confirmation is running (or its event is deferred to the next sample): the app
        # samples faster until it settles
        return self._timing or self._ftiming
