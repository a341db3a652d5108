# The device's link to the gateway over MQTT 3.1.1 through the gateway's local broker
# (docs/protocol.md §5), with the methods of lib/link.py's links. Its own module, loaded only
# by a device configured for "mqtt", so a UART device holds neither it nor the MQTT client
# (lib/mqtt.py) in its heap, and its bundle carries neither; TLS (lib/linktls.py) loads only with
# tls_ca.
import select

import mqtt
from clock import const
from link import LinkError

_MAX_INCOMING = const(16)  # MQTT packets handled per poll()
_GATEWAY = b"ge/gateway/status"  # the gateway's `online` (docs/protocol.md section 5)


class MqttLink:
    # clean session: the outbox, not the broker, is what survives; receipts missed while away
    # are asked for again by the app's resends. Last will "offline", retained, on the status
    # topic; "online" retained after connecting. With a password the device logs in as its
    # own id (the broker's ACL lets it use only its own topics and read the gateway's status);
    # with tls_ca (the path of the broker's CA certificate, DER) the link is TLS, the broker's
    # certificate checked. Subscribed to the gateway's announcements (ge/gateway/status, not
    # retained): each one goes to on_gateway(msg).
    def __init__(
        self, dev_id, host, port, keepalive, on_receipt, timeout_ms=3000, password=None, tls_ca=None, on_gateway=None
    ):
        self._password = password
        self._tls_ca = tls_ca
        self._ssl = None
        self.id = dev_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.on_receipt = on_receipt
        self.on_gateway = on_gateway
        self.timeout_ms = timeout_ms
        self.up = "ge/dev/%s/up" % dev_id
        self.down = ("ge/dev/%s/down" % dev_id).encode()
        self.status = "ge/dev/%s/status" % dev_id
        self.where = "%s:%d" % (host, port)
        self.client = None

    def open(self, poller):
        if self._tls_ca and self._ssl is None:
            # made once: loading the CA costs heap and time
            import linktls  # only with tls_ca: a device without TLS holds none of it

            self._ssl = linktls.context(self._tls_ca)
        # client id, server, port, user, password, keepalive, ssl (umqtt.simple's order)
        c = mqtt.MQTTClient(
            self.id,
            self.host,
            self.port,
            self.id if self._password is not None else None,
            self._password,
            self.keepalive,
            self._ssl,
        )
        c.timeout_ms = self.timeout_ms
        c.set_last_will(self.status, "offline", retain=True, qos=1)
        c.set_callback(self._message)
        try:
            c.connect(clean_session=True, timeout_ms=self.timeout_ms)
            c.subscribe(self.down, 1)
            c.subscribe(_GATEWAY, 1)
            c.publish(self.status, b"online", retain=True, qos=1, wait=False)
        except (mqtt.MQTTException, OSError) as e:
            c.disconnect()  # best effort: never raises
            if isinstance(e, OSError):
                raise
            raise LinkError(str(e))
        self.client = c
        poller.register(c.sock, select.POLLIN)

    def close(self):
        # no DISCONNECT: the broker publishes the last will, as when the link broke by itself
        c = self.client
        self.client = None
        if c is not None:
            c.close()

    def room(self):
        c = self.client
        return c is not None and len(c.pending()) < c.max_inflight

    def send(self, msg):
        try:
            self.client.publish(self.up, msg, qos=1, wait=False)
        except mqtt.MQTTException as e:
            raise LinkError(str(e))

    def poll(self):
        c = self.client
        try:
            for _ in range(_MAX_INCOMING):
                if c.check_msg() is None:
                    break
        except mqtt.MQTTException as e:
            raise LinkError(str(e))

    def _message(self, topic, msg):
        # receipts on the device's own down topic; the gateway's announcements
        if topic == self.down:
            self.on_receipt(msg)
        elif topic == _GATEWAY and self.on_gateway:
            self.on_gateway(msg)
