"""What packaging/ ships: the systemd unit parses cleanly, the local broker config runs in a
real Mosquitto and keeps queued frames while the agent restarts, the example agent config validates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.gateway.config import load_config
from agent.shared.broker_auth import acl_text, new_password, password_file_text, password_hash
from hil_tests.sim.mosquitto import Mosquitto, Packaged
from hil_tests.sim.tools import FIRMWARE_DIR, REPO_ROOT

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
from mqtt import MQTTClient  # firmware module, found through the path above

PACKAGING = REPO_ROOT / "packaging"


def test_systemd_unit_has_no_warnings(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    unit = (PACKAGING / "systemd" / "guardian-agent.service").read_text()
    # the venv does not exist here: point ExecStart/ExecStartPre at a binary that does
    unit = unit.replace("/opt/guardian-edge/.venv/bin/guardian-agent", "/bin/true")
    path = tmp_path / "guardian-agent.service"
    path.write_text(unit)
    proc = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and out == "", out
    for setting in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=guardian-edge"):
        assert setting in unit


def test_broker_reload_units_have_no_warnings(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    for name in ("guardian-broker-reload.path", "guardian-broker-reload.service"):
        shutil.copy(PACKAGING / "systemd" / name, tmp_path / name)
    path = PACKAGING / "systemd" / "guardian-broker-reload.path"
    proc = subprocess.run(
        [analyze, "verify", str(tmp_path / "guardian-broker-reload.path")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and out == "", out
    assert "PathChanged=/etc/mosquitto/guardian/passwd" in path.read_text()


def test_local_broker_config_keeps_the_agents_queue_while_it_restarts(tmp_path: Path) -> None:
    # the shipped lines, with the files `devices import` writes (tests/test_broker_security.py
    # has the attacks); persistence is off as shipped, so this is the agent restarting
    files = Packaged(tmp_path / "passwd", tmp_path / "acl")
    agent_pw, dev_pw = new_password(), new_password()
    files.password_file.write_bytes(
        password_file_text([("GW-agent", password_hash(agent_pw)), ("AP-1", password_hash(dev_pw))])
    )
    files.acl_file.write_bytes(acl_text("GW-agent"))
    broker = Mosquitto(tmp_path, name="local", packaged=files)
    broker.start()
    try:
        agent = MQTTClient("GW-agent", "127.0.0.1", broker.port, user="GW-agent", password=agent_pw)
        agent.connect(clean_session=False)
        agent.subscribe("ge/dev/+/up", 1)
        agent.disconnect()
        dev = MQTTClient("AP-1", "127.0.0.1", broker.port, user="AP-1", password=dev_pw)
        dev.connect()
        for i in range(1500):  # more than mosquitto's default queue of 1000
            dev.publish("ge/dev/AP-1/up", b"%d" % i, qos=1)
        dev.disconnect()
        got: list[bytes] = []
        agent.set_callback(lambda topic, msg: got.append(bytes(msg)))
        agent.connect(clean_session=False)
        while len(got) < 1500 and agent.wait_msg(2000) is not None:
            pass
        agent.disconnect()
        assert got == [b"%d" % i for i in range(1500)]
    finally:
        broker.kill()


def test_example_agent_config_validates(tmp_path: Path) -> None:
    text = (PACKAGING / "config" / "agent.toml").read_text()
    # the TLS files and central's key are made at deployment; the rest is checked as shipped
    text = text.split("[central.tls]")[0] + "[buffer]" + text.split("[buffer]")[1]
    text = text.replace('command_key = "/etc/guardian-edge/central.pub"', "")
    text = text.replace("/var/lib/guardian-edge", str(tmp_path / "state"))
    path = tmp_path / "agent.toml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.gateway_id == "GW-0001" and cfg.metrics == ("127.0.0.1", 9108)
    assert cfg.buffer.max_bytes == 256 * 1024 * 1024 and cfg.buffer.p0_reserve_bytes == 32 * 1024 * 1024


def test_example_notify_section_validates_with_the_example_circle(tmp_path: Path) -> None:
    text = (PACKAGING / "config" / "agent.toml").read_text()
    head, notify = text.split("# [notify]")
    notify = "[notify]" + "\n".join(line.removeprefix("# ") for line in notify.splitlines())
    pager = tmp_path / "page-staff"
    pager.write_text("#!/bin/sh\n")
    pager.chmod(0o755)
    gpio = tmp_path / "gpio17"
    gpio.mkdir()
    (gpio / "value").write_text("0\n")
    notify = (
        notify.replace("/etc/guardian-edge/rosewood-house.toml", str(PACKAGING / "config" / "rosewood-house.toml"))
        .replace("/usr/local/bin/page-staff", str(pager))
        .replace("/sys/class/gpio/gpio17", str(gpio))
    )
    head = head.split("[central.tls]")[0] + "[buffer]" + head.split("[buffer]")[1]
    head = head.replace('command_key = "/etc/guardian-edge/central.pub"', "")
    head = head.replace("/var/lib/guardian-edge", str(tmp_path / "state")).replace("venue-0001", "rosewood-house")
    path = tmp_path / "agent.toml"
    path.write_text(head + notify)
    cfg = load_config(path)
    assert cfg.notify is not None and cfg.notify.fallback_after_s == 20.0
    assert cfg.notify.modem is not None and cfg.notify.sounder is not None and cfg.liveness.margin_s == 10.0
