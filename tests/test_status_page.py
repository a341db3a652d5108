"""The status page without a browser: `guardian-agent status` and `status-token` against a real
agent, the page's token and limits, and the [status_page] config checks."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.gateway.config import load_config
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, write_registry
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR, free_port, wait_until

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above
from mqtt import MQTTClient

KEY = bytes(range(32))
DEVICES = [Device("AP-0001", "alarm_post", KEY, "venue-1", "hall")]


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60, check=False
    )


class Gateway:
    """The agent with its page on, its token made by `guardian-agent status-token`."""

    def __init__(self, workdir: Path, local: Mosquitto, central: Mosquitto, max_live: int = 2) -> None:
        self.port = free_port()
        self.agent = AgentProcess(workdir / "gw", local.address, central.address, DEVICES)
        self.config = self.agent.config_file
        made = agent_cli("status-token", "--config", str(self.config))
        assert made.returncode == 0, made.stderr
        self.token_file = self.config.parent / "status.token"
        self.hash_line = made.stdout.splitlines()[-1]
        assert self.hash_line.startswith('token_sha256 = "')
        with self.config.open("a") as f:
            f.write(f'[status_page]\nlisten = "127.0.0.1:{self.port}"\n{self.hash_line}\nmax_live = {max_live}\n')

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def open(self, path: str, token: str | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        return conn, conn.getresponse()

    def request(self, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        conn, resp = self.open(path, token)
        try:
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()


@pytest.fixture
def gateway(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, *broker_pair)
    gw.agent.start()
    gw.agent.wait_log("status_page_listening")
    gw.agent.wait_log("uplink_up")
    try:
        yield gw
    finally:
        gw.agent.kill()


def test_status_token_is_private_printed_once_as_a_hash_and_never_replaced_by_accident(gateway: Gateway) -> None:
    assert os.stat(gateway.token_file).st_mode & 0o777 == 0o600
    assert gateway.token not in gateway.hash_line
    again = agent_cli("status-token", "--config", str(gateway.config))
    assert again.returncode == 1 and "--rotate replaces it" in again.stderr
    assert gateway.token not in gateway.agent.log_text()


def test_status_prints_what_the_page_shows(gateway: Gateway, broker_pair: tuple[Mosquitto, Mosquitto]) -> None:
    local, _ = broker_pair
    device = MQTTClient("AP-0001", *local.address)
    device.connect()
    device.publish("ge/dev/AP-0001/up", fwframe.build(KEY, "AP-0001", 1, 1, 1, 0, {}, 1), qos=1)
    device.publish("ge/dev/AP-0001/up", b"\x00garbage", qos=1)
    device.disconnect()
    gateway.agent.wait_log("alarm device=AP-0001 zone=hall type=ALARM ref=AP-0001/1/1")

    def shown() -> subprocess.CompletedProcess[str] | None:
        out = agent_cli("status", "--config", str(gateway.config))
        return out if "malformed" in out.stdout and "receipts 1 2 -" in out.stdout else None

    out = wait_until(shown, 10, "guardian-agent status to show the alarm and the reject")
    assert out.returncode == 0, out.stdout + out.stderr
    for text in ("GW-1 at venue-1", "all well", "central", "connected", "buffer P0", "AP-0001/1/1", "hall", "ALARM P0"):
        assert text in out.stdout, (text, out.stdout)
    as_json = json.loads(agent_cli("status", "--config", str(gateway.config), "--json").stdout)
    assert as_json["counters"]["frames_accepted"] == 1
    assert [(r["source"], r["reason"], r["total"]) for r in as_json["rejects"]] == [("frames", "malformed", 1)]


def test_status_exits_2_and_says_why_when_central_is_down(
    gateway: Gateway, broker_pair: tuple[Mosquitto, Mosquitto]
) -> None:
    _, central = broker_pair
    central.kill()
    gateway.agent.wait_log("uplink_down")

    def down() -> subprocess.CompletedProcess[str] | None:
        out = agent_cli("status", "--config", str(gateway.config))
        return out if out.returncode == 2 else None

    out = wait_until(down, 10, "guardian-agent status to report central down")
    assert "NEEDS ATTENTION" in out.stdout and "central is unreachable" in out.stdout


def test_status_errors_name_the_file_and_what_to_do(gateway: Gateway, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    out = agent_cli("status", "--config", str(gateway.config), "--token-file", str(wrong))
    assert out.returncode == 1 and "is not the one the agent has" in out.stderr and "Traceback" not in out.stderr
    out = agent_cli("status", "--config", str(gateway.config), "--token-file", str(tmp_path / "none"))
    assert out.returncode == 1 and "guardian-agent status-token --config" in out.stderr
    plain = tmp_path / "plain.toml"
    plain.write_text(gateway.config.read_text().split("[status_page]")[0])
    out = agent_cli("status", "--config", str(plain))
    assert out.returncode == 1 and "the status page is off" in out.stderr
    gateway.agent.kill()
    out = agent_cli("status", "--config", str(gateway.config))
    assert out.returncode == 1 and "no answer" in out.stderr and "is the agent running" in out.stderr


def test_the_page_needs_the_token_and_bounds_its_live_clients(gateway: Gateway) -> None:
    assert gateway.request("/api/status")[0] == 401
    assert gateway.request("/api/status", "wrong")[0] == 401
    status, headers, body = gateway.request("/api/status", gateway.token)
    assert status == 200 and json.loads(body)["gateway"]["id"] == "GW-1"
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert gateway.request("/")[2].decode().count('name="token"') == 1, "the login form"
    streams = [gateway.open("/api/live", gateway.token) for _ in range(2)]
    try:
        assert [resp.status for _, resp in streams] == [200, 200]
        assert streams[0][1].readline().startswith(b"data: {")
        assert gateway.request("/api/live", gateway.token)[0] == 503, "max_live = 2"
    finally:
        for conn, _ in streams:
            conn.close()
    assert gateway.request("/static/..%2Fagent.toml")[0] == 404
    assert gateway.token not in gateway.agent.log_text()


def _config(tmp_path: Path, page: str) -> Path:
    write_registry(tmp_path / "devices.toml", DEVICES)
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[gateway]\nid = "GW-1"\nvenue = "v"\ndata_dir = "{tmp_path}"\ndevices_file = "devices.toml"\n'
        f'[local]\nhost = "127.0.0.1"\n[central]\nhost = "127.0.0.1"\n[status_page]\n{page}\n'
    )
    return path


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (
            f'listen = "0.0.0.0:8080"\ntoken_sha256 = "{"a" * 64}"',
            "status_page.listen: 0.0.0.0 listens on every interface",
        ),
        (
            f'listen = "gateway.local:8080"\ntoken_sha256 = "{"a" * 64}"',
            "status_page.listen: expected the gateway's venue LAN IP",
        ),
        (
            'listen = "192.168.1.10:8080"\ntoken_sha256 = "secret"',
            "status_page.token_sha256: expected 64 lowercase hex digits",
        ),
        (
            f'listen = "192.168.1.10:8080"\ntoken_sha256 = "{"a" * 64}"\ntls_cert = "c.pem"',
            "status_page.tls_key: tls_cert and tls_key go together",
        ),
        (f'listen = "192.168.1.10:8080"\ntoken_sha256 = "{"a" * 64}"\ntoken = "x"', "status_page.token: unknown key"),
        ('listen = "192.168.1.10:8080"', "status_page.token_sha256: missing"),
    ],
)
def test_status_page_config_errors_name_the_key(tmp_path: Path, page: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, page))


def test_status_page_config_accepts_a_lan_address(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, f'listen = "192.168.1.10:8080"\ntoken_sha256 = "{"ab" * 32}"'))
    assert cfg.status_page is not None and cfg.status_page.listen == ("192.168.1.10", 8080)
    assert "ab" * 32 not in repr(cfg), "the hash stays out of reprs (and so of tracebacks)"
