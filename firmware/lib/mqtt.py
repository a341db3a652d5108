# MQTT 3.1.1 client for device code: QoS 0 and 1, last will, keepalive, shaped like
# micropython-lib's umqtt.simple (same method names and meanings where they exist).
# Written here rather than imported: boards cannot pip install, and micropython-lib's umqtt
# is installed with mip from the internet, which neither CI nor a technician in the field
# can rely on. Proven against a real Mosquitto and hostile fake brokers, under the
# MicroPython unix port and CPython; see tests/firmware/test_mqtt_client.py.
#
# Beyond umqtt.simple:
# - Every failure is an MQTTException carrying a reason (socket errors are converted where
#   they happen, keeping their message); a failed connection is closed (sock is None).
#   close() drops a connection without DISCONNECT, so the broker publishes the last will.
# - Reads never hang: once a packet's first byte is in, the rest must arrive within
#   timeout_ms; lengths over 4 bytes, packets over max_packet, unknown packet types and a
#   connection closed mid-packet are rejected before anything is allocated for the body.
# - QoS 1 publishes stay in a bounded in-flight list until their PUBACK: publish(wait=True)
#   retransmits with DUP every retry_ms, at most max_retries times; publish(wait=False)
#   returns the packet id at once and check_msg()/wait_msg() process the PUBACKs later
#   (set_puback_callback, pending(), retry()). connect() resends what is still in flight.
# - Keepalive: check_msg() and wait_msg() send PINGREQ when keepalive_due() and raise when
#   no PINGRESP came within the keepalive period, so a dead broker is noticed even when the
#   app only waits. An app with its own poll loop on sock calls keepalive_due() and ping()
#   itself; keepalive_due() raises for an unanswered PINGREQ as well.
# - ssl is an SSLContext (as in current umqtt.simple); ssl_params go to its wrap_socket().
# - wait_msg(timeout_ms) takes an optional limit; with keepalive=0 and no limit it blocks
#   until the broker sends something or closes the connection, as umqtt.simple does.
# - Strings are checked before anything is sent: the client id, user name and topics must be
#   well-formed UTF-8 without U+0000 (MQTT-1.5.3-1, -2), control characters or
#   non-characters (which Mosquitto answers by closing the connection); topic names (publish,
#   last will) hold no wildcards and topic filters use them only as whole levels
#   (MQTT-4.7.1). Passwords and payloads are binary and taken as they are.
# Incoming QoS 1 messages are acknowledged after the callback returns (at least once: if
# the callback raises, no PUBACK is sent and the broker redelivers). QoS 2 is not supported.
import select
import socket

import utf8
from clock import const, ticks_add, ticks_diff, ticks_ms

# fixed header first bytes (packet type << 4 | flags)
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_DUP = const(0x08)
_MAX_REMAINING = const(268435455)  # largest remaining length 4 bytes can encode
_SUBACK_FAILURE = const(0x80)
_NAME = const(1)  # _text(): a topic name
_FILTER = const(2)  # _text(): a topic filter

_REFUSED = (  # CONNACK return codes 1-5
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


class MQTTException(Exception):
    # str(exc) is the reason; code is the CONNACK return code (1-5) or the SUBACK failure
    # code (0x80) when the broker refused, None for every other failure.
    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


def _bytes(s, what):
    if isinstance(s, str):
        return s.encode("utf-8")
    if isinstance(s, (bytes, bytearray)):
        return s
    raise MQTTException("%s must be str or bytes, not %s" % (what, type(s).__name__))


def _put_len(buf, i, n):
    # remaining length as a varint at buf[i]; returns the index after it
    while n > 0x7F:
        buf[i] = n & 0x7F | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i + 1


def _packet(first, n):
    # a packet buffer with its fixed header filled in; returns (buffer, index of the body)
    if n > _MAX_REMAINING:
        raise MQTTException("packet too large for MQTT (%d bytes)" % n)
    buf = bytearray(2 + (n > 0x7F) + (n > 0x3FFF) + (n > 0x1FFFFF) + n)
    buf[0] = first
    return buf, _put_len(buf, 1, n)


def _put_u16(buf, i, v):
    buf[i] = v >> 8
    buf[i + 1] = v & 0xFF
    return i + 2


def _put_str(buf, i, s):
    n = len(s)
    i = _put_u16(buf, i, n)
    buf[i : i + n] = s
    return i + n


def _check_str(s, what):
    s = _bytes(s, what)
    if len(s) > 0xFFFF:
        raise MQTTException("%s longer than 65535 bytes" % what)
    return s


def _text(s, what, topic=0):
    # an MQTT UTF-8 string as bytes, or MQTTException naming what is wrong and where;
    # topic: _NAME (not empty, no wildcards) or _FILTER (not empty, wildcards as whole levels)
    try:
        b = _check_str(s, what)
    except UnicodeError:  # CPython: a lone surrogate
        raise MQTTException("%s is not valid Unicode (a lone surrogate)" % what)
    i = utf8.bad(b, 0, -1, True)
    if i >= 0:
        why = "NUL" if b[i] == 0 else "invalid UTF-8, a control character or a non-character"
        raise MQTTException("%s %r has %s at byte %d" % (what, bytes(b[:48]), why, i))
    if topic:
        if not b:
            raise MQTTException("%s must not be empty" % what)
        n = len(b)
        for i in range(n):
            c = b[i]
            if c == 0x23 or c == 0x2B:  # "#", "+"
                if topic == _NAME:
                    raise MQTTException("%s %r has a wildcard at byte %d" % (what, bytes(b[:48]), i))
                # a whole level; "#" only as the last one
                if (i and b[i - 1] != 0x2F) or (i + 1 < n and (c == 0x23 or b[i + 1] != 0x2F)):
                    raise MQTTException("%s %r has a misplaced wildcard at byte %d" % (what, bytes(b[:48]), i))
    return b


class MQTTClient:
    def __init__(
        self,
        client_id,
        server,
        port=0,
        user=None,
        password=None,
        keepalive=0,
        ssl=None,
        ssl_params={},  # noqa: B006 - umqtt.simple's signature; never mutated
        max_packet=4096,
    ):
        if ssl is True or (ssl and not hasattr(ssl, "wrap_socket")):
            raise MQTTException("ssl must be an SSLContext")
        if port == 0:
            port = 8883 if ssl else 1883
        if not 0 <= keepalive <= 0xFFFF:
            raise MQTTException("keepalive must be 0 to 65535 s")
        if password is not None and user is None:
            raise MQTTException("a password needs a user name in MQTT 3.1.1")
        self.client_id = _text(client_id, "client id")
        self.server = server
        self.port = port
        self.user = None if user is None else _text(user, "user")
        self.pswd = None if password is None else _check_str(password, "password")
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.max_packet = max_packet
        self.sock = None
        self.cb = None
        self.puback_cb = None
        self.pid = 0
        self.lw_topic = None
        self.lw_msg = b""
        self.lw_qos = 0
        self.lw_retain = False
        # tunables: read/ack timeout, QoS 1 retransmission, bound on the in-flight list
        self.timeout_ms = 5000
        self.retry_ms = 2000
        self.max_retries = 3
        self.max_inflight = 16
        self._poll = None
        self._tls_pending = None
        self._inflight = []  # [pid, ticks sent, packet, retransmissions], oldest first
        self._last_tx = 0
        self._last_rx = 0
        self._ping_at = None  # ticks of the PINGREQ still waiting for its PINGRESP
        self._suback = None  # (pid, return code) of the last SUBACK
        self._ack = bytearray(b"\x40\x02\x00\x00")  # PUBACK for incoming QoS 1, reused
        self._topic = None  # the last topic published to (str or bytes) and its checked bytes
        self._topic_b = None

    def set_callback(self, f):
        self.cb = f

    def set_puback_callback(self, f):
        self.puback_cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        if qos not in (0, 1, 2):
            raise MQTTException("last will QoS must be 0, 1 or 2")
        topic = _text(topic, "will topic", _NAME)
        self.lw_msg = _check_str(msg, "will message")
        self.lw_topic = topic
        self.lw_qos = qos
        self.lw_retain = retain

    # connection

    def connect(self, clean_session=True, timeout_ms=5000):
        # Returns the CONNACK session-present flag; a refusal raises with the return code.
        # A connection still open is dropped first, without DISCONNECT (the will goes out).
        self.close()
        try:
            ai = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
            sock = socket.socket(ai[0], socket.SOCK_STREAM)
            self.sock = sock
            sock.settimeout(timeout_ms / 1000)
            sock.connect(ai[-1])
            # bounds every send (and the TLS handshake); reads are bounded by poll deadlines
            sock.settimeout(self.timeout_ms / 1000)
            if self.ssl:
                params = dict(self.ssl_params)
                if "server_hostname" not in params:
                    params["server_hostname"] = self.server
                sock = self.ssl.wrap_socket(sock, **params)
                self.sock = sock
            # TLS sockets may hold decrypted bytes that poll cannot see
            self._tls_pending = getattr(sock, "pending", None)
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
        except (OSError, ValueError) as e:
            # MicroPython's TLS raises ValueError for certificate failures, with blank lines
            self._fail("cannot connect to %s:%d: %s" % (self.server, self.port, str(e).strip()))
        # variable header: protocol name "MQTT", level 4 (3.1.1), flags, keepalive; then the
        # payload's strings in their order
        fields = [self.client_id]
        flags = 0x02 if clean_session else 0
        if self.lw_topic is not None:
            fields += (self.lw_topic, self.lw_msg)
            flags |= 0x04 | self.lw_qos << 3 | (0x20 if self.lw_retain else 0)
        if self.user is not None:
            fields.append(self.user)
            flags |= 0x80
        if self.pswd is not None:
            fields.append(self.pswd)
            flags |= 0x40
        n = 10
        for f in fields:
            n += 2 + len(f)
        pkt, i = _packet(_CONNECT, n)
        pkt[i : i + 7] = b"\x00\x04MQTT\x04"
        pkt[i + 7] = flags
        i = _put_u16(pkt, i + 8, self.keepalive)
        for f in fields:
            i = _put_str(pkt, i, f)
        self._ping_at = None
        self._last_rx = ticks_ms()
        self._send(pkt)
        got = self._read_packet(timeout_ms)
        if got is None:
            self._fail("no CONNACK within %d ms" % timeout_ms)
        first, body = got
        if first != _CONNACK:
            self._fail("expected CONNACK, got packet 0x%02x" % first)
        if len(body) != 2 or body[0] > 1:
            self._fail("malformed CONNACK")
        rc = body[1]
        if rc:
            reason = _REFUSED[rc - 1] if rc <= len(_REFUSED) else "unknown reason"
            self._fail("connection refused: %s (CONNACK code %d)" % (reason, rc), rc)
        # MQTT-4.4.0-1: unacknowledged QoS 1 messages are sent again, in order, with DUP
        for e in self._inflight:
            e[3] = -1  # a fresh retry budget on the new connection: this send is not a retry
            self._resend(e)
        return body[0] == 1

    def disconnect(self):
        # Best effort: the connection is closed even when DISCONNECT cannot be sent.
        if self.sock is not None:
            try:
                self.sock.sendall(b"\xe0\x00")
            except OSError:
                pass
        self.close()

    def close(self):
        # drops the connection without DISCONNECT: the broker publishes the last will
        sock = self.sock
        self.sock = None
        self._poll = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def ping(self):
        self._send(b"\xc0\x00")
        if self._ping_at is None:
            self._ping_at = ticks_ms()

    def keepalive_due(self):
        # True when a PINGREQ should go out now: half the keepalive period passed without a
        # packet sent or without one received, and no PINGREQ is outstanding. Raises (and
        # drops the connection) when the outstanding one had no PINGRESP within keepalive.
        if not self.keepalive or self.sock is None:
            return False
        now = ticks_ms()
        if self._ping_at is not None:
            if ticks_diff(now, self._ping_at) >= self.keepalive * 1000:
                self._fail("no PINGRESP within %d ms: broker unreachable" % (self.keepalive * 1000))
            return False
        half = self.keepalive * 500
        return ticks_diff(now, self._last_tx) >= half or ticks_diff(now, self._last_rx) >= half

    # publish and subscribe

    def publish(self, topic, msg, retain=False, qos=0, wait=True):
        # QoS 0 returns None; QoS 1 returns the packet id (after its PUBACK when wait is true).
        if qos != 0 and qos != 1:
            raise MQTTException("publish QoS must be 0 or 1")
        if topic is not self._topic or isinstance(topic, bytearray):
            # checked once per topic: an app publishes to the same few topic objects
            b = _text(topic, "topic", _NAME)
            self._topic = topic
            self._topic_b = b
        topic = self._topic_b
        msg = _bytes(msg, "message")
        if self.sock is None:
            raise MQTTException("not connected")
        if qos and len(self._inflight) >= self.max_inflight:
            raise MQTTException("%d QoS 1 messages already in flight" % len(self._inflight))
        n = 2 + len(topic) + len(msg) + 2 * qos
        pkt, i = _packet(_PUBLISH | qos << 1 | (1 if retain else 0), n)
        i = _put_str(pkt, i, topic)
        if not qos:
            pkt[i:] = msg
            self._send(pkt)
            return None
        pid = self._next_pid()
        i = _put_u16(pkt, i, pid)
        pkt[i:] = msg
        entry = [pid, 0, pkt, 0]
        self._inflight.append(entry)
        try:
            self._send(pkt)
            entry[1] = self._last_tx
            if not wait:
                return pid
            while entry in self._inflight:
                left = self.retry_ms - ticks_diff(ticks_ms(), entry[1])
                if left > 0:
                    self._next(left)
                else:
                    self._resend(entry)
        except Exception:
            # the caller learns of the failure from the exception and owns the message again
            if entry in self._inflight:
                self._inflight.remove(entry)
            raise
        return pid

    def pending(self):
        # packet ids of the QoS 1 publishes not acknowledged yet, oldest first
        return [e[0] for e in self._inflight]

    def retry(self):
        # Retransmits (DUP) each unacknowledged publish sent retry_ms ago or earlier; one that
        # was retransmitted max_retries times already fails the connection instead (it stays
        # pending and goes out again after the next connect()). Returns how many were resent.
        n = 0
        for e in self._inflight:
            if ticks_diff(ticks_ms(), e[1]) >= self.retry_ms:
                self._resend(e)
                n += 1
        return n

    def subscribe(self, topic, qos=0):
        # Waits for the SUBACK and returns the granted QoS; a refusal (0x80) raises with code 0x80.
        if qos != 0 and qos != 1:
            raise MQTTException("subscribe QoS must be 0 or 1")
        topic = _text(topic, "topic filter", _FILTER)
        pid = self._next_pid()
        pkt, i = _packet(_SUBSCRIBE, 5 + len(topic))
        i = _put_u16(pkt, i, pid)
        i = _put_str(pkt, i, topic)
        pkt[i] = qos
        self._suback = None
        self._send(pkt)
        deadline = ticks_add(ticks_ms(), self.timeout_ms)
        while self._suback is None or self._suback[0] != pid:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                self._fail("no SUBACK within %d ms" % self.timeout_ms)
            self._next(left)
        rc = self._suback[1]
        if rc == _SUBACK_FAILURE:
            raise MQTTException("subscription to %r refused (SUBACK 0x80)" % topic, rc)
        return rc

    # receiving

    def wait_msg(self, timeout_ms=-1):
        # Handles one incoming packet and returns its first byte (0x30 | flags for a PUBLISH,
        # 0x40 PUBACK, 0xd0 PINGRESP, ...); None when none came within timeout_ms (<0: no limit).
        return self._next(timeout_ms)

    def check_msg(self):
        # wait_msg() that returns None at once when nothing is readable
        return self._next(0)

    # internals

    def _fail(self, reason, code=None):
        # any I/O or protocol failure drops the connection: the app reconnects
        self.close()
        raise MQTTException(reason, code)

    def _send(self, data):
        if self.sock is None:
            raise MQTTException("not connected")
        try:
            self.sock.sendall(data)
        except OSError as e:
            self._fail("send failed: %s" % e)
        self._last_tx = ticks_ms()

    def _resend(self, e):
        # a retransmission (DUP) of in-flight entry e; one retransmitted max_retries times
        # already fails the connection instead
        if e[3] >= self.max_retries:
            self._fail("no PUBACK for packet %d after %d retries" % (e[0], e[3]))
        pkt = e[2]
        pkt[0] |= _DUP
        e[3] += 1
        self._send(pkt)
        e[1] = self._last_tx

    def _next_pid(self):
        pid = self.pid
        while True:
            pid = pid + 1 if pid < 0xFFFF else 1
            for e in self._inflight:
                if e[0] == pid:
                    break
            else:
                self.pid = pid
                return pid

    def _readable(self, ms):
        if self._tls_pending is not None and self._tls_pending():
            return True
        return bool(self._poll.poll(ms))

    def _recv(self, n, deadline):
        # exactly n bytes, all of them by deadline (only used once a packet has begun)
        buf = None
        got = 0
        while True:
            if not self._readable(max(0, ticks_diff(deadline, ticks_ms()))):
                self._fail("timed out after %d ms in the middle of a packet" % self.timeout_ms)
            try:
                chunk = self.sock.recv(n - got)
            except OSError as e:
                self._fail("receive failed: %s" % e)
            if not chunk:
                self._fail("connection closed by the broker in the middle of a packet")
            if buf is None:
                if len(chunk) == n:
                    return chunk
                buf = bytearray(n)
            buf[got : got + len(chunk)] = chunk
            got += len(chunk)
            if got == n:
                return bytes(buf)

    def _read_packet(self, wait_ms):
        # (first byte, body) of the next packet, or None when none started within wait_ms
        if self.sock is None:
            raise MQTTException("not connected")
        if not self._readable(wait_ms):
            return None
        deadline = ticks_add(ticks_ms(), self.timeout_ms)
        try:
            hdr = self.sock.recv(2)
        except OSError as e:
            self._fail("receive failed: %s" % e)
        if not hdr:
            self._fail("connection closed by the broker")
        first = hdr[0]
        kind = first & 0xF0
        if kind != _PUBLISH and first not in (_CONNACK, _PUBACK, _SUBACK, _PINGRESP):
            self._fail("unexpected packet 0x%02x from the broker" % first)
        b = hdr[1] if len(hdr) == 2 else self._recv(1, deadline)[0]
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            if shift == 28:
                self._fail("remaining length longer than 4 bytes")
            b = self._recv(1, deadline)[0]
            n |= (b & 0x7F) << shift
            shift += 7
        size = 1 + shift // 7 + n
        if size > self.max_packet:
            self._fail("packet of %d bytes from the broker exceeds max_packet %d" % (size, self.max_packet))
        body = self._recv(n, deadline) if n else b""
        self._last_rx = ticks_ms()
        return first, body

    def _wait(self, timeout_ms):
        # the next packet within timeout_ms (<0: no limit), keeping the connection alive
        start = ticks_ms()
        ka_ms = self.keepalive * 1000
        while True:
            if self.keepalive_due():
                self.ping()
            ms = timeout_ms
            if timeout_ms >= 0:
                ms = max(0, timeout_ms - ticks_diff(ticks_ms(), start))
            if ka_ms:
                now = ticks_ms()
                if self._ping_at is not None:
                    ka_left = ka_ms - ticks_diff(now, self._ping_at)
                else:
                    ka_left = ka_ms // 2 - max(ticks_diff(now, self._last_tx), ticks_diff(now, self._last_rx))
                ka_left = max(1, ka_left)
                if ms < 0 or ka_left < ms:
                    ms = ka_left
            got = self._read_packet(ms)
            if got is not None or (timeout_ms >= 0 and ticks_diff(ticks_ms(), start) >= timeout_ms):
                return got

    def _next(self, timeout_ms):
        got = self._wait(timeout_ms)
        if got is None:
            return None
        first, body = got
        n = len(body)
        if first & 0xF0 == _PUBLISH:
            qos = (first >> 1) & 3
            if qos > 1:
                self._fail("PUBLISH with QoS %d from the broker (QoS 2 is not supported)" % qos)
            end = 2 + (body[0] << 8 | body[1]) if n >= 2 else n + 1
            if end + 2 * qos > n:
                self._fail("malformed PUBLISH: topic longer than the packet")
            topic = body[2:end]
            pid = 0
            if qos:
                pid = body[end] << 8 | body[end + 1]
                if not pid:
                    self._fail("malformed PUBLISH: packet id 0")
                end += 2
            if self.cb is not None:
                self.cb(topic, body[end:])
            if qos:
                _put_u16(self._ack, 2, pid)
                self._send(self._ack)
        elif first == _PUBACK:
            if n != 2:
                self._fail("malformed PUBACK")
            pid = body[0] << 8 | body[1]
            for e in self._inflight:
                if e[0] == pid:
                    self._inflight.remove(e)
                    if self.puback_cb is not None:
                        self.puback_cb(pid)
                    break
        elif first == _PINGRESP:
            if n:
                self._fail("malformed PINGRESP")
            self._ping_at = None
        elif first == _SUBACK:
            if n != 3 or body[2] not in (0, 1, 2, _SUBACK_FAILURE):
                self._fail("malformed SUBACK")
            self._suback = (body[0] << 8 | body[1], body[2])
        else:
            self._fail("unexpected packet 0x%02x from the broker" % first)
        return first
