# The device's link to the gateway: MQTT 3.1.1 through the gateway's local broker
# (docs/protocol.md §5, lib/mqttlink.py), or a UART wired to the gateway (§9,
# lib/uartlink.py). Both classes have the same few methods, so an app above them is the same
# code whichever the config names:
#   open(poller)   connect and join the app's poll set; raises LinkError (or OSError)
#   close()        drop the connection; the app makes a new poll set afterwards
#   room()         True while another frame may go out now
#   send(msg)      one device frame; raises LinkError/OSError when the link broke
#   poll()         handle what arrived: each receipt goes to on_receipt(msg); raises when broke
#                  (MQTT: the gateway's `online` on ge/gateway/status goes to on_gateway(msg))
#   where          text for the console
# Each link is a module of its own, loaded only when a link of that kind is made
# (lib/reporter.py imports mqttlink only for "mqtt", uartlink only for "uart"): a device holds
# the code of the transport it uses and nothing else in its heap (measured: the MQTT client
# is about 12 KB of heap once loaded, the serial framing about 5 KB, on the 64-bit unix port),
# and a bundle for one link carries nothing of the other.
# Here: what both links share, LinkError and Redial (when to try a link again).
import os

from clock import const, ticks_add, ticks_diff

# Reconnection timing (Redial), for a gateway on the venue's LAN shared by up to ~50 devices:
_FLOOR_MS = const(250)  # no attempt sooner: at most 4 attempts/s per device, never a spin
_FIRST_MS = const(1000)  # the first ceiling: a broker restart drops every device at once,
#                          and their first attempts spread over 0.25-1 s
_CAP_MS = const(4000)  # the ceiling's cap: nothing waits more than 4 s after the gateway is
#                        back; 50 devices then average ~24 attempts/s venue-wide (one TCP
#                        SYN and RST each) while it is down, and come back spread over 4 s
_URGENT_CAP_MS = const(1000)  # the cap while an alarm waits for the gateway (no receipt 1)
_WAKE_GAP_MS = const(500)  # a new alarm's attempt at least this long after the previous start
_STABLE_MS = const(10000)  # a link that lasted this long starts the doubling again


class LinkError(Exception):
    pass


class Redial:
    # When the next connection attempt may start. After a failed attempt or a lost link it
    # waits a random time between _FLOOR_MS and a ceiling that doubles from _FIRST_MS up to
    # cap_ms, or urgent_ms while an alarm waits for the gateway ("full jitter", as in the AWS
    # Architecture Blog's "Exponential Backoff And Jitter"; the floor keeps a refused device
    # from spinning). Each device draws its own delays, so a venue's devices that lost the
    # gateway together do not come back together. wake(): a new alarm asks for an attempt
    # now, granted unless an attempt started less than _WAKE_GAP_MS ago, then at the end of
    # that gap; whatever happens at the input, alarms add at most 2 attempts/s.
    # The caller passes the time; nothing here allocates (16-bit xorshift, small ints).
    def __init__(self, seed=0, cap_ms=_CAP_MS, urgent_ms=_URGENT_CAP_MS):
        if not seed:
            r = os.urandom(2)
            seed = r[0] << 8 | r[1]
        self._x = (seed & 0xFFFF) or 1
        self.cap_ms = cap_ms
        self.urgent_ms = urgent_ms
        self.fails = 0  # attempts failed (or links lost) since the last stable link
        self.due = None  # ticks from which the next attempt may start (None: now)
        self.started = None  # ticks when the last attempt started
        self.up_since = None  # ticks when the link came up, while it is up
        self.woken = False  # the next (or current) attempt was brought forward by wake()

    def wait_ms(self, now):
        # 0 when an attempt may start now
        return 0 if self.due is None else max(0, ticks_diff(self.due, now))

    def attempt(self, now):
        # an attempt starts now
        self.started = now

    def up(self, now):
        self.up_since = now
        self.woken = False

    def down(self, now, urgent=False):
        # the attempt failed or the link was lost at now: returns the delay to the next attempt
        if self.up_since is not None and ticks_diff(now, self.up_since) >= _STABLE_MS:
            self.fails = 0
        self.up_since = None
        self.woken = False
        cap = self.urgent_ms if urgent else self.cap_ms
        ceiling = min(cap, _FIRST_MS << min(self.fails, 8))
        self.fails += 1
        # 16-bit xorshift (7, 9, 8): period 65535
        x = self._x
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        self._x = x
        delay = _FLOOR_MS + x * max(0, ceiling - _FLOOR_MS) // 65536
        self.due = ticks_add(now, delay)
        return delay

    def wake(self, now):
        # a new alarm while the link is down: returns True when the next attempt moved earlier
        at = now
        if self.started is not None and ticks_diff(ticks_add(self.started, _WAKE_GAP_MS), now) > 0:
            at = ticks_add(self.started, _WAKE_GAP_MS)
        if self.due is None or ticks_diff(at, self.due) >= 0:
            return False
        self.due = at
        self.woken = True
        return True
