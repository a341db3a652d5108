# Wi-Fi for a board whose config.json has "wifi" (hal/machineboard.py loads this module only
# then): network.WLAN(STA_IF), started by the board's first service(), the join checked every
# loop turn, a join that has not succeeded in 15 s retried after 1 s, 2 s, ... 60 s (+-25 %
# jitter), a dropped network joined again at once. online() gates the app's MQTT link. The
# credentials are never printed.
import os

from clock import const, ticks_add, ticks_diff, ticks_ms

_MIN_MS = const(1000)
_MAX_MS = const(60000)
_JOIN_MS = const(15000)  # a join that has not succeeded by then is retried


class Wifi:
    def __init__(self, network, creds):
        self.network = network
        self._creds = creds
        self._wlan = None
        self.next = ticks_ms()
        self.since = None  # ticks the current join began
        self.backoff = _MIN_MS
        self.joins = 0

    def online(self):
        w = self._wlan
        return w is not None and w.isconnected()

    def step(self, now):
        creds = self._creds
        w = self._wlan
        if w is None:
            w = self._wlan = self.network.WLAN(self.network.STA_IF)
            w.active(True)
        if w.isconnected():
            if self.since is not None:
                self.since = None
                self.backoff = _MIN_MS
                print("hal: wifi up")
            return
        if self.since is not None:
            if ticks_diff(now, self.since) < _JOIN_MS:
                return  # still joining
            self.since = None
            self.next = ticks_add(now, _jitter(self.backoff))
            print("hal: wifi join failed; next try in %d ms" % ticks_diff(self.next, now))
            self.backoff = min(self.backoff * 2, _MAX_MS)
            try:
                w.disconnect()
            except OSError:
                pass
            return
        if ticks_diff(now, self.next) < 0:
            return
        self.since = now
        self.joins += 1
        try:
            w.connect(creds[0], creds[1])  # returns at once; isconnected() follows
        except OSError as e:
            print("hal: wifi join could not start: %s" % e)


def _jitter(ms):
    r = os.urandom(2)
    return ms * 3 // 4 + (r[0] << 8 | r[1]) * (ms // 2) // 65536
