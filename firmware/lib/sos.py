# SOS button logic for the wristband: hold the button sos_hold_ms (2 s) and an SOS event
# starts: a new event id, adverts every burst_interval_ms (100 ms) for burst_ms (30 s), then
# the normal interval again with the SOS flag kept until the event is age_out_s old. Holding
# again during the burst changes nothing (the same event); holding again after it starts a
# new event. Pure: fed button levels with their ticks, no I/O; the event id comes from the
# caller (saved to flash before use, lib/bandclock.py).
from button import LONG, Debouncer
from clock import const, ticks_diff

STARTED = const(1)


class Sos:
    def __init__(self, hold_ms=2000, burst_ms=30000, burst_interval_ms=100, interval_ms=1000, age_out_s=900):
        self._button = Debouncer(30, hold_ms)
        self.burst_ms = burst_ms
        self.burst_interval_ms = burst_interval_ms
        self.interval_ms = interval_ms
        self.age_out_ms = age_out_s * 1000
        self.active_ = False
        self.started = 0  # ticks when the current event started
        self.event_id = 0

    def update(self, level, now, new_event_id):
        # new_event_id(): called once per new event; returns STARTED when an event began
        if self._button.update(level, now) == LONG:
            if self.active_ and ticks_diff(now, self.started) < self.burst_ms:
                return None
            self.event_id = new_event_id()
            self.started = now
            self.active_ = True
            return STARTED
        return None

    def waiting(self):
        return self._button.waiting()

    def level(self):
        return self._button.level()

    def active(self, now):
        if self.active_ and ticks_diff(now, self.started) >= self.age_out_ms:
            self.active_ = False
        return self.active_

    def bursting(self, now):
        return self.active(now) and ticks_diff(now, self.started) < self.burst_ms

    def interval(self, now):
        return self.burst_interval_ms if self.bursting(now) else self.interval_ms

    def age_s(self, now):
        return ticks_diff(now, self.started) // 1000 if self.event_id else 0
