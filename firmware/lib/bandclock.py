# The wristband's seconds clock and advert counter (docs/protocol.md section 10.2), kept
# across power cuts with lib/record.py atomic records.
#
# counter() hands out counters that strictly increase for the life of the band, never
# running behind the clock: max(last + 1, now). None is above the reservation R kept in
# flash: before a counter would pass R - 2^K/4 a new R = counter + 2^K/2 is written. At boot
# the band starts above the stored R, so no counter is ever used twice (a CCM nonce reused
# with another status would leak it).
# Clock: the board's RTC when it has one that runs (rtc() -> unix seconds, or None when it
# is not set), else the value restored from flash (R) plus the ticks since boot. A clock
# restored from flash lags real time by the time the band was off: restored() is True for
# the first window after such a boot so the advert can say so (flag CLOCK_RESTORED).
# The record also keeps the last SOS/fall event id, so a reboot never reuses one.
#
# Record payload: R (u32), event id (u16); kept in two slots written one after the other,
# the larger R wins (as store.BootCounter), so a torn or lost slot never sends R back.
import struct

import record
from clock import const, ticks_diff, ticks_ms

_U32 = const(0xFFFFFFFF)
_REC = ">IH"
_REC_LEN = const(6)


class ClockError(Exception):
    pass


class BandClock:
    def __init__(self, root, k=10, rtc=None):
        if not 8 <= k <= 15:
            raise ClockError("rotation exponent K must be 8 to 15")
        record._mkdir(root)
        self._slots = (root + "/clock.0", root + "/clock.1")
        self._rtc = rtc
        self._ahead = 1 << (k - 1)  # reservation: 2^K/2 ahead
        self._guard = 1 << (k - 2)  # renewed 2^K/4 before it is reached
        self._window = 1 << k
        self.writes = 0
        self.damaged = 0
        r, self.event_id = self._load()
        self._reserved = r
        self._last = r  # every counter from now on is above everything used before
        self._base = r
        self._t0 = ticks_ms()
        self._restored_until = 0
        if r and self._rtc_now() is None:
            self._restored_until = r + self._window

    def _load(self):
        best = (0, 0)
        for path in self._slots:
            data = record.read(path)
            if data is not None and len(data) == _REC_LEN:
                rec = struct.unpack(_REC, data)
                if rec[0] >= best[0]:
                    best = rec
            elif record._exists(path):
                self.damaged += 1
        return best

    def _save(self, r, event_id):
        rec = struct.pack(_REC, r, event_id)
        for path in self._slots:
            record.atomic_write(path, rec)
        self.writes += 1
        self._reserved = r

    def _rtc_now(self):
        if self._rtc is None:
            return None
        t = self._rtc()
        if t is None or t <= 0:
            return None
        return int(t)

    def now(self):
        # seconds; the RTC when it runs, never behind the restored base
        t = self._base + ticks_diff(ticks_ms(), self._t0) // 1000
        r = self._rtc_now()
        if r is not None and r > t:
            return r
        return t

    def set(self, t):
        # provisioning: the clock starts at unix time t (no-op when already past it)
        if t > self.now():
            self._base = t
            self._t0 = ticks_ms()
            self._restored_until = 0
            if t > self._reserved - self._guard:
                self._save(min(t + self._ahead, _U32), self.event_id)

    def counter(self):
        # the counter for a new advert content
        c = max(self._last + 1, self.now())
        if c > _U32:
            raise ClockError("counter exhausted")
        if c > self._reserved - self._guard:
            self._save(min(c + self._ahead, _U32), self.event_id)
        self._last = c
        return c

    def last(self):
        # the counter of the current content (for repeats of the same advert)
        return self._last

    def restored(self, counter):
        return counter < self._restored_until

    def new_event(self):
        # the id of a new SOS/fall event, saved before it is used
        e = self.event_id + 1 if self.event_id < 0xFFFF else 1
        self._save(self._reserved, e)
        self.event_id = e
        return e
