# The device's link to the gateway: MQTT 3.1.1 through the gateway's local broker
# (docs/protocol.md §5), or a UART wired to the gateway (§9). Both classes have the same few
# methods, so an app above them is the same code whichever the config names:
#   open(poller)   connect and join the app's poll set; raises LinkError (or OSError)
#   close()        drop the connection; the app makes a new poll set afterwards
#   room()         True while another frame may go out now
#   send(msg)      one device frame; raises LinkError/OSError when the link broke
#   poll()         handle what arrived: each receipt goes to on_receipt(msg); raises when broke
#   where          text for the console
# The UART link is lib/uartlink.py. Each transport's modules load only when a link of that
# kind is made (reporter.py imports uartlink only for "uart"; MqttLink imports the MQTT
# client when it is made): a device holds the code of the transport it uses and nothing
# else in its heap (measured: the MQTT client is about 12 KB of heap once loaded, the serial
# framing about 5 KB, on the 64-bit unix port).
import select

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAX_INCOMING = const(16)  # MQTT packets handled per poll()


class LinkError(Exception):
    pass


class MqttLink:
    # clean session: the outbox, not the broker, is what survives; receipts missed while away
    # are asked for again by the app's resends. Last will "offline", retained, on the status
    # topic; "online" retained after connecting.
    def __init__(self, dev_id, host, port, keepalive, on_receipt, timeout_ms=3000):
        try:
            import mqtt
        except ImportError:
            raise LinkError("this firmware has no MQTT client (lib/mqtt.py)")
        self._mqtt = mqtt
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
        mqtt = self._mqtt
        c = mqtt.MQTTClient(self.id, self.host, self.port, keepalive=self.keepalive)
        c.timeout_ms = self.timeout_ms
        c.set_last_will(self.status, "offline", retain=True, qos=1)
        c.set_callback(self._message)
        try:
            c.connect(clean_session=True, timeout_ms=self.timeout_ms)
            c.subscribe(self.down, 1)
            c.publish(self.status, b"online", retain=True, qos=1, wait=False)
        except (mqtt.MQTTException, OSError) as e:
            try:
                c.disconnect()
            except (mqtt.MQTTException, OSError):
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
        except self._mqtt.MQTTException as e:
            raise LinkError(str(e))

    def poll(self):
        c = self.client
        try:
            for _ in range(_MAX_INCOMING):
                if c.check_msg() is None:
                    break
        except self._mqtt.MQTTException as e:
            raise LinkError(str(e))

    def _message(self, topic, msg):
        # only receipts are expected, on the device's own down topic
        if topic == self.down:
            self.on_receipt(msg)
