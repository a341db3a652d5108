"""Attacks from the venue network, against a real Mosquitto running the shipped config
(packaging/mosquitto/guardian-local.conf) with the password and ACL files the agent writes
(agent/gateway/broker_files.py), and the real agent logged in to it.

The attacker is a client on the broker's port: without credentials, or holding one device's
(AP-0002's) password. Devices are the firmware's MQTT client (on CPython) logging in as
themselves (firmware/lib/link.py does the same on the boards).
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.shared.broker_auth import new_password, password_hash
from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto, Packaged, TlsListener
from hil_tests.sim.tools import FIRMWARE_DIR
from tests.agent.test_log import parse

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above
from mqtt import MQTTClient, MQTTException

GW = "GW-1"
AGENT_USER = f"{GW}-agent"
KEYS = {"AP-0001": bytes(range(32)), "AP-0002": bytes(range(50, 82))}
PASSWORDS = {d: new_password() for d in KEYS}


def devices() -> list[Device]:
    return [Device(d, "alarm_post", k, "venue-1", "hall", password_hash(PASSWORDS[d])) for d, k in KEYS.items()]


@dataclass
class Venue:
    local: Mosquitto
    central: Mosquitto
    agent: AgentProcess

    def client(self, client_id: str, user: str | None = None, password: str | None = None) -> MQTTClient:
        c = MQTTClient(client_id, "127.0.0.1", self.local.port, user=user, password=password, keepalive=30)
        c.timeout_ms = 3000
        return c

    def device(self, device: str, client_id: str | None = None) -> MQTTClient:
        return self.client(client_id or device, device, PASSWORDS[device])


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[Venue]:
    files = Packaged(tmp_path / "local" / "passwd", tmp_path / "local" / "acl")
    local = Mosquitto(tmp_path / "local", name="local", packaged=files)
    central = Mosquitto(tmp_path / "central", name="central")
    agent = AgentProcess(tmp_path / "gw", local.address, central.address, devices(), gateway_id=GW, local_broker=local)
    agent.write_broker_files()
    local.start()
    central.start()
    try:
        agent.start()
        yield Venue(local, central, agent)
    finally:
        agent.kill()
        local.kill()
        central.kill()


class Inbox:
    """Messages a client received, by topic."""

    def __init__(self, client: MQTTClient) -> None:
        self.got: list[tuple[str, bytes]] = []
        client.set_callback(lambda topic, msg: self.got.append((bytes(topic).decode(), bytes(msg))))

    def topics(self) -> set[str]:
        return {t for t, _ in self.got}


def pump(clients: list[MQTTClient], until: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in clients:
            c.wait_msg(20)
        if until():
            return True
    return until()


def receipts(key: bytes, got: list[tuple[str, bytes]]) -> list[tuple[int, int, int]]:
    return [fwframe.parse_receipt(key, msg) for _, msg in got]


def alarm(device: str, seq: int, boot: int = 1) -> bytes:
    return fwframe.build(KEYS[device], device, boot, seq, fwframe.T_ALARM, seq, {}, fwframe.FLAG_RECEIPTS)


def refused(c: MQTTClient) -> str:
    with pytest.raises(MQTTException) as exc:
        c.connect()
    return str(exc.value)


def test_anonymous_wrong_and_foreign_logins_are_refused(venue: Venue) -> None:
    assert "not authorized" in refused(venue.client("anyone"))
    assert "not authorized" in refused(venue.client("AP-0001", "AP-0001", PASSWORDS["AP-0002"]))
    assert "not authorized" in refused(venue.client("x", "AP-9999", PASSWORDS["AP-0001"]))
    assert "not authorized" in refused(venue.client(AGENT_USER, AGENT_USER, PASSWORDS["AP-0001"]))
    # the password file holds hashes only, and no password appears in the agent's log
    text = venue.local.packaged.password_file.read_text() if venue.local.packaged else ""
    assert all(pw not in text for pw in PASSWORDS.values()) and venue.agent.local_password not in text
    assert "$7$101$" in text
    c = venue.device("AP-0001")
    c.connect()
    c.disconnect()
    log = venue.agent.log_text()
    assert venue.agent.local_password not in log and all(pw not in log for pw in PASSWORDS.values())


def test_a_device_cannot_publish_as_another_nor_read_its_traffic(venue: Venue) -> None:
    a, b = venue.device("AP-0001"), venue.device("AP-0002")
    a_in, b_in = Inbox(a), Inbox(b)
    for c in (a, b):
        c.connect()
    a.subscribe("ge/dev/AP-0001/down", 1)
    b.subscribe("ge/dev/AP-0002/down", 1)
    # the attacker holds AP-0002's password: it listens to everything it can name ...
    for flt in ("#", "ge/dev/+/up", "ge/dev/AP-0001/down", "ge/dev/AP-0001/status", "$SYS/#"):
        b.subscribe(flt, 1)
    # ... and publishes AP-0001's frame under AP-0001's topic (a forgery needs no key: it is
    # a copy of AP-0001's last frame) and junk under invented ids
    a.publish("ge/dev/AP-0001/up", alarm("AP-0001", 1), qos=1)
    assert pump([a, b], lambda: [r[2] for r in receipts(KEYS["AP-0001"], a_in.got)] == [1, 2])
    b.publish("ge/dev/AP-0001/up", alarm("AP-0001", 2), qos=1)
    b.publish("ge/dev/AP-0003/up", b"junk", qos=1)
    b.publish("ge/dev/AP-0001/down", b"fake receipt", qos=1)
    b.publish("ge/dev/AP-0002/up", alarm("AP-0002", 1), qos=1)  # its own: allowed
    assert pump([a, b], lambda: len(receipts(KEYS["AP-0002"], [m for m in b_in.got if "AP-0002/down" in m[0]])) >= 2)
    time.sleep(0.3)  # anything else in flight arrives meanwhile; nothing may
    for c in (a, b):
        c.wait_msg(50)
    # AP-0002 saw only its own downlink; AP-0001 saw only its own receipts
    assert b_in.topics() == {"ge/dev/AP-0002/down"}, b_in.got
    assert a_in.topics() == {"ge/dev/AP-0001/down"} and all(m != b"fake receipt" for _, m in a_in.got)
    assert [r[1] for r in receipts(KEYS["AP-0001"], a_in.got)] == [1, 1]
    a.disconnect()
    b.disconnect()
    stats = stopped(venue)
    # the frames AP-0002 put on other topics never reached the agent
    assert stats["accepted"] == "2" and stats["rejected"] == "{}", stats


def test_every_device_hears_the_gateways_online_and_none_can_say_it(venue: Venue) -> None:
    # ge/gateway/status (docs/protocol.md §5) makes devices resend what has no receipt 1: any
    # device may read it, only the agent may write it
    a, b = venue.device("AP-0001"), venue.device("AP-0002")
    a_in = Inbox(a)
    for c in (a, b):
        c.connect()
    assert a.subscribe("ge/gateway/status", 1) == 1
    b.publish("ge/gateway/status", b"online", qos=1)  # AP-0002's password: dropped by the broker
    assert not pump([a, b], lambda: bool(a_in.got), timeout=1.0)
    venue.agent.stop()
    venue.agent.start()  # subscribed again: it says so
    assert pump([a, b], lambda: bool(a_in.got)), "the agent's online did not reach the device"
    assert a_in.got == [("ge/gateway/status", b"online")]
    a.disconnect()
    b.disconnect()


def stopped(venue: Venue) -> dict[str, str]:
    venue.agent.stop()
    return venue.agent.stats()


@pytest.mark.parametrize("attacker", ["anonymous", "device credentials"])
def test_the_agents_client_id_cannot_be_taken(venue: Venue, attacker: str) -> None:
    a = venue.device("AP-0001")
    a_in = Inbox(a)
    a.connect()
    a.subscribe("ge/dev/AP-0001/down", 1)
    for round_ in range(20):
        thief = venue.client(AGENT_USER) if attacker == "anonymous" else venue.device("AP-0002", AGENT_USER)
        if attacker == "anonymous":
            assert "not authorized" in refused(thief)
        else:
            thief.connect()  # as AP-0002: the broker replaced the client id by the user name
            thief.disconnect()
        a.publish("ge/dev/AP-0001/up", alarm("AP-0001", round_ + 1), qos=1)
    assert pump([a], lambda: sum(r[2] == 2 for r in receipts(KEYS["AP-0001"], a_in.got)) == 20, 15)
    a.disconnect()
    assert "local_broker_down" not in venue.agent.log_text()
    stats = stopped(venue)
    assert stats["local_disconnects"] == "0" and stats["accepted"] == "20", stats


def test_queues_and_packet_size_are_bounded(venue: Venue) -> None:
    venue.agent.stop()  # its persistent session now queues what devices publish
    b = venue.device("AP-0002")
    b.connect()
    sock = b.sock
    n = 30_000  # three times max_queued_messages
    frame_ = alarm("AP-0002", 1)
    pkt = publish_packet(b"ge/dev/AP-0002/up", frame_)
    for _ in range(n // 1000):
        sock.sendall(pkt * 1000)
    # the broker answers every PUBACK (the overflow is dropped, not refused): read them all
    assert read_pubacks(sock, n, 20)
    b.disconnect()
    rss_kb = rss(venue.local)
    assert rss_kb < 64 * 1024, f"broker at {rss_kb} KiB"
    # a packet over max_packet_size: the client is disconnected
    c = venue.device("AP-0002")
    c.connect()
    c.publish("ge/dev/AP-0002/up", b"x" * 5000, qos=0)
    with pytest.raises(MQTTException, match=r"closed by the broker|reset"):
        c.wait_msg(5000)
    venue.agent.start()
    # the queue is delivered first; a new frame after it marks its end
    marker(venue, 1)
    stats = stopped(venue)
    got = int(stats["accepted"]) + sum(int(v) for v in re.findall(r"'[a-z_]+':(\d+)", stats["rejected"]))
    # at most the queue's bound plus what was in flight when the agent left; all one frame
    assert 1 + 1 <= got <= 1 + 10_000 + 4096, stats
    assert stats["accepted"] == "2", stats


def marker(venue: Venue, seq: int) -> None:
    """AP-0001 sends an alarm and waits for receipt 1: the agent has handled what came before."""
    a = venue.device("AP-0001")
    inbox = Inbox(a)
    a.connect()
    a.subscribe("ge/dev/AP-0001/down", 1)
    a.publish("ge/dev/AP-0001/up", alarm("AP-0001", seq), qos=1)
    assert pump([a], lambda: (1, seq, 1) in receipts(KEYS["AP-0001"], inbox.got), 30)
    a.disconnect()


def publish_packet(topic: bytes, payload: bytes) -> bytes:
    """An MQTT 3.1.1 QoS 1 PUBLISH with packet id 1 (reused: the broker acknowledges each)."""
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x01" + payload
    n = len(body)
    head = bytes((n,)) if n < 128 else bytes((n & 0x7F | 0x80, n >> 7))
    return b"\x32" + head + body


def read_pubacks(sock: socket.socket, n: int, timeout: float) -> bool:
    sock.settimeout(timeout)
    got = 0
    while got < 4 * n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return False
        got += len(chunk)
    return True


def rss(broker: Mosquitto) -> int:
    assert broker.pid is not None
    status = Path(f"/proc/{broker.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_retained_messages_only_on_own_topics(venue: Venue) -> None:
    b = venue.device("AP-0002")
    b.connect()
    # retained on its own up topic: taken once, not handed over again at the agent's next subscription
    b.publish("ge/dev/AP-0002/up", alarm("AP-0002", 1), retain=True, qos=1)
    b.publish("ge/dev/AP-0002/status", b"online", retain=True, qos=1)
    b.publish("ge/dev/AP-0001/status", b"offline", retain=True, qos=1)  # denied
    b.publish("ge/dev/AP-9999/status", b"junk", retain=True, qos=1)  # denied
    for i in range(200):
        b.publish(f"venue/junk/{i}", b"x" * 1000, retain=True, qos=1)  # denied
    b.disconnect()
    marker(venue, 1)  # the agent took the retained frame (and acknowledged it) before it stops
    venue.agent.stop()
    venue.agent.start()
    marker(venue, 2)
    stats = stopped(venue)
    assert stats["accepted"] == "1" and stats["rejected"] == "{}", stats
    # what a newcomer with every read right (the agent's login) finds retained
    watcher = venue.client(AGENT_USER, AGENT_USER, venue.agent.local_password)
    inbox = Inbox(watcher)
    watcher.connect()
    watcher.subscribe("ge/dev/+/status", 1)
    pump([watcher], lambda: False, 1.0)
    watcher.disconnect()
    assert inbox.got == [("ge/dev/AP-0002/status", b"online")]


def test_replay_flood_gives_bounded_receipts_and_log_lines(venue: Venue) -> None:
    b = venue.device("AP-0002")
    inbox = Inbox(b)
    b.connect()
    b.subscribe("ge/dev/AP-0002/down", 1)
    captured = alarm("AP-0002", 1)
    b.publish("ge/dev/AP-0002/up", captured, qos=1)
    assert pump([b], lambda: [r[2] for r in receipts(KEYS["AP-0002"], inbox.got)] == [1, 2])
    log_before = len(venue.agent.log_text())
    # 5,000 replays of the captured frame, and junk with forged log fields, on its own topic
    sock = b.sock
    forged_kid = fwframe.build(KEYS["AP-0002"], 'x reason=ok\n<0>agent_started "', 1, 2, 1, 0, {}, 1)
    flood = [captured] * 5000 + [b"\xd1\x84 reason=ok device=AP-0001\n"] * 500 + [forged_kid] * 500
    sock.sendall(b"".join(publish_packet(b"ge/dev/AP-0002/up", f) for f in flood))
    marker(venue, 1)
    pump([b], lambda: False, 0.5)
    b.disconnect()
    got = receipts(KEYS["AP-0002"], inbox.got)
    assert len(got) <= 2 + 64 + 2 * 10, "the burst, and 2 a second after it"
    assert all(r == (1, 1, 2) for r in got[2:]), "each says: delivered"
    lines = [ln for ln in venue.agent.log_text()[log_before:].splitlines() if " frame_rejected " in ln]
    assert 1 <= len(lines) <= 3, lines  # one per reason: replay, malformed, unknown_device
    for line in lines:
        fields = parse("frame_rejected " + line.split(" frame_rejected ", 1)[1])
        assert set(fields) == {"source", "device", "reason", "detail", "suppressed_since_last"}, line
        assert fields["device"] == "AP-0002" and fields["reason"] in ("replay", "malformed", "unknown_device")
    assert len(venue.agent.log_text()) - log_before < 4096
    stats = stopped(venue)
    assert stats["rejected"] == "{'replay':5000,'malformed':500,'unknown_device':500}", stats


def test_far_behind_genuine_frame_is_accepted_once_across_restarts(venue: Venue) -> None:
    a = venue.device("AP-0001")
    inbox = Inbox(a)
    a.connect()
    a.subscribe("ge/dev/AP-0001/down", 1)
    late = alarm("AP-0001", 2)  # lost on the way; the device keeps it in its outbox
    for seq in [1, *range(3, 201)]:
        a.publish("ge/dev/AP-0001/up", alarm("AP-0001", seq), qos=1)
        a.wait_msg(0)
    assert pump([a], lambda: (1, 200, 2) in receipts(KEYS["AP-0001"], inbox.got), 30)
    venue.agent.stop()
    venue.agent.start()  # the replay record comes back from the buffer
    inbox.got.clear()
    a.publish("ge/dev/AP-0001/up", late, qos=1)
    assert pump([a], lambda: (1, 2, 2) in receipts(KEYS["AP-0001"], inbox.got), 15), "accepted and delivered"
    venue.agent.stop()
    venue.agent.start()
    for _ in range(3):
        a.publish("ge/dev/AP-0001/up", late, qos=1)  # resent or replayed: never stored again
        a.publish("ge/dev/AP-0001/up", alarm("AP-0001", 150), qos=1)
    marker_seq = 201
    a.publish("ge/dev/AP-0001/up", alarm("AP-0001", marker_seq), qos=1)
    assert pump([a], lambda: (1, marker_seq, 1) in receipts(KEYS["AP-0001"], inbox.got), 15)
    a.disconnect()
    stats = stopped(venue)
    assert stats["accepted"] == "1" and stats["rejected"] == "{'replay':6}", stats


def _self_signed(d: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

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
    d.mkdir(parents=True, exist_ok=True)
    (d / "broker.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "broker.key").touch(mode=0o600)
    (d / "broker.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d / "broker.pem", d / "broker.key"


def test_agent_and_device_over_tls_from_local_config(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path / "pki")
    files = Packaged(tmp_path / "local" / "passwd", tmp_path / "local" / "acl")
    local = Mosquitto(
        tmp_path / "local", name="local", packaged=files, tls=TlsListener(cert, cert, key, require_certificate=False)
    )
    central = Mosquitto(tmp_path / "central", name="central")
    assert local.tls_port is not None
    agent = AgentProcess(
        tmp_path / "gw", ("127.0.0.1", local.tls_port), central.address, devices(), gateway_id=GW, local_broker=local
    )
    # [local.tls]: only this CA is trusted, the host name (here the IP address) is checked
    text = agent.config_file.read_text().replace(
        "[local.mosquitto]", f'[local.tls]\nca_file = "{cert}"\n[local.mosquitto]'
    )
    agent.config_file.write_text(text)
    agent.write_broker_files()
    local.start()
    central.start()
    try:
        agent.start()
        ctx = ssl.create_default_context(cafile=str(cert))
        a = MQTTClient("AP-0001", "127.0.0.1", local.tls_port, user="AP-0001", password=PASSWORDS["AP-0001"], ssl=ctx)
        inbox = Inbox(a)
        a.connect()
        a.subscribe("ge/dev/AP-0001/down", 1)
        a.publish("ge/dev/AP-0001/up", alarm("AP-0001", 1), qos=1)
        assert pump([a], lambda: (1, 1, 2) in receipts(KEYS["AP-0001"], inbox.got), 15)
        a.disconnect()
        assert f"local_broker_up host=127.0.0.1 port={local.tls_port}" in agent.log_text()
    finally:
        agent.kill()
        local.kill()
        central.kill()
