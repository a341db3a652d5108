"""firmware/lib/mqtt.py, the device MQTT 3.1.1 client, against a real Mosquitto and against
fake brokers written here (for what Mosquitto never does: withhold acks, stop answering,
send garbage).

Every scenario runs the client under the MicroPython unix port and under CPython: the
device side is tests/firmware/mqtt_device.py in a subprocess, printing one line per event;
this process drives the broker side (paho-mqtt as the peer, or a fake broker socket) and
checks the transcript line by line. Wire bytes the client must send are pinned as literals.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR

DEVICE = Path(__file__).resolve().parent / "mqtt_device.py"
CONNACK_OK = bytes.fromhex("20020000")
_peer_ids = itertools.count(1)


# -- the device: the client in a subprocess ----------------------------------------------------


class Device:
    """One run of mqtt_device.py; its stdout lines are read on a thread into a queue."""

    def __init__(self, interp: list[str], scenario: str, port: int, opts: dict[str, object]) -> None:
        lib = str(FIRMWARE_DIR / "lib")
        # ".frozen": MicroPython's built-in Python modules (ssl is one) are found through the path
        env = dict(os.environ, MICROPYPATH=f"{lib}:.frozen", PYTHONPATH=lib, PYTHONUNBUFFERED="1")
        cmd = [*interp, str(DEVICE), scenario, str(port), *(f"{k}={v}" for k, v in opts.items())]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.transcript: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    def report(self) -> str:
        """Everything the device said; ends the device (this is for failure messages)."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for t in self._threads:
            t.join(5)
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.transcript.append(line)
        out = "\n  ".join(self.transcript)
        return f"device stdout:\n  {out}\ndevice stderr:\n{''.join(self._stderr)}"

    def expect(self, word: str, timeout: float = 5.0) -> list[str]:
        """The next line must start with `word`; returns the words after it."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {word!r} line from the device within {timeout} s\n{self.report()}")
        if line is None:
            self._threads[1].join(5)
            pytest.fail(f"device exited (status {self.proc.wait(5)}) before {word!r}\n{self.report()}")
        self.transcript.append(line)
        head, _, rest = line.partition(" ")
        if head != word:
            pytest.fail(f"expected a {word!r} line, got {line!r}\n{self.report()}")
        return rest.split(" ") if rest else []

    def error(self, timeout: float = 5.0) -> tuple[int, str, str]:
        """An "error <ms> <code> <reason>" line: the scenario ended with an MQTTException."""
        ms, code, *reason = self.expect("error", timeout)
        return int(ms), code, " ".join(reason)

    def lines(self, count: int, timeout: float = 5.0) -> list[str]:
        """The next `count` lines, for events whose order is not fixed."""
        got: list[str] = []
        for _ in range(count):
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"expected {count} more lines, got {got}\n{self.report()}")
            got.append(line)
            self.transcript.append(line)
        return got

    def finish(self, timeout: float = 5.0) -> None:
        """The device exits cleanly with nothing more to say."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"device still running after {timeout} s\n{self.report()}")
        for t in self._threads:
            t.join(5)
        rest = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        self.transcript.extend(rest)
        assert status == 0 and not rest, f"unexpected end (status {status}, extra lines {rest})\n{self.report()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL
        self.proc.wait(5)
        for t in self._threads:
            t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture(params=["micropython", "cpython"])
def interp(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "micropython":
        return [request.getfixturevalue("micropython")]  # skips loudly when there is none
    return [sys.executable]


RunDevice = Callable[..., Device]


@pytest.fixture
def run_device(interp: list[str]) -> Iterator[RunDevice]:
    devices: list[Device] = []

    def run(scenario: str, port: int, **opts: object) -> Device:
        devices.append(Device(interp, scenario, port, opts))
        return devices[-1]

    yield run
    for d in devices:
        d.kill()


# -- the peer: paho-mqtt on the real broker ----------------------------------------------------


class Peer:
    """A paho-mqtt client on the broker; messages on its subscriptions go to a queue."""

    def __init__(self, port: int, topics: tuple[str, ...]) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{next(_peer_ids)}")
        c.on_connect = lambda *_: self._connected.set()
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        self.client = c
        assert self._connected.wait(5), "peer: no CONNACK"
        if topics:
            c.subscribe([(t, 1) for t in topics])
            assert self._subscribed.wait(5), "peer: no SUBACK"

    def expect(self, topic: str, timeout: float = 5.0) -> paho.MQTTMessage:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"peer: no message on {topic} within {timeout} s")
        assert msg.topic == topic, f"peer: message on {msg.topic}, expected {topic}"
        return msg

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(port: int, *topics: str) -> Peer:
        peers.append(Peer(port, topics))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


# -- fake brokers: scripted sockets -------------------------------------------------------------


class FakeConn:
    """The broker end of one client connection, driven step by step by the test."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _exact(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self.sock.recv(n - len(data))
            except TimeoutError:
                pytest.fail(f"fake broker: client sent {data.hex()} and then nothing")
            if not chunk:
                raise EOFError(data.hex())
            data += chunk
        return data

    def read_packet(self, timeout: float = 5.0) -> bytes:
        """The next whole packet from the client, fixed header included."""
        deadline = time.monotonic() + timeout
        raw = self._exact(2, deadline)
        n, shift = raw[1] & 0x7F, 7
        while raw[-1] & 0x80:
            raw += self._exact(1, deadline)
            n |= (raw[-1] & 0x7F) << shift
            shift += 7
        return raw + self._exact(n, deadline)

    def expect_closed(self, timeout: float = 5.0) -> None:
        """The client drops the connection without sending anything more."""
        try:
            extra = self.read_packet(timeout)
        except EOFError as exc:
            assert not exc.args[0], f"fake broker: partial packet {exc.args[0]} before close"
            return
        except ConnectionResetError:
            return
        pytest.fail(f"fake broker: expected the client to close, got {extra.hex()}")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def handshake(self, connack: bytes = CONNACK_OK) -> bytes:
        connect = self.read_packet()
        assert connect[0] == 0x10, f"fake broker: expected CONNECT, got {connect.hex()}"
        self.send(connack)
        return connect


class FakeBroker:
    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port: int = self.listener.getsockname()[1]
        self.conns: list[FakeConn] = []

    def accept(self, timeout: float = 5.0) -> FakeConn:
        self.listener.settimeout(timeout)
        sock, _ = self.listener.accept()
        self.conns.append(FakeConn(sock))
        return self.conns[-1]

    def close(self) -> None:
        for c in self.conns:
            c.sock.close()
        self.listener.close()


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    f = FakeBroker()
    yield f
    f.close()


def publish_packet(topic: bytes, payload: bytes, qos: int = 0, pid: int = 0) -> bytes:
    """A PUBLISH from the broker (remaining length below 16384)."""
    body = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"") + payload
    n = len(body)
    length = bytes([n]) if n < 128 else bytes([n & 0x7F | 0x80, n >> 7])
    return bytes([0x30 | qos << 1]) + length + body


def msg_line(topic: str, payload: bytes) -> list[str]:
    return [topic, payload.hex(), ""]


# -- against the real Mosquitto -----------------------------------------------------------------


def test_publish_and_subscribe(broker: Mosquitto, run_device: RunDevice, peer: Callable[..., Peer]) -> None:
    p = peer(broker.port, "ge/test/out/#")
    d = run_device("pubsub", broker.port, id="AP-PS")
    assert d.expect("connected") == ["False"]
    assert d.expect("granted") == ["1"]
    # QoS 0 (bytes payload), QoS 1 (bytes topic, str payload), QoS 1 retained
    assert d.expect("puback") == ["2"]  # the SUBSCRIBE used packet id 1
    assert d.expect("pid") == ["2"]
    assert d.expect("puback") == ["3"]
    d.expect("published")
    m = p.expect("ge/test/out/q0")
    assert (m.payload, m.qos) == (b"zero", 0)
    m = p.expect("ge/test/out/q1")
    assert (m.payload, m.qos) == ("one \u2713".encode(), 1)
    m = p.expect("ge/test/out/retained")
    assert (m.payload, m.qos) == (b"kept", 1)
    p.publish("ge/test/in", b"hello q0", qos=0)
    p.publish("ge/test/in", b"\x00\xffbinary q1", qos=1)
    assert d.expect("msg") == msg_line("ge/test/in", b"hello q0")
    assert d.expect("msg") == msg_line("ge/test/in", b"\x00\xffbinary q1")
    d.expect("done")
    d.finish()
    late = peer(broker.port, "ge/test/out/retained")
    m = late.expect("ge/test/out/retained")
    assert (m.payload, m.retain) == (b"kept", True)


def test_qos1_from_peer_is_acknowledged(broker: Mosquitto, run_device: RunDevice, peer: Callable[..., Peer]) -> None:
    # With a persistent session Mosquitto redelivers an unacknowledged QoS 1 message right
    # after the next CONNACK, before anything newer: seeing "marker" first proves the PUBACK.
    p = peer(broker.port)
    d = run_device("session", broker.port, id="AP-SESS")
    assert d.expect("connected") == ["False"]
    d.expect("subscribed")
    p.publish("ge/test/sess", b"once", qos=1)
    assert d.expect("msg") == msg_line("ge/test/sess", b"once")
    assert d.expect("connected") == ["True"]  # session present
    p.publish("ge/test/sess", b"marker", qos=1)
    assert d.expect("msg") == msg_line("ge/test/sess", b"marker")
    d.expect("done")
    d.finish()


def test_last_will_on_sigkill(broker: Mosquitto, run_device: RunDevice, peer: Callable[..., Peer]) -> None:
    p = peer(broker.port, "ge/dev/AP-W/status")
    d = run_device("will", broker.port, id="AP-W", will=1, keepalive=10)
    assert d.expect("connected") == ["False"]
    assert d.expect("puback") == ["1"]
    d.expect("ready")
    assert p.expect("ge/dev/AP-W/status").payload == b"online"
    d.kill()
    assert p.expect("ge/dev/AP-W/status").payload == b"offline"
    m = peer(broker.port, "ge/dev/AP-W/status").expect("ge/dev/AP-W/status")
    assert (m.payload, m.retain) == (b"offline", True)


def test_publish_without_waiting(broker: Mosquitto, run_device: RunDevice, peer: Callable[..., Peer]) -> None:
    p = peer(broker.port, "ge/test/nw/#")
    d = run_device("nowait", broker.port, id="AP-NW")
    d.expect("connected")
    assert d.expect("pids") == ["1", "2", "3"]
    assert d.expect("pending") == ["1", "2", "3"]  # nothing is read until check_msg()
    for pid in ("1", "2", "3"):
        assert d.expect("puback") == [pid]
    assert d.expect("retried") == ["0"]
    assert d.expect("pending") == []
    assert d.expect("puback") == ["4"]
    d.expect("done")
    d.finish()
    for i in range(3):
        m = p.expect("ge/test/nw")
        assert (m.payload, m.qos) == (f"m{i}".encode(), 1)
    assert p.expect("ge/test/nw/end").payload == b"end"


def test_keepalive_keeps_idle_connection(broker: Mosquitto, run_device: RunDevice, peer: Callable[..., Peer]) -> None:
    # keepalive 2 s: Mosquitto drops a silent client after 3 s; the device idles for 5 s
    p = peer(broker.port, "ge/test/ka/out")
    d = run_device("keepalive", broker.port, id="AP-KA", keepalive=2)
    d.expect("connected")
    d.expect("idle")
    (pings,) = d.expect("pings", timeout=10)
    assert int(pings) >= 3
    assert d.expect("puback") == ["2"]
    d.expect("awake")
    assert p.expect("ge/test/ka/out").payload == b"still here"
    p.publish("ge/test/ka", b"wake up", qos=1)
    assert d.expect("msg") == msg_line("ge/test/ka", b"wake up")
    d.expect("done")
    d.finish()
    assert "exceeded timeout" not in broker.log_tail(100)


def test_broker_killed_and_restarted(broker: Mosquitto, run_device: RunDevice, peer: Callable[..., Peer]) -> None:
    d = run_device("reconnect", broker.port, id="AP-K", keepalive=5)
    d.expect("connected")
    d.expect("ready")
    broker.kill()
    lost = " ".join(d.expect("lost"))
    assert "closed by the broker" in lost or "ECONNRESET" in lost or "reset" in lost, lost
    refused = " ".join(d.expect("refused"))
    assert f"cannot connect to 127.0.0.1:{broker.port}" in refused, refused
    broker.start()
    assert d.expect("reconnected", timeout=10) == []
    p = peer(broker.port, "ge/test/k/back")
    p.publish("ge/test/k", b"welcome back", qos=1)
    assert d.expect("msg") == msg_line("ge/test/k", b"welcome back")
    assert d.expect("puback") == ["3"]  # packet ids carry on across connections
    d.expect("done")
    d.finish()
    assert p.expect("ge/test/k/back").payload == b"back"


def _self_signed(path: Path) -> None:
    """A certificate for 127.0.0.1 and its key: <path>.pem, <path>.der, <path>.key (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path = path.with_suffix(".key")
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    _self_signed(d / "broker")
    _self_signed(d / "other")
    return d


def test_tls(certs: Path, tmp_path: Path, run_device: RunDevice) -> None:
    tls = f"certfile {certs / 'broker.pem'}\nkeyfile {certs / 'broker.key'}"
    with Mosquitto(tmp_path / "tls", name="tls", extra_config=tls) as b:
        d = run_device("loopback", b.port, id="AP-TLS", ca=certs / "broker")
        assert d.expect("connected") == ["False"]
        assert d.expect("granted") == ["1"]
        # PUBACKs and the messages themselves interleave in any order
        got = sorted(d.lines(6))
        want = sorted(["puback 2", "puback 3", "puback 4"] + [f"msg ge/test/loop {'78' * n} " for n in (1, 100, 1000)])
        assert got == want, d.report()
        d.expect("done")
        d.finish()
        # a broker certificate the client does not trust: a clean MQTTException
        d = run_device("wait", b.port, ca=certs / "other")
        _ms, code, reason = d.error()
        assert code == "None" and reason.startswith(f"cannot connect to 127.0.0.1:{b.port}: "), reason
        assert "certificate" in reason, reason
        d.finish()


# -- against fake brokers -----------------------------------------------------------------------


def test_connect_packet_and_split_reads(fake: FakeBroker, run_device: RunDevice) -> None:
    d = run_device("wait", fake.port, id="AP-C", user="tech", password="s3cret", keepalive=30, will=1)
    conn = fake.accept()
    # CONNECT, MQTT 3.1.1, flags: user, password, will retain, will QoS 1, will, clean session
    assert conn.read_packet() == bytes.fromhex(
        "103b 00044d515454 04 ee 001e 0004"
        "41502d43 0012 67652f6465762f41502d432f737461747573 0007 6f66666c696e65 0004 74656368 0006 733363726574"
    )
    # CONNACK (session present) and then a QoS 1 PUBLISH with a 2-byte remaining length,
    # each cut into pieces so the client has to put them together across reads
    payload = bytes(range(200))
    pub = publish_packet(b"ge/dev/AP-C/down", payload, qos=1, pid=0x1234)
    assert pub[:4] == bytes.fromhex("32dc0100")
    pieces = [b"\x20", b"\x02\x01", b"\x00", pub[:1], pub[1:2], pub[2:5], pub[5:100], pub[100:]]
    for piece in pieces:
        conn.send(piece)
        time.sleep(0.02)  # shapes the byte stream into separate segments; no synchronisation
    assert d.expect("connected") == ["True"]
    assert d.expect("msg") == msg_line("ge/dev/AP-C/down", payload)
    assert conn.read_packet() == bytes.fromhex("40021234")  # PUBACK
    conn.sock.close()
    _ms, code, reason = d.error()
    assert (code, reason) == ("None", "connection closed by the broker")
    d.finish()


def test_qos1_publish_retransmits_with_dup(fake: FakeBroker, run_device: RunDevice) -> None:
    d = run_device("retry", fake.port, id="AP-R", retry_ms=150, max_retries=3)
    conn = fake.accept()
    assert conn.handshake() == bytes.fromhex("1010 00044d515454 04 02 0000 0004 41502d52")
    d.expect("connected")
    first = conn.read_packet()
    assert first == bytes.fromhex("3212 0009 67652f746573742f72 0001 6669727374")  # QoS 1, DUP 0, pid 1
    # while the client waits for its PUBACK, messages from the broker reach the callback
    conn.send(publish_packet(b"ge/test/in", b"q0 meanwhile"))
    conn.send(publish_packet(b"ge/test/in", b"q1 meanwhile", qos=1, pid=0xBEEF))
    assert conn.read_packet() == bytes.fromhex("4002beef")
    # no PUBACK: the same packet again with DUP set, every retry_ms
    assert conn.read_packet() == bytes([0x3A]) + first[1:]
    assert conn.read_packet() == bytes([0x3A]) + first[1:]
    conn.send(bytes.fromhex("40020001"))
    assert d.expect("msg") == msg_line("ge/test/in", b"q0 meanwhile")
    assert d.expect("msg") == msg_line("ge/test/in", b"q1 meanwhile")
    assert d.expect("puback") == ["1"]
    assert d.expect("acked") == ["1"]
    # never acknowledged: sent once plus max_retries times, then MQTTException and close
    second = conn.read_packet()
    assert second == bytes.fromhex("3213 0009 67652f746573742f72 0002 7365636f6e64")
    for _ in range(3):
        assert conn.read_packet() == bytes([0x3A]) + second[1:]
    _ms, code, reason = d.error()
    assert (code, reason) == ("None", "no PUBACK for packet 2 after 3 retries")
    conn.expect_closed()
    d.finish()


def test_retry_resends_pending_with_dup(fake: FakeBroker, run_device: RunDevice) -> None:
    d = run_device("nowait", fake.port, id="AP-NR", retry_ms=200)
    conn = fake.accept()
    conn.handshake()
    d.expect("connected")
    sent = [conn.read_packet() for _ in range(3)]
    assert [p[0] for p in sent] == [0x32] * 3
    assert d.expect("pids") == ["1", "2", "3"]
    assert d.expect("pending") == ["1", "2", "3"]
    conn.send(bytes.fromhex("40020002"))  # only the middle one is acknowledged
    assert d.expect("puback") == ["2"]
    # retry() resends 1 and 3 with DUP once they are retry_ms old (more than once if this
    # side is slow to answer; every copy must be a DUP of the original)
    dups = {conn.read_packet(), conn.read_packet()}
    assert dups == {bytes([0x3A]) + sent[0][1:], bytes([0x3A]) + sent[2][1:]}
    conn.send(bytes.fromhex("40020001 40020003"))
    assert d.expect("puback") == ["1"]
    assert d.expect("puback") == ["3"]
    (retried,) = d.expect("retried")
    assert int(retried) >= 2
    assert d.expect("pending") == []
    while (pkt := conn.read_packet())[0] == 0x3A:
        assert pkt in dups
    assert pkt == bytes.fromhex("3215 000e 67652f746573742f6e772f656e64 0004 656e64")
    conn.send(bytes.fromhex("40020004"))
    assert d.expect("puback") == ["4"]
    assert conn.read_packet() == bytes.fromhex("e000")  # DISCONNECT
    d.expect("done")
    d.finish()


def test_subscribe_refused(fake: FakeBroker, run_device: RunDevice) -> None:
    d = run_device("subfail", fake.port)
    conn = fake.accept()
    conn.handshake()
    d.expect("connected")
    assert conn.read_packet() == bytes.fromhex("8213 0001 000e 67652f746573742f64656e696564 01")
    conn.send(bytes.fromhex("90030001 80"))
    assert d.expect("refused") == ["128", "subscription", "to", "b'ge/test/denied'", "refused", "(SUBACK", "0x80)"]
    # the connection stays usable
    assert conn.read_packet() == bytes.fromhex("820f 0002 000a 67652f746573742f6f6b 00")
    conn.send(bytes.fromhex("90030002 00"))
    assert d.expect("granted") == ["0"]
    assert conn.read_packet() == bytes.fromhex("301e 000d 67652f746573742f6166746572") + b"still connected"
    assert conn.read_packet() == bytes.fromhex("e000")
    d.expect("done")
    d.finish()


def test_inflight_resent_after_reconnect(fake: FakeBroker, run_device: RunDevice) -> None:
    d = run_device("resume", fake.port, id="AP-RS")
    conn = fake.accept()
    assert conn.handshake() == bytes.fromhex("1011 00044d515454 04 00 0000 0005 41502d5253")  # no clean session
    d.expect("connected")
    first = [conn.read_packet() for _ in range(2)]
    conn.sock.close()  # no PUBACKs
    assert d.expect("lost") == ["connection", "closed", "by", "the", "broker"]
    assert d.expect("pending") == ["1", "2"]
    conn = fake.accept()
    conn.handshake(bytes.fromhex("20020100"))
    assert d.expect("connected") == ["True"]
    # MQTT-4.4.0-1: re-sent in the original order, with DUP
    assert [conn.read_packet() for _ in range(2)] == [bytes([0x3A]) + p[1:] for p in first]
    conn.send(bytes.fromhex("40020001 40020002"))
    assert d.expect("puback") == ["1"]
    assert d.expect("puback") == ["2"]
    assert d.expect("pending") == []
    assert conn.read_packet() == bytes.fromhex("e000")
    d.expect("done")
    d.finish()


@pytest.mark.parametrize("scenario", ["wait", "keepalive"])
def test_dead_broker_detected_by_keepalive(fake: FakeBroker, run_device: RunDevice, scenario: str) -> None:
    # The fake accepts the connection and then never answers: a blocking wait_msg() ("wait")
    # and an app loop with its own poll, keepalive_due() and ping() ("keepalive") both notice.
    d = run_device(scenario, fake.port, keepalive=1)
    conn = fake.accept()
    conn.handshake()
    d.expect("connected")
    if scenario == "keepalive":
        assert conn.read_packet() == bytes.fromhex("820f 0001 000a 67652f746573742f6b61 01")
        conn.send(bytes.fromhex("90030001 01"))
        d.expect("idle")
    assert conn.read_packet() == bytes.fromhex("c000")  # PINGREQ after half the keepalive
    ms, code, reason = d.error(timeout=5)
    assert (code, reason) == ("None", "no PINGRESP within 1000 ms: broker unreachable")
    assert ms < 4000, f"noticed after {ms} ms"
    conn.expect_closed()
    d.finish()


# (name, what the fake sends after CONNECT, then close?, options, the error, its code)
MALFORMED = [
    ("garbage instead of CONNACK", "deadbeef00", False, {}, "unexpected packet 0xde from the broker", "None"),
    ("garbage after CONNACK", "20020000 000102030405", False, {}, "unexpected packet 0x00 from the broker", "None"),
    ("closed before CONNACK", "", True, {}, "connection closed by the broker", "None"),
    (
        "truncated PUBLISH, then close",
        "20020000 300a00036162",
        True,
        {},
        "connection closed by the broker in the middle of a packet",
        "None",
    ),
    (
        "truncated PUBLISH, then silence",
        "20020000 300a00",
        False,
        {"timeout_ms": 300},
        "timed out after 300 ms in the middle of a packet",
        "None",
    ),
    ("5-byte remaining length", "20020000 30ffffffff7f", False, {}, "remaining length longer than 4 bytes", "None"),
    (
        "oversize PUBLISH",
        "20020000 30a08d06",
        False,
        {"max_packet": 4096},
        "packet of 100004 bytes from the broker exceeds max_packet 4096",
        "None",
    ),
    ("CONNACK refused, code 5", "20020005", False, {}, "connection refused: not authorized (CONNACK code 5)", "5"),
    ("malformed CONNACK", "2003000000", False, {}, "malformed CONNACK", "None"),
    (
        "PUBLISH topic overruns",
        "20020000 3003000961",
        False,
        {},
        "malformed PUBLISH: topic longer than the packet",
        "None",
    ),
    (
        "QoS 2 PUBLISH",
        "20020000 340500016100 01",
        False,
        {},
        "PUBLISH with QoS 2 from the broker (QoS 2 is not supported)",
        "None",
    ),
]


@pytest.mark.parametrize(
    ("data", "close", "opts", "reason", "code"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_from_broker(
    fake: FakeBroker,
    run_device: RunDevice,
    data: str,
    close: bool,
    opts: dict[str, int],
    reason: str,
    code: str,
) -> None:
    d = run_device("wait", fake.port, **opts)
    conn = fake.accept()
    conn.read_packet()  # CONNECT
    sent_at = time.monotonic()
    conn.send(bytes.fromhex(data))
    if close:
        conn.sock.close()
    if data.startswith("20020000"):
        assert d.expect("connected") == ["False"]
    _ms, got_code, got_reason = d.error()
    took = time.monotonic() - sent_at
    assert (got_reason, got_code) == (reason, code)
    assert took < 0.3 + opts.get("timeout_ms", 0) / 1000 + 1.0, f"took {took:.2f} s"
    if not close:
        conn.expect_closed()
    d.finish()


# -- string rules: the client refuses what Mosquitto refuses ------------------------------------


def _raw_connect(port: int, client_id: bytes) -> socket.socket | None:
    """A raw MQTT 3.1.1 connection with this client id; None when Mosquitto refused it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    s.sendall(bytes((0x10, len(body))) + body)
    if s.recv(4) != CONNACK_OK:
        s.close()
        return None
    return s


def _broker_answers(s: socket.socket, packet: bytes) -> bool:
    """True when Mosquitto answers the packet (PUBACK, SUBACK), False when it hangs up."""
    s.sendall(packet)
    try:
        return bool(s.recv(5))
    except ConnectionResetError:
        return False
    finally:
        s.close()


def _client_takes(text: bytes, what: str, kind: int) -> bool:
    sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
    import mqtt as fwmqtt  # the firmware client, in this process

    try:
        fwmqtt._text(text, what, kind)
    except fwmqtt.MQTTException:
        return False
    return True


TOPICS = [
    b"ge/dev/AP-0001/up",
    "venue/z\u00fcrich/\u6c34/\U00010151/\ufffd/\u00a0/\U0010fffd".encode(),
    b"a\x00b",
    b"a\x01b",
    b"a\x1fb",
    b"a\x7fb",
    "a\x80b".encode(),
    "a\x9fb".encode(),
    "\ufdd0".encode(),
    "\ufffe".encode(),
    "\U0001ffff".encode(),
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"a\xe2\x82",
    b"\x80",
    b"a/+",
    b"#",
]
FILTERS = [b"#", b"+", b"a/+/b", b"/#", b"+/", b"a/b#", b"a/#/b", b"a+", b"+a/b", b"a/\x00", b"\xff"]
CLIENT_IDS = [b"AP-0001", "z\u00fcrich".encode(), b"a\x01", b"a\x00", b"\xc0\xaf", "\uffff".encode(), b"a\x7f"]


def test_string_rules_match_mosquitto(broker: Mosquitto) -> None:
    port = broker.port
    for topic in TOPICS:
        s = _raw_connect(port, b"probe")
        assert s is not None
        publish = b"\x00" + bytes((len(topic),)) + topic + b"\x00\x01" + b"m"
        broker_ok = _broker_answers(s, bytes((0x32, len(publish))) + publish)
        assert _client_takes(topic, "topic", 1) is broker_ok, (topic, broker_ok)
    for topic_filter in FILTERS:
        s = _raw_connect(port, b"probe")
        assert s is not None
        subscribe = b"\x00\x01" + b"\x00" + bytes((len(topic_filter),)) + topic_filter + b"\x01"
        broker_ok = _broker_answers(s, bytes((0x82, len(subscribe))) + subscribe)
        assert _client_takes(topic_filter, "topic filter", 2) is broker_ok, (topic_filter, broker_ok)
    for client_id in CLIENT_IDS:
        s = _raw_connect(port, client_id)
        broker_ok = s is not None
        if s is not None:
            s.close()
        assert _client_takes(client_id, "client id", 0) is broker_ok, (client_id, broker_ok)
