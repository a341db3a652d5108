"""The enroll server under slow and malformed clients, with real sockets on loopback against the
`guardian-provision enroll-server serve` process: a fixed pool of workers (the process's thread
count does not grow with the connections), an absolute deadline per request (a client trickling
its headers a byte at a time is cut off), connections past the pool's queue or the per-address
limit closed at once, and a Content-Length that is not plain decimal digits refused as
malformed, not a crashed handler. Each case ends with a real enrollment still answered.

Clients come from distinct loopback addresses (127.0.0.0/8 is all local on Linux), so the
per-address limit and the pool's limit are each met on their own.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.sim.tools import wait_until
from tests.provisioning.test_enroll import EnrollServer, enroll, ok

WORKERS = 4
DEADLINE_S = 2


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(DEADLINE_S + 5)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Has the server closed this connection (EOF or reset)? Waits up to the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EnrollServer]:
    central = EnrollServer(tmp_path / "enroll")
    ok(central.cli("allow", "--serial", "SER-OK"))
    central.start("--workers", str(WORKERS), "--deadline", str(DEADLINE_S))
    try:
        yield central
    finally:
        central.stop()


def still_enrolls(tmp_path: Path, server: EnrollServer, name: str) -> None:
    claim = tmp_path / f"{name}.toml"
    server.claim(claim, gateway=name)
    ok(enroll(tmp_path / name, claim, "SER-OK"))


def test_slow_clients_hold_no_thread_past_the_deadline(tmp_path: Path, server: EnrollServer) -> None:
    before = threads(server.pid)
    # 200 connections from 100 addresses that never send a byte (not even a TLS hello)
    socks = [connect(server.port, f"127.0.0.{2 + i % 100}") for i in range(200)]
    try:
        assert threads(server.pid) <= before, "no thread per connection"
        started = time.monotonic()
        results = [closed_by_server(s) for s in socks]
        took = time.monotonic() - started
        assert all(results), f"{results.count(False)} connections left open"
        assert took <= DEADLINE_S + 2.5, f"the last slow connection was closed after {took:.1f}s"
        assert threads(server.pid) <= before
    finally:
        for s in socks:
            s.close()
    log = server.log.read_text()
    assert "reason=deadline" in log and "reason=busy" in log, log[-2000:]
    still_enrolls(tmp_path, server, "GW-A")


def test_a_client_trickling_its_headers_is_cut_off_at_the_deadline(tmp_path: Path, server: EnrollServer) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server.state / "tls.crt")
    raw = connect(server.port, "127.0.0.1")
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    started = time.monotonic()
    cut = None
    try:
        tls.sendall(b"POST /ge/1/enroll HTTP/1.1\r\nHost: x\r\n")
        # one header byte every 0.2 s: each arrives well within any per-read timeout
        for byte in b"X-Slow: " + b"a" * 200:
            tls.sendall(bytes([byte]))
            time.sleep(0.2)
    except (OSError, ssl.SSLError):
        cut = time.monotonic() - started
    finally:
        with contextlib.suppress(OSError):
            tls.close()
    assert cut is not None, "the server kept the trickling client for 40 s"
    assert DEADLINE_S - 0.5 <= cut <= DEADLINE_S + 2.0, f"cut off after {cut:.1f}s"
    still_enrolls(tmp_path, server, "GW-B")


def test_one_address_cannot_take_the_whole_pool(tmp_path: Path, server: EnrollServer) -> None:
    socks = [connect(server.port, "127.0.0.9") for _ in range(20)]
    try:
        # beyond the per-address limit the server closes at once, long before the deadline
        for s in socks:
            s.settimeout(1.0)
        early = sum(1 for s in socks if closed_by_server(s))
        assert early >= 20 - 8, f"only {early} of 20 closed at once"
        still_enrolls(tmp_path, server, "GW-C")  # from 127.0.0.1: served meanwhile
    finally:
        for s in socks:
            s.close()


def request(port: int, ctx: ssl.SSLContext, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str]]:
    with connect(port, "127.0.0.1") as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /ge/1/enroll HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body)
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


@pytest.mark.parametrize(
    ("head", "status", "detail"),
    [
        (b"Content-Length: " + b"5" * 5000 + b"\r\n", 400, "expected 1-12 decimal digits"),
        (b"Content-Length: +12\r\n", 400, "expected 1-12 decimal digits, got '+12'"),
        (b"Content-Length: -1\r\n", 400, "expected 1-12 decimal digits"),
        (b"Content-Length: 1 2\r\n", 400, "expected 1-12 decimal digits"),
        (b"Content-Length: 0x10\r\n", 400, "expected 1-12 decimal digits"),
        (b"Content-Length: \xb2\r\n", 400, "expected 1-12 decimal digits"),  # superscript two: isdigit(), not decimal
        (b"Content-Length: 4\r\nContent-Length: 4\r\n", 400, "exactly one Content-Length"),
        (b"Transfer-Encoding: chunked\r\n", 400, "Transfer-Encoding is not accepted"),
        (b"", 400, "Content-Length required"),
        (b"Content-Length: 999999999999\r\n", 413, "at most 2048"),
    ],
)
def test_content_length_is_strict(server: EnrollServer, head: bytes, status: int, detail: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server.state / "tls.crt")
    got, doc = request(server.port, ctx, head, b"abcd")
    assert got == status and detail in doc.get("detail", ""), (got, doc)
    got, doc = request(server.port, ctx, b"Content-Length: 4\r\n", b"junk")
    assert (got, doc["error"]) == (400, "malformed"), "the server goes on answering"
    wait_until(lambda: "enroll_refused" in server.log.read_text(), 5, "the refusal logged")
    assert "Traceback" not in server.log.read_text()
