"""TLS on the uplink against a real Mosquitto with a TLS listener, and the [central.tls] config checks.

The PKI is made here with `cryptography`: a CA the gateway pins, another CA, server
certificates (for 127.0.0.1, for another host name, from the other CA) and a client
certificate the broker requires.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.central.keys import generate_central_key
from agent.gateway.config import load_config
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, write_registry
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto, TlsListener
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

KEY = bytes(range(32))
DEVICES = [Device("AP-0001", "alarm_post", KEY, "venue-1", "hall")]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    san: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signer = issuer[1] if issuer else key
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if issuer is None:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(signer, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server: tuple[Path, Path]  # for 127.0.0.1 and localhost, from ca
    wrong_host: tuple[Path, Path]  # for central.example only, from ca
    foreign: tuple[Path, Path]  # for 127.0.0.1, from other_ca
    client: tuple[Path, Path]  # the gateway's client certificate, from ca


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Guardian test CA", ca_key, None)
    other = _cert("Some other CA", other_key, None)
    local = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server_auth, client_auth = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH

    def leaf(
        name: str,
        cn: str,
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        san: list[x509.GeneralName] | None = None,
        usage: x509.ObjectIdentifier | None = None,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        path = _write(d / f"{name}.pem", _cert(cn, key, issuer, san, usage), key)
        return path, path.with_suffix(".key")

    return Pki(
        ca=_write(d / "ca.pem", ca),
        other_ca=_write(d / "other-ca.pem", other),
        server=leaf("server", "central", (ca, ca_key), san=local, usage=server_auth),
        wrong_host=leaf("wrong-host", "central.example", (ca, ca_key), san=[x509.DNSName("central.example")]),
        foreign=leaf("foreign", "central", (other, other_key), san=local, usage=server_auth),
        client=leaf("client", "GW-1", (ca, ca_key), usage=client_auth),
    )


@pytest.fixture
def central_tls(tmp_path: Path, pki: Pki, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    cert, key = getattr(pki, request.param)
    broker = Mosquitto(tmp_path / "central", name="central", tls=TlsListener(pki.ca, cert, key))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def _tls_options(pki: Pki, client_cert: bool = True) -> str:
    lines = ["[central.tls]", f'ca_file = "{pki.ca}"']
    if client_cert:
        lines += [f'cert_file = "{pki.client[0]}"', f'key_file = "{pki.client[1]}"']
    return "\n".join(lines)


def _agent(tmp_path: Path, local: Mosquitto, central: Mosquitto, options: str) -> AgentProcess:
    assert central.tls_port is not None
    return AgentProcess(
        tmp_path / "gw", local.address, ("127.0.0.1", central.tls_port), DEVICES, central_options=options
    )


def _wait_text(path: Path, needle: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no {needle!r} after {timeout}s")
        time.sleep(0.05)  # polling a log file written by another process


@pytest.mark.parametrize("central_tls", ["server"], indirect=True)
def test_pinned_ca_and_client_certificate_carry_batches_and_commands(
    tmp_path: Path, broker: Mosquitto, central_tls: Mosquitto, pki: Pki
) -> None:
    central_key = tmp_path / "central.key"
    generate_central_key(central_key, "central")
    options = f'command_key = "{central_key}.pub"\n' + _tls_options(pki)
    agent = _agent(tmp_path, broker, central_tls, options)
    verifier = CentralVerifier(central_tls.address, [agent.public_key_file])  # plain listener
    verifier.start()
    try:
        agent.start()
        agent.wait_log("uplink_up")
        agent.wait_log("status_online")

        async def press() -> None:
            async with aiomqtt.Client(*broker.address, identifier="tls-test-device") as c:
                await c.publish("ge/dev/AP-0001/up", fwframe.build(KEY, "AP-0001", 1, 1, 1, 0, {}, 0), qos=1)

        # a dispatcher's verifier over TLS, started after the gateway's first batch: it joins
        # the chain (no false gap) and prints readable lines
        assert central_tls.tls_port is not None
        readable = subprocess.Popen(
            [
                *(sys.executable, "-m", "agent", "verify", "--broker", f"127.0.0.1:{central_tls.tls_port}"),
                *("--gateway-key", str(agent.public_key_file), "--devices", str(agent.devices_file)),
                *("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client[0]), "--tls-key", str(pki.client[1])),
                *("--client-id", "dispatcher", "--count", "1", "--timeout", "30", "--timezone", "Asia/Shanghai"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert readable.stderr is not None
            assert readable.stderr.readline().strip() == "ready"
            asyncio.run(press())
            out, err = readable.communicate(timeout=30)
        finally:
            readable.kill()
        assert readable.returncode == 0, (out, err)
        lines = out.splitlines()
        assert lines[0].startswith("-- joined the gateway's chain"), lines
        alarm = [line for line in lines if " ALARM " in line]
        assert len(alarm) == 1 and "CST" in alarm[0] and "venue-1 / hall" in alarm[0] and "AP-0001/1/1" in alarm[0]
        assert not any(line.startswith("!!") for line in lines), lines
        assert len(verifier.wait_events(1, 15, device="AP-0001")) == 1
        # the command tool over TLS too, with the same CA and a client certificate
        assert central_tls.tls_port is not None
        cmd = [sys.executable, "-m", "agent", "command", "--broker", f"127.0.0.1:{central_tls.tls_port}"]
        cmd += ["--central-key", str(central_key), "--gateway", "GW-1", "--venue", "venue-1"]
        cmd += ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client[0]), "--tls-key", str(pki.client[1])]
        out = subprocess.run(
            [*cmd, "config", "--set", "batch.linger_ms=30"], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr
        agent.wait_log("command_accepted op=config")
        assert "uplink_down" not in agent.log_text(since_start=True)
    finally:
        verifier.stop()
        agent.kill()


@pytest.mark.parametrize("central_tls", ["foreign"], indirect=True)
def test_server_certificate_from_another_ca_is_refused_and_logged(
    tmp_path: Path, broker: Mosquitto, central_tls: Mosquitto, pki: Pki
) -> None:
    agent = _agent(tmp_path, broker, central_tls, _tls_options(pki))
    try:
        agent.start()
        agent.wait_log("certificate verify failed")
        log = agent.log_text(since_start=True)
        assert "uplink_down" in log and "uplink_up" not in log, log
    finally:
        agent.kill()


@pytest.mark.parametrize("central_tls", ["wrong_host"], indirect=True)
def test_server_certificate_for_another_host_is_refused(
    tmp_path: Path, broker: Mosquitto, central_tls: Mosquitto, pki: Pki
) -> None:
    agent = _agent(tmp_path, broker, central_tls, _tls_options(pki))
    try:
        agent.start()
        agent.wait_log("IP address mismatch")
        assert "uplink_up" not in agent.log_text(since_start=True)
    finally:
        agent.kill()


@pytest.mark.parametrize("central_tls", ["server"], indirect=True)
def test_without_a_client_certificate_the_broker_refuses(
    tmp_path: Path, broker: Mosquitto, central_tls: Mosquitto, pki: Pki
) -> None:
    agent = _agent(tmp_path, broker, central_tls, _tls_options(pki, client_cert=False))
    try:
        agent.start()
        agent.wait_log("uplink_down")
        _wait_text(central_tls.log_path, "peer did not return a certificate")
        assert "uplink_up" not in agent.log_text(since_start=True)
    finally:
        agent.kill()


# --- config validation -----------------------------------------------------------------------

BASE = """
[gateway]
id = "GW-1"
venue = "v1"
data_dir = "data"
devices_file = "devices.toml"
[local]
host = "127.0.0.1"
[central]
host = "127.0.0.1"
port = 8883
"""


def _config(tmp_path: Path, extra: str) -> Path:
    write_registry(tmp_path / "devices.toml", DEVICES)
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra)
    return path


def test_good_tls_config(tmp_path: Path, pki: Pki) -> None:
    cfg = load_config(_config(tmp_path, _tls_options(pki)))
    assert cfg.central.tls is not None and cfg.central.tls.ca_file == pki.ca
    assert cfg.central.tls.key_file == pki.client[1] and cfg.local.tls is None
    assert cfg.status_topic == "venues/v1/gateways/GW-1/status"
    assert cfg.command_topic == "venues/v1/gateways/GW-1/commands"


def test_tls_and_command_key_errors_name_file_key_and_expectation(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    open_key = tmp_path / "open.key"
    open_key.write_bytes(pki.client[1].read_bytes())
    os.chmod(open_key, 0o644)
    ca, (cert, key) = pki.ca, pki.client
    cases = [
        ("[central.tls]\n", "central.tls.ca_file: missing (required)"),
        ('[central.tls]\nca_file = "nope.pem"\n', "central.tls.ca_file: expected a PEM file,"),
        (f'[central.tls]\nca_file = "{garbage}"\n', "central.tls.ca_file: expected a PEM CA certificate in"),
        (f'[central.tls]\nca_file = "{ca}"\ncert_file = "{cert}"\n', "central.tls.key_file: missing: cert_file and"),
        (f'[central.tls]\nca_file = "{ca}"\nkey_file = "{key}"\n', "central.tls.cert_file: missing: cert_file and"),
        (
            f'[central.tls]\nca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{open_key}"\n',
            "central.tls.key_file: " + f"{open_key}: mode 0644 lets other users read the TLS client key",
        ),
        (
            f'[central.tls]\nca_file = "{ca}"\ncert_file = "{pki.server[0]}"\nkey_file = "{key}"\n',
            "central.tls.cert_file: expected a PEM certificate in",
        ),
        (f'[central.tls]\nca_file = "{ca}"\nverify = false\n', "central.tls.verify: unknown key"),
        ('command_key = "nope.pub"\n', "central.command_key: expected central's public key file"),
        (f'command_key = "{garbage}"\n', "no 'Key-Id: <id>' line"),
    ]
    for extra, message in cases:
        path = _config(tmp_path, extra)
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        assert str(exc.value).startswith(f"{path}: "), str(exc.value)
        assert message in str(exc.value), (message, str(exc.value))
