# The virtual board's BLE radio (hal/unix.py Board.radio(), loaded only by a board that
# advertises): gap_advertise() hands the advert to a virtual controller that sends it, with the
# board's position, to the virtual air at $GE_VBOARD_AIR ("host:port", hil_tests/sim/air.py)
# every interval, as a controller repeats the advertising data it was given.
import binascii
import os
import socket

from clock import const, ticks_add, ticks_diff, ticks_ms

_ADV_MIN_MS = const(20)  # the shortest advertising interval BLE allows


class Radio:
    # The BLE radio's advertising, shaped like bluetooth.BLE().gap_advertise(): the data given
    # is sent at once and then every interval until it is replaced or stopped (None).
    def __init__(self, board):
        self._board = board
        self._sock = None
        self._dest = None
        self._data = None
        self._ms = 0
        self._next = 0
        self.addr = bytes(6)
        self.sent = 0
        air = os.getenv("GE_VBOARD_AIR")
        if air and ":" in air:
            host, port = air.rsplit(":", 1)
            self._dest = socket.getaddrinfo(host, int(port))[0][-1]
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def address(self, addr):
        # the random address the adverts go out with (6 bytes)
        self.addr = bytes(addr)

    def gap_advertise(self, interval_us, adv_data=None, connectable=False):
        if interval_us is None:
            self._data = None
            return
        if adv_data is not None:
            self._data = bytes(adv_data)
        self._ms = max(interval_us // 1000, _ADV_MIN_MS)
        self._next = ticks_add(ticks_ms(), self._ms)
        self._send()

    def _tick(self):
        if self._data is None:
            return
        now = ticks_ms()
        if ticks_diff(now, self._next) >= 0:
            self._next = ticks_add(now, self._ms)
            self._send()

    def _send(self):
        if self._sock is None or self._data is None:
            return
        x, y = self._board._pos
        msg = b"adv %s %.2f %.2f %s" % (binascii.hexlify(self.addr), x, y, binascii.hexlify(self._data))
        try:
            self._sock.sendto(msg, self._dest)
            self.sent += 1
        except OSError:
            pass  # nothing is listening: the advert is lost on the air
