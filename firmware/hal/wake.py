# A pollable wake flag: joins the app's select.poll set like a socket and is readable while
# set. Pin and accelerometer interrupt handlers call set() (one attribute store: no
# allocation, safe in a hard IRQ); Board.service() clears it before it drains what the
# handlers recorded, so an edge after the clear wakes the next poll again.
# Why it works: a pin interrupt does not end select.poll() by itself on a board. poll() asks
# every registered stream for readiness (the stream protocol's ioctl, MP_STREAM_POLL) between
# waits for the port's next event, and the scheduled pin handler runs in that wait, so the
# next round sees the flag (extmod/modselect.c). On the unix port an object without a file
# descriptor is asked every millisecond (MICROPY_PY_SELECT_IOCTL_CALL_PERIOD_MS).
# CPython's select.poll takes only file descriptors: there this object cannot join a poll set.
import io

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MP_STREAM_POLL = const(3)
_POLLIN = const(1)
_ERROR = const(-1)  # any other request (the unix port asks for a file descriptor: none)


class Wake(io.IOBase):
    def __init__(self):
        self.flag = 0

    def set(self):
        self.flag = 1

    def clear(self):
        self.flag = 0

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:
            return arg & _POLLIN if self.flag else 0
        return _ERROR
