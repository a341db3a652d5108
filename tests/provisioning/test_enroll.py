"""Gateway zero-touch enrollment with real processes: `guardian-provision enroll-server` over HTTPS,
`guardian-agent enroll`, the enrolled agent on real Mosquitto brokers, and `guardian-agent verify`
reading the enroll-server's gateways file. Every refusal is one clear line and changes nothing.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hil_tests.sim.gateway import CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import free_port
from tests.provisioning.conftest import assert_user_error, run_tool

AGENT = "guardian-agent"


class EnrollServer:
    """One central: its key, an initialised enroll-server state, and (when started) `serve`."""

    def __init__(self, root: Path, broker: tuple[str, int] = ("127.0.0.1", 1), like: EnrollServer | None = None):
        self.root = root
        root.mkdir(parents=True)
        self.state = root / "state"
        self.port = like.port if like else free_port()
        self.url = f"https://127.0.0.1:{self.port}/ge/1/enroll"
        ok(run_tool("agent", "keygen", "--out", str(root / "central.key"), "--key-id", root.name))
        init = [
            "init",
            "--central-key",
            str(root / "central.key"),
            "--url",
            self.url,
            "--broker",
            f"{broker[0]}:{broker[1]}",
        ]
        if like is not None:  # the same HTTPS identity as another central (one organisation's certificate)
            init += ["--tls-cert", str(like.state / "tls.crt"), "--tls-key", str(like.state / "tls.key")]
        ok(self.cli(*init))
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = root / "serve.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_tool("provisioning", "enroll-server", "--state", str(self.state), *args)

    def claim(self, out: Path, gateway: str = "GW-1", venue: str = "venue-1", ttl: int = 600) -> str:
        proc = ok(self.cli("claim", "--gateway", gateway, "--venue", venue, "--out", str(out), "--ttl", str(ttl)))
        m = re.search(r"claim (C-[0-9a-f]+) ", proc.stdout)
        assert m, proc.stdout
        return m.group(1)

    def start(self) -> None:
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "provisioning", "enroll-server", "--state", str(self.state), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        wait_text(self.log, "ready https://", 10)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def snapshot(self) -> tuple[bytes, bytes]:
        """Everything the enroll-server keeps: claims, allowlist, gateways, and the verifiers' file."""
        return (self.state / "state.json").read_bytes(), (self.state / "gateways.json").read_bytes()


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    return proc


def wait_text(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s:\n{path.read_text(errors='replace')[-2000:]}")


def enroll(gw: Path, claim: Path, serial: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`guardian-agent enroll` for a gateway whose files live under `gw`."""
    args = ["enroll", "--claim", str(claim), "--out", str(gw / "etc" / "agent.toml")]
    return run_tool("agent", *args, "--data-dir", str(gw / "data"), "--serial", serial, *extra)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[EnrollServer]:
    server = EnrollServer(tmp_path / "enroll")
    yield server
    server.stop()


class AgentRun:
    """`guardian-agent run` on an enrolled config, with its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_fresh_gateway_enrolls_runs_verifies_then_is_revoked_and_rotated(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]
) -> None:
    local, central_broker = broker_pair
    central = EnrollServer(tmp_path / "enroll", broker=central_broker.address)
    gw = tmp_path / "gw"
    verifier = CentralVerifier(central_broker.address, [])
    verifier.args += ["--gateway-keys", str(central.state / "gateways.json")]
    agent = AgentRun(gw / "etc" / "agent.toml", tmp_path / "agent.log")
    try:
        ok(central.cli("allow", "--serial", "SER-PI-0001"))
        central.claim(tmp_path / "claim1.toml")
        central.start()
        local_addr = f"{local.address[0]}:{local.address[1]}"
        done = ok(enroll(gw, tmp_path / "claim1.toml", "SER-PI-0001", "--local", local_addr))
        assert "gateway GW-1 enrolled at venue venue-1" in done.stdout
        for name in ("gateway.key", "gateway.key.x25519"):
            assert (gw / "data" / name).stat().st_mode & 0o777 == 0o600
        assert not list((gw / "data").glob("enroll-*")), "pending keys left behind"
        assert (gw / "etc" / "devices.toml").stat().st_mode & 0o777 == 0o600
        ok(run_tool("agent", "check-config", str(gw / "etc" / "agent.toml")))
        # central holds the gateway's public key only; the private key never left the gateway
        key_v1 = (gw / "data" / "gateway.key").read_bytes()
        assert key_v1 not in (central.state / "state.json").read_bytes()

        verifier.start()
        agent.start()
        first = verifier.wait_events(1, 20, device="GW-1", type_name="GATEWAY_HEARTBEAT")
        assert first and first[0]["gateway"] == "GW-1", (verifier.records, agent.log.read_text()[-2000:])
        assert verifier.problems() == []

        # revoked at central: the running verifier reloads the file and rejects the next batch
        ok(central.cli("revoke", "GW-1"))
        agent.stop()
        agent.start()  # every start sends a heartbeat
        assert verifier.wait_for(lambda: any(p["kind"] == "revoked_gateway" for p in verifier.problems()), 20)
        assert len(verifier.events(device="GW-1")) == 1
        agent.stop()

        # rotation: a new claim for the same gateway id; the gateway makes new keys, central replaces its key
        central.claim(tmp_path / "claim2.toml")
        again = ok(enroll(gw, tmp_path / "claim2.toml", "SER-PI-0001", "--local", local_addr))
        assert "keys rotated" in again.stdout
        assert (gw / "data" / "gateway.key").read_bytes() != key_v1
        assert (gw / "etc" / "agent.toml.previous").exists()
        agent.start()
        assert verifier.wait_for(lambda: len(verifier.events(device="GW-1")) >= 2, 20), verifier.records
        assert "gateway GW-1                 enrolled" in ok(central.cli("list")).stdout
        # the one rejected batch (revoked) leaves a gap in the chain; nothing else is wrong
        assert {p["kind"] for p in verifier.problems()} <= {"revoked_gateway", "gap"}, verifier.problems()
    finally:
        agent.stop()
        verifier.stop()
        central.stop()


class _Tamperer(BaseHTTPRequestHandler):
    """A man in the middle holding central's TLS key: forwards the request, flips a config byte."""

    upstream: tuple[str, int, ssl.SSLContext]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        host, port, ctx = self.upstream
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        conn.request("POST", self.path, body, {"Content-Type": self.headers["Content-Type"]})
        resp = conn.getresponse()
        data = bytearray(resp.read())
        conn.close()
        assert resp.status == 200, data
        data[40] ^= 0x01  # inside the signed payload
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(bytes(data))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tamperer(central: EnrollServer) -> Iterator[int]:
    """The man in the middle on its own port; yields the port."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(central.state / "tls.crt")
    handler = type("Tamperer", (_Tamperer,), {"upstream": ("127.0.0.1", central.port, client)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(central.state / "tls.crt", central.state / "tls.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_refusals_are_clear_and_change_nothing(tmp_path: Path, central: EnrollServer, tamperer: int) -> None:
    ok(central.cli("allow", "--serial", "SER-OK"))
    central.start()

    def refused(gw: Path, claim: Path, serial: str, *needles: str) -> None:
        before = central.snapshot()
        proc = enroll(gw, claim, serial)
        assert_user_error(proc, AGENT, *needles)
        assert central.snapshot() == before, "central's state changed"
        assert not gw.exists(), sorted(gw.rglob("*"))

    # the claim file: a secret readable by others, a damaged secret (never echoed)
    claim = tmp_path / "c-mode.toml"
    central.claim(claim)
    claim.chmod(0o644)
    refused(tmp_path / "g0", claim, "SER-OK", "chmod 600")
    claim.chmod(0o600)
    text = claim.read_text()
    bad = re.sub(r'secret = "[0-9a-f]+"', 'secret = "not-the-secret-xyz"', text)
    claim.write_text(bad)
    refused(tmp_path / "g0", claim, "SER-OK", "claim.secret", "not shown")
    assert "not-the-secret-xyz" not in enroll(tmp_path / "g0", claim, "SER-OK").stderr
    claim.write_text(text)

    # a hardware serial not on the allowlist
    refused(tmp_path / "g1", claim, "SER-UNKNOWN", "not_allowed", "SER-UNKNOWN", "HTTP 403")

    # an expired claim
    short = tmp_path / "c-short.toml"
    central.claim(short, ttl=1)
    expires = tomllib.loads(short.read_text())["claim"]["expires"]
    while time.time() < expires:
        time.sleep(0.05)  # the claim's lifetime runs out on the clock: the expiry is the case
    refused(tmp_path / "g2", short, "SER-OK", "expired", "HTTP 410")

    # a claim made by another central (same HTTPS identity and URL, its own signing key)
    other = EnrollServer(tmp_path / "other", like=central)
    foreign = tmp_path / "c-foreign.toml"
    other.claim(foreign)
    refused(tmp_path / "g3", foreign, "SER-OK", "wrong_central", "another central")

    # a reused claim: the first gateway enrolls, a second one with the same claim is refused
    used = tmp_path / "c-used.toml"
    central.claim(used)
    ok(enroll(tmp_path / "g4", used, "SER-OK"))
    refused(tmp_path / "g5", used, "SER-OK", "claim_used", "HTTP 409")

    _altered_config_refused_then_retry_completes(tmp_path, central, tamperer)
    _bad_requests_refused_with_named_reasons(central)


def _altered_config_refused_then_retry_completes(tmp_path: Path, central: EnrollServer, tamperer: int) -> None:
    # a config altered on the way: refused against the pinned key; nothing installed, and the keys
    # made for the claim are kept, so a retry on a clean path completes with the same keys
    mitm = tmp_path / "c-mitm.toml"
    central.claim(mitm, gateway="GW-2")
    good = mitm.read_text()
    mitm.write_text(good.replace(f"127.0.0.1:{central.port}/", f"127.0.0.1:{tamperer}/"))
    gw = tmp_path / "g6"
    proc = enroll(gw, mitm, "SER-OK")
    assert_user_error(proc, AGENT, "bad_signature", "pinned in the claim", "nothing written")
    assert not (gw / "etc").exists() and not (gw / "data" / "gateway.key").exists()
    pending = next((gw / "data").glob("enroll-C-*")) / "gateway.key"
    made = pending.read_bytes()
    mitm.write_text(good)
    ok(enroll(gw, mitm, "SER-OK"))
    assert (gw / "data" / "gateway.key").read_bytes() == made
    assert "answered_again=yes" in central.log.read_text()


def _bad_requests_refused_with_named_reasons(central: EnrollServer) -> None:
    # malformed and oversize requests straight at the server: named reasons
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(central.state / "tls.crt")
    for body, status, reason in ((b"\xd2\x84junk", 400, "malformed"), (b"\0" * 4096, 413, "oversize")):
        conn = http.client.HTTPSConnection("127.0.0.1", central.port, context=ctx, timeout=5)
        conn.request("POST", "/ge/1/enroll", body)
        resp = conn.getresponse()
        assert (resp.status, reason) == (status, reason) and reason in resp.read().decode()
        conn.close()
    assert "Traceback" not in central.log.read_text()
