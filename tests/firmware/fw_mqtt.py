# The device MQTT client (firmware/lib/mqtt.py) without a network: packet bytes, packet ids,
# the in-flight list and argument checks, with a fake socket that records what is sent.
# Runs on MicroPython and CPython. Against a real Mosquitto and fake brokers:
# tests/firmware/test_mqtt_client.py.
import mqtt
from clock import ticks_add, ticks_ms
from fwsupport import raises


class _Sink:
    def __init__(self, fail=None):
        self.sent = []
        self.fail = fail
        self.closed = False

    def sendall(self, data):
        if self.fail is not None:
            raise self.fail
        self.sent.append(bytes(data))

    def close(self):
        self.closed = True


class _Context:
    def wrap_socket(self, sock, server_hostname=None):
        return sock


def _client(**kw):
    c = mqtt.MQTTClient("dev", "127.0.0.1", **kw)
    c.sock = _Sink()
    return c


def test_remaining_length_boundaries():
    # MQTT 3.1.1 section 2.2.3
    cases = [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2097151, "ffff7f"),
        (2097152, "80808001"),
        (268435455, "ffffff7f"),
    ]
    for n, want in cases:
        buf = bytearray(4)
        end = mqtt._put_len(buf, 0, n)
        assert bytes(buf[:end]).hex() == want, n
        if n <= 2097152:  # a packet buffer sized for its header (the largest would be 256 MB)
            pkt, body = mqtt._packet(0x30, n)
            assert len(pkt) == 1 + end + n and body == 1 + end and pkt[1:body] == buf[:end], n
    e = raises(mqtt.MQTTException, mqtt._packet, 0x30, 268435456)
    assert str(e) == "packet too large for MQTT (268435456 bytes)"


def test_publish_qos0_bytes():
    c = _client()
    assert c.publish("a/b", b"hi") is None
    assert c.publish(b"a/b", "\u00e9", retain=True) is None
    assert c.publish(bytearray(b"a/b"), b"") is None
    assert c.sock.sent == [
        bytes.fromhex("3007 0003 612f62 6869"),
        bytes.fromhex("3107 0003 612f62 c3a9"),
        bytes.fromhex("3005 0003 612f62"),
    ]
    assert c.pending() == []


def test_publish_long_payload_has_two_byte_length():
    c = _client()
    c.publish("t", bytes(200))
    assert c.sock.sent[0][:5] == bytes.fromhex("30cb01 0001")
    assert len(c.sock.sent[0]) == 3 + 203


def test_qos1_without_waiting_returns_packet_ids():
    c = _client()
    c.pid = 65534
    assert c.publish("a/b", "m0", qos=1, wait=False) == 65535
    assert c.publish("a/b", "m1", qos=1, wait=False) == 1  # 0 is not a packet id
    assert c.pending() == [65535, 1]
    assert c.sock.sent == [
        bytes.fromhex("3209 0003 612f62 ffff 6d30"),
        bytes.fromhex("3209 0003 612f62 0001 6d31"),
    ]
    # ids still in flight are skipped when the counter wraps onto them
    c.pid = 65534
    assert c.publish("a/b", "m2", qos=1, wait=False) == 2
    assert c.pending() == [65535, 1, 2]


def test_in_flight_list_is_bounded():
    c = _client()
    c.max_inflight = 2
    c.publish("t", "1", qos=1, wait=False)
    c.publish("t", "2", qos=1, wait=False)
    e = raises(mqtt.MQTTException, lambda: c.publish("t", "3", qos=1, wait=False))
    assert str(e) == "2 QoS 1 messages already in flight"
    c.publish("t", "qos 0 still goes")
    assert len(c.sock.sent) == 3
    assert c.pending() == [1, 2]


def test_retry_sets_dup_and_gives_up():
    c = _client()
    c.retry_ms = 0
    c.max_retries = 1
    pid = c.publish("a/b", "x", qos=1, wait=False)
    assert c.retry() == 1
    assert c.sock.sent[-1] == bytes.fromhex("3a08 0003 612f62 0001 78")
    sink = c.sock
    e = raises(mqtt.MQTTException, c.retry)
    assert str(e) == "no PUBACK for packet 1 after 1 retries"
    assert e.code is None
    assert c.sock is None and sink.closed
    assert c.pending() == [pid]  # kept for the next connect()


def test_retry_waits_for_retry_ms():
    c = _client()
    c.publish("a/b", "x", qos=1, wait=False)
    assert c.retry() == 0  # retry_ms (2000) has not passed
    assert len(c.sock.sent) == 1


def test_keepalive_due_and_ping():
    c = _client()
    assert not c.keepalive_due()  # keepalive 0: never
    c = _client(keepalive=2)
    now = ticks_ms()
    c._last_tx = c._last_rx = now
    assert not c.keepalive_due()
    c._last_rx = ticks_add(now, -1000)  # half the keepalive without hearing from the broker
    assert c.keepalive_due()
    c.ping()
    assert c.sock.sent == [b"\xc0\x00"]
    assert not c.keepalive_due()  # a PINGREQ is outstanding
    c._ping_at = ticks_add(ticks_ms(), -2000)  # ... for the whole keepalive period
    sink = c.sock
    e = raises(mqtt.MQTTException, c.keepalive_due)
    assert str(e) == "no PINGRESP within 2000 ms: broker unreachable"
    assert c.sock is None and sink.closed


def test_send_error_becomes_mqtt_exception():
    c = _client()
    err = OSError(32)
    c.sock.fail = err
    sink = c.sock
    e = raises(mqtt.MQTTException, lambda: c.publish("a/b", "x", qos=1, wait=False))
    assert str(e) == "send failed: %s" % err
    assert c.sock is None and sink.closed
    assert c.pending() == []  # never sent: the caller still owns it


def test_not_connected():
    c = mqtt.MQTTClient("dev", "127.0.0.1")
    for fn in (
        lambda: c.publish("a", "b"),
        lambda: c.publish("a", "b", qos=1, wait=False),
        lambda: c.subscribe("a"),
        c.ping,
        c.check_msg,
        lambda: c.wait_msg(10),
    ):
        e = raises(mqtt.MQTTException, fn)
        assert str(e) == "not connected"
    assert c.pending() == []
    assert not c.keepalive_due()
    c.disconnect()  # no-op


def test_bad_arguments_raise_mqtt_exception():
    c = _client()
    bad = [
        (lambda: c.publish("a", "b", qos=2), "publish QoS must be 0 or 1"),
        (lambda: c.publish("a/+", "b"), "topic b'a/+' has a wildcard at byte 2"),
        (lambda: c.publish("a/#", "b"), "topic b'a/#' has a wildcard at byte 2"),
        (lambda: c.publish("", "b"), "topic must not be empty"),
        (lambda: c.publish(5, "b"), "topic must be str or bytes, not int"),
        (lambda: c.publish("a", 5), "message must be str or bytes, not int"),
        (lambda: c.publish("a" * 65536, "b"), "topic longer than 65535 bytes"),
        (lambda: c.subscribe("a", 2), "subscribe QoS must be 0 or 1"),
        (lambda: c.subscribe(""), "topic filter must not be empty"),
        (lambda: c.set_last_will("a", "b", qos=3), "last will QoS must be 0, 1 or 2"),
        (lambda: c.set_last_will("", "b"), "will topic must not be empty"),
        (lambda: mqtt.MQTTClient("d", "h", password="p"), "a password needs a user name in MQTT 3.1.1"),
        (lambda: mqtt.MQTTClient("d", "h", keepalive=65536), "keepalive must be 0 to 65535 s"),
        (lambda: mqtt.MQTTClient(None, "h"), "client id must be str or bytes, not NoneType"),
        (lambda: mqtt.MQTTClient("d", "h", ssl=True), "ssl must be an SSLContext"),
    ]
    for fn, want in bad:
        e = raises(mqtt.MQTTException, fn)
        assert str(e) == want, str(e)
    assert c.sock.sent == []
    assert c.sock is not None  # argument errors leave the connection alone


def test_strings_checked_before_anything_is_sent():
    # MQTT 3.1.1 section 1.5.3 and 4.7: what Mosquitto would answer by closing the connection
    # (tests/firmware/test_mqtt_client.py shows it does) is refused here, with MQTTException
    c = _client()
    nul = "NUL at byte"
    bad_utf8 = "invalid UTF-8, a control character or a non-character at byte"
    cases = [
        (lambda: c.publish("a\x00b", "m"), "topic", nul + " 1"),
        (lambda: c.publish(b"ge/\xc0\xaf", "m"), "topic", bad_utf8 + " 3"),  # overlong "/"
        (lambda: c.publish(b"ge/\xed\xa0\x80", "m"), "topic", bad_utf8 + " 3"),  # a surrogate
        (lambda: c.publish("ge/" + chr(0xD800), "m"), "topic", ""),  # the same from a str
        (lambda: c.publish(b"ge/\xf4\x90\x80\x80", "m"), "topic", bad_utf8 + " 3"),  # above U+10FFFF
        (lambda: c.publish(b"ge/\xe2\x82", "m"), "topic", bad_utf8 + " 3"),  # truncated
        (lambda: c.publish(b"ge/\x80", "m"), "topic", bad_utf8 + " 3"),  # lone continuation
        (lambda: c.publish("ge/\x1b[2J", "m"), "topic", bad_utf8 + " 3"),  # a control character
        (lambda: c.publish("ge/\x85", "m"), "topic", bad_utf8 + " 3"),  # a C1 control
        (lambda: c.publish("ge/\ufffe", "m"), "topic", bad_utf8 + " 3"),  # a non-character
        (lambda: c.publish("ge/dev/+/up", "m"), "topic", "wildcard at byte 7"),
        (lambda: c.set_last_will("ge/#", "offline"), "will topic", "wildcard at byte 3"),
        (lambda: c.set_last_will(b"ge/\x00", "offline"), "will topic", nul + " 3"),
        (lambda: c.subscribe("ge/\x00/down"), "topic filter", nul + " 3"),
        (lambda: c.subscribe(b"\xff"), "topic filter", bad_utf8 + " 0"),
        (lambda: c.subscribe("ge/dev#"), "topic filter", "misplaced wildcard at byte 6"),
        (lambda: c.subscribe("ge/#/down"), "topic filter", "misplaced wildcard at byte 3"),
        (lambda: c.subscribe("ge/a+/down"), "topic filter", "misplaced wildcard at byte 4"),
        (lambda: c.subscribe("ge/+a/down"), "topic filter", "misplaced wildcard at byte 3"),
        (lambda: mqtt.MQTTClient("AP\x000001", "h"), "client id", nul + " 2"),
        (lambda: mqtt.MQTTClient(b"AP-\xc1\xbf", "h"), "client id", bad_utf8 + " 3"),
        (lambda: mqtt.MQTTClient("AP-" + chr(0xDFFF), "h"), "client id", ""),
        (lambda: mqtt.MQTTClient("AP\t1", "h"), "client id", bad_utf8 + " 2"),
        (lambda: mqtt.MQTTClient("d", "h", user="u\x00", password="p"), "user", nul + " 1"),
    ]
    for fn, what, want in cases:
        e = raises(mqtt.MQTTException, fn)
        assert str(e).startswith(what + " ") and want in str(e), str(e)
    assert c.sock.sent == []
    assert c.lw_topic is None
    # what is fine: non-ASCII text, wildcards in filters as whole levels, any password bytes
    c.publish("venue/z\u00fcrich/\u6c34/\U00010151/\ufffd", b"m")
    c.publish(b"ge/dev/AP-0001/up", b"\x00\xff")
    c.set_last_will("ge/dev/AP-0001/status", b"\x00offline", retain=True)
    for f in ("#", "+", "+/+", "ge/+/down", "ge/dev/#", "/#", "+/", "ge/+/#"):
        mqtt._text(f, "topic filter", 2)  # _FILTER (a const, not visible on MicroPython)
    mqtt.MQTTClient("d", "h", user="\u00fcser", password=b"\x00\xc0\xaf")
    assert len(c.sock.sent) == 2


def test_publish_checks_each_new_topic_once():
    c = _client()
    topic = "ge/dev/AP-0001/up"
    c.publish(topic, b"1")
    c.publish(topic, b"2")
    assert c._topic is topic
    raises(mqtt.MQTTException, c.publish, "ge/\x00", b"3")
    c.publish(topic, b"4")
    buf = bytearray(b"ge/a")
    c.publish(buf, b"5")
    buf[3] = 0  # a bytearray can change: checked every time
    raises(mqtt.MQTTException, c.publish, buf, b"6")
    assert [p[-1:] for p in c.sock.sent] == [b"1", b"2", b"4", b"5"]


def test_defaults():
    c = mqtt.MQTTClient("dev", "host")
    assert (c.port, c.keepalive, c.max_packet) == (1883, 0, 4096)
    assert (c.retry_ms, c.max_retries, c.timeout_ms) == (2000, 3, 5000)
    assert mqtt.MQTTClient("dev", "host", ssl=_Context()).port == 8883
    assert mqtt.MQTTClient("dev", "host", 1884).port == 1884
    e = mqtt.MQTTException("refused", 5)
    assert (str(e), e.code, e.args) == ("refused", 5, ("refused",))
    assert mqtt.MQTTException("x").code is None
    assert isinstance(e, Exception)
