# The device's link to the gateway over a UART wired to it (docs/protocol.md §9), with the
# methods of lib/link.py's links. Its own module, loaded only by a device configured for
# "uart", so an MQTT device does not hold the serial framing in its heap (and the reverse).
import select

from link import LinkError

try:
    import cobsframe
except ImportError:
    cobsframe = None

from clock import const

_READ = const(64)  # UART bytes per read
_MAX_READS = const(8)  # reads per poll(): a babbling line cannot hold up the app


class UartLink:
    # Frames as docs/protocol.md §9: each write is 0x00 + COBS(frame || CRC-32) + 0x00. The
    # UART is the link: it is up once open (no session, no last will); the gateway answers on
    # the same wire. Bad input on the line is dropped and counted (rejected, by reason).
    def __init__(self, uart_factory, on_receipt, where="uart"):
        if cobsframe is None:
            raise LinkError("this firmware has no serial framing (lib/cobsframe.py)")
        self.uart_factory = uart_factory
        self.on_receipt = on_receipt
        self.where = where
        self.uart = None
        self.deframer = cobsframe.Deframer()
        self.rejected = self.deframer.rejected
        self._rx = bytearray(_READ)
        self._seen = 0  # rejections already reported on the console

    def open(self, poller):
        u = self.uart_factory()
        self.deframer.reset()
        self.uart = u
        poller.register(u, select.POLLIN)

    def close(self):
        u = self.uart
        self.uart = None
        if u is not None:
            try:
                if hasattr(u, "deinit"):
                    u.deinit()  # machine.UART
                else:
                    u.close()  # the unix port's pty
            except OSError:
                pass

    def room(self):
        return self.uart is not None

    def send(self, msg):
        data = b"\x00" + cobsframe.frame(msg)
        n = self.uart.write(data)
        if n != len(data):
            # machine.UART.write returns None on a timeout; the rest of the frame is lost on
            # the wire and the gateway counts what it got as a bad frame
            raise LinkError("UART wrote %s of %d bytes" % (n, len(data)))

    def poll(self):
        u = self.uart
        d = self.deframer
        for _ in range(_MAX_READS):
            n = u.readinto(self._rx)
            if not n:
                break
            for msg in d.feed(self._rx, n):
                self.on_receipt(msg)
            if n < _READ:
                break
        total = sum(self.rejected.values())
        if total != self._seen:
            self._seen = total
            print("link: serial input dropped (%d so far): %s" % (total, d.last_error))
