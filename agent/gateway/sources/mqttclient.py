# Why a hand-written client for the local broker: measured under the pipeline_throughput load
# (docs/benchmarks.md), aiomqtt on paho handled one packet per event-loop turn, built an MQTT 5
# Properties object and a message object for every PUBLISH and woke a task per message: the
# agent spent about 340 µs of CPU per frame end to end, most of it in paho and aiomqtt
# (cProfile: paho's _packet_read ~200 µs per message, Properties.__init__ ~50 µs), and ingest
# topped out near 3,000 frames/s. This client parses every PUBLISH of a read in one call (a
# read holds hundreds), hands each frame to a callback at once and writes the PUBACKs and
# receipts of a loop turn with one send. The uplink to central (few, large batches) stays on
# aiomqtt.
"""A small asyncio MQTT 5.0 client: the subset the gateway needs from its local broker.

- CONNECT with clean start off, a session expiry, a Receive Maximum (how many QoS 1 messages
  the broker may hand over unacknowledged), a Maximum Packet Size and, when configured, a user
  name and password; CONNACK checked.
- SUBSCRIBE with QoS 1 and a retain handling; SUBACK checked.
- PUBLISH in, QoS 0 and 1. Each QoS 1 message comes with an acknowledgement token; PUBACKs go
  out in the order the messages arrived (MQTT 5 §4.6), whatever order the tokens are called
  in, and only on the connection the message came on.
- PUBLISH out with QoS 1 (receipts to devices) from an outbox that outlives connections,
  within the broker's Receive Maximum; what is unacknowledged when a connection drops goes
  back to the front of the outbox.
- PINGREQ when the link is quiet; a missing PINGRESP, a broker DISCONNECT or anything that
  is not a well-formed packet of this subset closes the connection with the reason.
Malformed input is never guessed at: bad lengths, unknown packet types or properties, QoS 2,
a packet over the announced maximum all close the connection (`closed` carries the reason);
the persistent session makes the broker deliver again whatever was not acknowledged. More
unacknowledged messages than the Receive Maximum pause reading until half are settled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import cast

from agent.shared.errors import AgentError

log = logging.getLogger(__name__)

_CONNECT = 0x10
_CONNACK = 0x20
_PUBLISH = 0x30
_PUBACK = 0x40
_SUBSCRIBE = 0x82
_SUBACK = 0x90
_PINGREQ = b"\xc0\x00"
_PINGRESP = 0xD0
_DISCONNECT = 0xE0

# MQTT 5 §2.2.2.2: property identifier -> value kind (1, 2, 4: fixed-size integers;
# "v": variable byte integer; "s": UTF-8 string; "b": binary data; "p": string pair)
_PROPERTY_KINDS: dict[int, int | str] = {
    0x01: 1,  # payload format indicator
    0x02: 4,  # message expiry interval
    0x03: "s",  # content type
    0x08: "s",  # response topic
    0x09: "b",  # correlation data
    0x0B: "v",  # subscription identifier
    0x11: 4,  # session expiry interval
    0x12: "s",  # assigned client identifier
    0x13: 2,  # server keep alive
    0x15: "s",  # authentication method
    0x16: "b",  # authentication data
    0x17: 1,  # request problem information
    0x18: 4,  # will delay interval
    0x19: 1,  # request response information
    0x1A: "s",  # response information
    0x1C: "s",  # server reference
    0x1F: "s",  # reason string
    0x21: 2,  # receive maximum
    0x22: 2,  # topic alias maximum
    0x23: 2,  # topic alias
    0x24: 1,  # maximum QoS
    0x25: 1,  # retain available
    0x26: "p",  # user property
    0x27: 4,  # maximum packet size
    0x28: 1,  # wildcard subscription available
    0x29: 1,  # subscription identifiers available
    0x2A: 1,  # shared subscription available
}
_P_SERVER_KEEP_ALIVE = 0x13
_P_REASON_STRING = 0x1F
_P_RECEIVE_MAXIMUM = 0x21
_P_TOPIC_ALIAS = 0x23
_P_MAXIMUM_QOS = 0x24

_U16 = struct.Struct(">H")
# Sparse traffic (an alarm, a receipt's PUBACK) is ACKed at once (Linux TCP_QUICKACK, which
# the kernel clears again, hence per read). Mosquitto does not set TCP_NODELAY by default, so
# a delayed ACK from here holds the broker's next small packet to us (the next alarm) for up
# to 40 ms (Nagle); measured: 34 ms -> 2.6 ms median, publish to central. Under load the
# reads are large and our PUBACKs carry the ACKs anyway.
_QUICKACK_BELOW = 4096
# packets handled per event-loop callback: a 256 KiB read holds thousands of frames, and the
# loop's other work (central's PUBACKs, commit results, receipts) should not wait for all
SLICE = 256
_PUBACK_PACKET = struct.Struct(">BBH").pack  # (0x40, 2, packet id)

OnMessage = Callable[[bytes, bytes, Callable[[], None]], None]


class LocalBrokerError(AgentError):
    """The local broker connection failed or was closed; carries the reason."""


class ProtocolError(Exception):
    """What the broker sent is not a well-formed packet of the subset this client speaks."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """(value, index after it) of a variable byte integer that must end before `end`."""
    value = shift = 0
    for k in range(4):
        if i + k >= end:
            raise ProtocolError("variable byte integer runs past the packet")
        b = data[i + k]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if k and not b:
                raise ProtocolError("variable byte integer not in its shortest form")
            return value, i + k + 1
        shift += 7
    raise ProtocolError("variable byte integer longer than 4 bytes")


def parse_properties(data: bytes, i: int, end: int) -> tuple[dict[int, int | bytes], int]:
    """Properties starting at data[i] (their length first); returns (single-valued ones, index after)."""
    length, i = _read_varint(data, i, end)
    stop = i + length
    if stop > end:
        raise ProtocolError("properties run past the packet")
    props: dict[int, int | bytes] = {}
    while i < stop:
        ident, i = _read_varint(data, i, stop)
        kind = _PROPERTY_KINDS.get(ident)
        value: int | bytes
        if kind is None:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
        if kind == "v":
            value, i = _read_varint(data, i, stop)
        elif isinstance(kind, int):
            if i + kind > stop:
                raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
            value = int.from_bytes(data[i : i + kind], "big")
            i += kind
        else:
            for _ in range(2 if kind == "p" else 1):
                if i + 2 > stop:
                    raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
                n = data[i] << 8 | data[i + 1]
                if i + 2 + n > stop:
                    raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
                value = data[i + 2 : i + 2 + n]
                i += 2 + n
        if kind != "p":
            if ident in props and ident != 0x0B:
                raise ProtocolError(f"property 0x{ident:02x} given twice")
            props[ident] = value
    return props, stop


def _string(s: bytes) -> bytes:
    return _U16.pack(len(s)) + s


def connect_packet(
    client_id: str,
    keepalive: int,
    session_expiry: int,
    receive_maximum: int,
    max_packet: int,
    credentials: tuple[str, str] | None = None,
) -> bytes:
    """CONNECT, MQTT 5, clean start off, no will; a user name and password when given."""
    props = (
        b"\x11"
        + session_expiry.to_bytes(4, "big")
        + b"\x21"
        + receive_maximum.to_bytes(2, "big")
        + b"\x27"
        + max_packet.to_bytes(4, "big")
    )
    flags, login = 0x00, b""
    if credentials is not None:
        flags, login = 0xC0, _string(credentials[0].encode()) + _string(credentials[1].encode())
    body = (
        b"\x00\x04MQTT\x05"
        + bytes((flags,))
        + _U16.pack(keepalive)
        + varint(len(props))
        + props
        + _string(client_id.encode())
        + login
    )
    return bytes((_CONNECT,)) + varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, pid: int, dup: bool = False) -> bytes:
    """PUBLISH, QoS 1, no properties."""
    body = _string(topic) + _U16.pack(pid) + b"\x00" + payload
    return bytes((_PUBLISH | 0x02 | (0x08 if dup else 0),)) + varint(len(body)) + body


class _Ack:
    """The acknowledgement token of one QoS 1 message; calling it settles the message."""

    __slots__ = ("client", "done", "pid")

    def __init__(self, client: MqttClient, pid: int) -> None:
        self.client = client
        self.pid = pid
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.client._settled(self)


def _noop() -> None:
    return None


class MqttClient(asyncio.Protocol):
    """One connection to the broker. Await `connected`, then `subscribe()`; `closed` resolves
    with the reason when the connection ends for any cause."""

    def __init__(
        self,
        client_id: str,
        keepalive: int,
        session_expiry: int,
        receive_maximum: int,
        max_packet: int,
        on_message: OnMessage,
        outbox: deque[tuple[bytes, bytes]],
        on_published: Callable[[int], None] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client_id = client_id
        self._credentials = credentials  # (user name, password); never logged
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.max_packet = max_packet
        self.on_message = on_message
        self.outbox = outbox  # (topic, payload) to publish with QoS 1; shared across connections
        self.on_published = on_published  # called with the PUBACK reason code of each publish
        self.connected: asyncio.Future[bool] = self.loop.create_future()  # session present
        self.closed: asyncio.Future[str] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._acks: deque[_Ack] = deque()
        self._inflight: dict[int, tuple[bytes, bytes]] = {}  # our publishes awaiting PUBACK
        self._send_quota = 65535  # the broker's Receive Maximum
        self._pid = 0
        self._suback: dict[int, asyncio.Future[bytes]] = {}
        self._last_rx = self._last_tx = self.loop.time()
        self._ping_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._overrun_paused = False
        self._reading_paused = False
        self._buf = b""  # what was read and not parsed yet, from _pos on
        self._pos = 0
        self._slice: asyncio.Handle | None = None
        self._quickack: Callable[[], None] | None = None
        self.overruns = 0  # times reading paused because the broker sent over Receive Maximum

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport
        sock = transport.get_extra_info("socket")
        quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux only
        if sock is not None and quickack is not None:
            self._quickack = functools.partial(sock.setsockopt, socket.IPPROTO_TCP, quickack, 1)
            self._ack_now()
        self.transport.write(
            connect_packet(
                self.client_id,
                self.keepalive,
                self.session_expiry,
                self.receive_maximum,
                self.max_packet,
                self._credentials,
            )
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(f"connection lost: {exc}" if exc is not None else "connection closed by the broker")

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.loop.time()
        if len(data) < _QUICKACK_BELOW:
            self._ack_now()
        self._buf = self._buf[self._pos :] + data if self._pos < len(self._buf) else data
        self._pos = 0
        if self._slice is None:
            self._parse()

    def _parse(self) -> None:
        """Handle up to SLICE packets of what was read; the rest after the loop's other callbacks."""
        self._slice = None
        data = self._buf
        n = len(data)
        i = self._pos
        budget = SLICE
        try:
            while i + 1 < n and budget:
                first = data[i]
                b = data[i + 1]
                if b < 0x80:
                    rem, j = b, i + 2
                else:
                    got = self._header_length(data, i + 1, n)
                    if got is None:
                        break
                    rem, j = got
                end = j + rem
                if end - i > self.max_packet:
                    raise ProtocolError(f"packet of {end - i} bytes, over the maximum of {self.max_packet} announced")
                if end > n:
                    break
                if first & 0xF0 == _PUBLISH:
                    self._publish(first, data, j, end)
                elif first == _PUBACK:
                    self._puback(data, j, end)
                else:
                    self._control(first, data, j, end)
                i = end
                budget -= 1
                if self.transport is None:
                    return
        except ProtocolError as exc:
            self.fail(f"malformed packet from the broker: {exc}", 0x81)
            return
        self._pos = i
        if not budget:
            # more may be waiting: let PUBACKs from central and commit results in first, and
            # read no more meanwhile
            self._slice = self.loop.call_soon(self._parse)
        self._update_reading()

    def _ack_now(self) -> None:
        if self._quickack is not None:
            try:
                self._quickack()
            except OSError:  # not a TCP socket after all, or closing: ACKs stay as they are
                self._quickack = None

    def _update_reading(self) -> None:
        pause = self._overrun_paused or self._slice is not None
        if pause != self._reading_paused and self.transport is not None:
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # --- use -----------------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int, within_s: float, retain_handling: int = 0) -> None:
        """SUBSCRIBE and wait for the SUBACK; LocalBrokerError when refused or downgraded.
        retain_handling 2: the broker sends no retained messages for this subscription."""
        pid = self._next_pid()
        body = _U16.pack(pid) + b"\x00" + _string(topic_filter.encode()) + bytes((qos | retain_handling << 4,))
        waiter: asyncio.Future[bytes] = self.loop.create_future()
        self._suback[pid] = waiter
        self._write(bytes((_SUBSCRIBE,)) + varint(len(body)) + body)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result of a future
            # that completes just as the task is cancelled and drops the cancellation
            async with asyncio.timeout(within_s):
                codes = await waiter
        except TimeoutError:
            raise LocalBrokerError(f"no SUBACK for {topic_filter!r} within {within_s}s") from None
        finally:
            self._suback.pop(pid, None)
        if len(codes) != 1 or codes[0] != qos:
            raise LocalBrokerError(f"subscription to {topic_filter!r} answered with reason code 0x{codes[0]:02x}")

    def pump(self) -> None:
        """Publish from the outbox as far as the broker's Receive Maximum allows."""
        outbox = self.outbox
        while outbox and len(self._inflight) < self._send_quota and self.transport is not None:
            topic, payload = outbox.popleft()
            pid = self._next_pid()
            self._inflight[pid] = (topic, payload)
            self._write(publish_packet(topic, payload, pid))

    def close(self) -> None:
        """DISCONNECT (normal) and close; the session stays on the broker."""
        if self.transport is not None:
            self._flush()
            self.transport.write(b"\xe0\x00")
            self.transport.close()
        self._finish("closed by the agent")

    def fail(self, reason: str, code: int | None = 0x82) -> None:
        """Close, with a DISCONNECT carrying `code` (0x81 malformed packet, 0x82 protocol error)
        unless it is None (the broker ended the connection itself)."""
        if self.transport is not None:
            self._out.clear()
            if code is not None:
                self.transport.write(bytes((_DISCONNECT, 1, code)))
            self.transport.close()
        self._finish(reason)

    # --- inside ----------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._slice is not None:
            self._slice.cancel()
            self._slice = None
        self.transport = None
        self._acks.clear()
        if self._inflight:
            # unacknowledged publishes go first on the next connection
            self.outbox.extendleft(reversed(list(self._inflight.values())))
            self._inflight.clear()
        if not self.closed.done():
            self.closed.set_result(reason)
        waiters: list[asyncio.Future[bool] | asyncio.Future[bytes]] = [self.connected, *self._suback.values()]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(LocalBrokerError(reason))
                waiter.exception()  # marked retrieved: whoever awaits it still gets the error

    @staticmethod
    def _header_length(data: bytes, i: int, n: int) -> tuple[int, int] | None:
        """Remaining length of a fixed header whose length field starts at data[i]; None if incomplete."""
        value = shift = 0
        for k in range(4):
            if i + k >= n:
                return None
            b = data[i + k]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                if k and not b:
                    raise ProtocolError("remaining length not in its shortest form")
                return value, i + k + 1
            shift += 7
        raise ProtocolError("remaining length longer than 4 bytes")

    def _publish(self, first: int, data: bytes, j: int, end: int) -> None:
        qos = (first >> 1) & 3
        if qos > 1:
            raise ProtocolError(f"PUBLISH with QoS {qos} (subscribed with QoS 1)")
        if not qos and first & 0x08:
            raise ProtocolError("QoS 0 PUBLISH with the DUP flag")
        if j + 2 > end:
            raise ProtocolError("PUBLISH shorter than its topic length")
        k = j + 2 + (data[j] << 8 | data[j + 1])
        topic = data[j + 2 : k]
        pid = 0
        if qos:
            if k + 2 > end:
                raise ProtocolError("PUBLISH shorter than its topic and packet id")
            pid = data[k] << 8 | data[k + 1]
            k += 2
        if k >= end:  # the property length must follow
            raise ProtocolError("PUBLISH shorter than its topic, packet id and properties")
        if data[k]:
            props, k = parse_properties(data, k, end)
            if _P_TOPIC_ALIAS in props:
                raise ProtocolError("PUBLISH with a topic alias (none were allowed)")
        else:
            k += 1
        if not topic:
            raise ProtocolError("PUBLISH with an empty topic")
        if qos:
            if not pid:
                raise ProtocolError("PUBLISH with packet id 0")
            ack = _Ack(self, pid)
            self._acks.append(ack)
            if len(self._acks) >= self.receive_maximum and not self._overrun_paused and self.transport is not None:
                self._overrun()
            self.on_message(topic, data[k:end], ack)
        else:
            self.on_message(topic, data[k:end], _noop)

    def _settled(self, ack: _Ack) -> None:
        acks = self._acks
        if not acks or acks[0] is not ack or self.transport is None:
            return  # released later in arrival order, or the connection it came on is gone
        out = self._out
        while acks and acks[0].done:
            out.append(_PUBACK_PACKET(_PUBACK, 2, acks.popleft().pid))
        if self._overrun_paused and len(acks) <= self.receive_maximum // 2:
            self._overrun_paused = False
            self._update_reading()
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _overrun(self) -> None:
        # The broker must not send more than Receive Maximum unacknowledged messages, and the
        # spec's answer is DISCONNECT 0x93; but mosquitto 2.0.11 was measured to ignore the
        # limit, and a disconnect would only bring the same messages back. Reading pauses
        # instead (TCP backpressure) until half of them are acknowledged, which bounds memory
        # whatever the broker does.
        self._overrun_paused = True
        self._update_reading()
        self.overruns += 1
        if self.overruns == 1:
            log.info(
                "local_broker_overrun unacknowledged=%d receive_maximum=%d action=pause_reading",
                len(self._acks),
                self.receive_maximum,
            )

    def _puback(self, data: bytes, j: int, end: int) -> None:
        if end - j < 2:
            raise ProtocolError("PUBACK shorter than a packet id")
        pid = data[j] << 8 | data[j + 1]
        code = data[j + 2] if end - j > 2 else 0
        if end - j > 3:
            parse_properties(data, j + 3, end)
        if self._inflight.pop(pid, None) is None:
            raise ProtocolError(f"PUBACK for packet id {pid}, which is not in flight")
        if self.on_published is not None:
            self.on_published(code)
        if self.outbox:
            self.pump()

    def _control(self, first: int, data: bytes, j: int, end: int) -> None:
        if first == _CONNACK:
            self._connack(data, j, end)
        elif first == _SUBACK:
            if end - j < 3:
                raise ProtocolError("SUBACK too short")
            pid = data[j] << 8 | data[j + 1]
            _, k = parse_properties(data, j + 2, end)
            waiter = self._suback.get(pid)
            if waiter is None:
                raise ProtocolError(f"SUBACK for packet id {pid}, which was not asked for")
            if k >= end:
                raise ProtocolError("SUBACK without reason codes")
            if not waiter.done():
                waiter.set_result(data[k:end])
        elif first == _PINGRESP:
            if end != j:
                raise ProtocolError("PINGRESP with a body")
            self._ping_at = None
        elif first == _DISCONNECT:
            code = data[j] if end > j else 0
            reason = b""
            if end - j > 1:
                props, _ = parse_properties(data, j + 1, end)
                text = props.get(_P_REASON_STRING, b"")
                reason = text if isinstance(text, bytes) else b""
            self.fail(f"the broker sent DISCONNECT 0x{code:02x} {reason.decode(errors='replace')!r}".rstrip(" '"), None)
        else:
            raise ProtocolError(f"unexpected packet 0x{first:02x}")

    def _connack(self, data: bytes, j: int, end: int) -> None:
        if self.connected.done():
            raise ProtocolError("a second CONNACK")
        if end - j < 3:
            raise ProtocolError("CONNACK too short")
        flags, code = data[j], data[j + 1]
        if flags & 0xFE:
            raise ProtocolError(f"CONNACK flags 0x{flags:02x}")
        props, k = parse_properties(data, j + 2, end)
        if k != end:
            raise ProtocolError("bytes after the CONNACK properties")
        if code:
            text = props.get(_P_REASON_STRING, b"")
            detail = text.decode(errors="replace") if isinstance(text, bytes) else ""
            self.fail(f"connection refused: CONNACK reason code 0x{code:02x} {detail}".rstrip(), None)
            return
        quota = props.get(_P_RECEIVE_MAXIMUM, 65535)
        self._send_quota = quota if isinstance(quota, int) and quota > 0 else 65535
        if props.get(_P_MAXIMUM_QOS, 1) == 0:
            self._send_quota = 0
            log.warning("local_broker_max_qos_0 receipts=off (the broker takes no QoS 1 publishes)")
        keepalive = props.get(_P_SERVER_KEEP_ALIVE)
        if isinstance(keepalive, int):
            self.keepalive = keepalive
        if self.keepalive:
            self._timer = self.loop.call_later(self.keepalive / 4, self._tick)
        self.connected.set_result(bool(flags & 1))
        self.pump()

    def _tick(self) -> None:
        now = self.loop.time()
        if self._ping_at is not None and now - self._ping_at > self.keepalive:
            self.fail(f"no PINGRESP within {self.keepalive}s")
            return
        half = self.keepalive / 2
        if self._ping_at is None and (now - self._last_tx >= half or now - self._last_rx >= half):
            self._ping_at = now
            self._write(_PINGREQ)
        self._timer = self.loop.call_later(self.keepalive / 4, self._tick)

    def _next_pid(self) -> int:
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 0xFFFF else 1
            if pid not in self._inflight and pid not in self._suback:
                self._pid = pid
                return pid

    def _write(self, packet: bytes) -> None:
        self._out.append(packet)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._out and self.transport is not None:
            data = b"".join(self._out)
            self._out.clear()
            self.transport.write(data)
            self._last_tx = self.loop.time()
