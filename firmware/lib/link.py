# The device's link to the gateway: MQTT 3.1.1 through the gateway's local broker
# (docs/protocol.md §5), or a UART wired to the gateway (§9). Both classes have the same few
# methods, so an app above them is the same code whichever the config names:
#   open(poller)   connect and join the app's poll set; raises LinkError (or OSError)
#   close()        drop the connection; the app makes a new poll set afterwards
#   room()         True while another frame may go out now
#   send(msg)      one device frame; raises LinkError/OSError when the link broke
#   poll()         handle what arrived: each receipt goes to on_receipt(msg); raises when broke
#   where          text for the console
# Each transport's module is optional (a board may be flashed with only one of them).
import select

try:
    from mqtt import MQTTClient, MQTTException
except ImportError:
    MQTTClient = None

    class MQTTException(Exception):
        pass


try:
    import cobsframe
except ImportError:
    cobsframe = None

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAX_INCOMING = const(16)  # MQTT packets handled per poll()
_READ = const(64)  # UART bytes per read
_MAX_READS = const(8)  # reads per poll(): a babbling line cannot hold up the app


class LinkError(Exception):
    pass


class MqttLink:
    # clean session: the outbox, not the broker, is what survives; receipts missed while away
    # are asked for again by the app's resends. Last will "offline", retained, on the status
    # topic; "online" retained after connecting.
    def __init__(self, dev_id, host, port, keepalive, on_receipt, timeout_ms=3000):
        if MQTTClient is None:
            raise LinkError("this firmware has no MQTT client (lib/mqtt.py)")
        self.id = dev_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.on_receipt = on_receipt
        self.timeout_ms = timeout_ms
        self.up = "ge/dev/%s/up" % dev_id
        self.down = ("ge/dev/%s/down" % dev_id).encode()
        self.status = "ge/dev/%s/status" % dev_id
        self.where = "%s:%d" % (host, port)
        self.client = None

    def open(self, poller):
        c = MQTTClient(self.id, self.host, self.port, keepalive=self.keepalive)
        c.timeout_ms = self.timeout_ms
        c.set_last_will(self.status, "offline", retain=True, qos=1)
        c.set_callback(self._message)
        try:
            c.connect(clean_session=True, timeout_ms=self.timeout_ms)
            c.subscribe(self.down, 1)
            c.publish(self.status, b"online", retain=True, qos=1, wait=False)
        except (MQTTException, OSError) as e:
            try:
                c.disconnect()
            except (MQTTException, OSError):
                pass
            if isinstance(e, OSError):
                raise
            raise LinkError(str(e))
        self.client = c
        poller.register(c.sock, select.POLLIN)

    def close(self):
        # no DISCONNECT: the broker publishes the last will, as when the link broke by itself
        c = self.client
        self.client = None
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None

    def room(self):
        c = self.client
        return c is not None and len(c.pending()) < c.max_inflight

    def send(self, msg):
        try:
            self.client.publish(self.up, msg, qos=1, wait=False)
        except MQTTException as e:
            raise LinkError(str(e))

    def poll(self):
        c = self.client
        try:
            for _ in range(_MAX_INCOMING):
                if c.check_msg() is None:
                    break
        except MQTTException as e:
            raise LinkError(str(e))

    def _message(self, topic, msg):
        # only receipts are expected, on the device's own down topic
        if topic == self.down:
            self.on_receipt(msg)


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
