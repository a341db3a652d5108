"""[notify] and [liveness] in agent.toml: a good section loads, a bad one names the file and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cli import main
from agent.gateway.config import load_config
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, write_registry

BASE = """
[gateway]
id = "GW-1"
venue = "rosewood"
data_dir = "data"
devices_file = "devices.toml"
[local]
host = "127.0.0.1"
[central]
host = "central.example"
"""

CIRCLE = """\
venue = "rosewood"
name = "Rosewood House"
[[contacts]]
id = "li"
name = "Li Wei"
channels = ["json://127.0.0.1:9/li"]
[[staff]]
id = "desk"
name = "Night desk"
channels = ["json://127.0.0.1:9/desk"]
[[residents]]
band = "WB-0001"
reference = "Room 4"
circle = ["li"]
"""


def _setup(tmp_path: Path, notify: str, circle: str = CIRCLE) -> Path:
    write_registry(tmp_path / "devices.toml", [Device("AP-1", "alarm_post", bytes(32), "rosewood", "hall")])
    (tmp_path / "circle.toml").write_text(circle)
    pager = tmp_path / "page-staff"
    pager.write_text("#!/bin/sh\nexit 0\n")
    pager.chmod(0o755)
    gpio = tmp_path / "gpio17"
    gpio.mkdir(exist_ok=True)
    (gpio / "value").write_text("0\n")
    path = tmp_path / "agent.toml"
    path.write_text(BASE + notify)
    return path


GOOD = """
[notify]
circle = "circle.toml"
fallback_after_s = 15
ack_listen = "0.0.0.0:8181"
ack_base_url = "http://192.168.1.10:8181"
[notify.sounder]
command = ["{pager}", "--alert", "{{type}} {{place}}"]
gpio = "gpio17"
sound_s = 60
[liveness]
margin_s = 5
"""


def test_a_good_notify_section_loads(tmp_path: Path) -> None:
    cfg = load_config(_setup(tmp_path, GOOD.format(pager=tmp_path / "page-staff")))
    n = cfg.notify
    assert n is not None
    assert n.circle == tmp_path / "circle.toml" and n.fallback_after_s == 15.0
    assert n.ledger == tmp_path / "data" / "notify-ledger.db", "the ledger defaults into data_dir"
    assert n.ack_listen == ("0.0.0.0", 8181) and n.ack_base_url == "http://192.168.1.10:8181"
    assert n.modem is None and n.sounder is not None
    assert n.sounder.command == (str(tmp_path / "page-staff"), "--alert", "{type} {place}")
    assert n.sounder.gpio == tmp_path / "gpio17" and n.sounder.sound_s == 60.0
    assert cfg.liveness.enabled and cfg.liveness.margin_s == 5.0 and cfg.liveness.default_interval_s == 60.0


def test_without_notify_there_is_no_fallback(tmp_path: Path) -> None:
    cfg = load_config(_setup(tmp_path, ""))
    assert cfg.notify is None and cfg.liveness.enabled


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ("[notify]\nfallback_after_s = 20\n", "notify.circle: missing (required)"),
        ('[notify]\ncircle = "nowhere.toml"\n', "notify.circle: "),
        (
            '[notify]\ncircle = "circle.toml"\nfallback_after_s = 0.5\n',
            "notify.fallback_after_s: expected a number in 1.0..3600.0",
        ),
        ('[notify]\ncircle = "circle.toml"\nfallback_afer_s = 20\n', "notify.fallback_afer_s: unknown key"),
        (
            '[notify]\ncircle = "circle.toml"\nack_listen = "0.0.0.0:8181"\n',
            "notify.ack_base_url: the address people's phones reach",
        ),
        ('[notify]\ncircle = "circle.toml"\nack_listen = "127.0.0.1:99999"\n', "notify.ack_listen: expected HOST:PORT"),
        (
            '[notify]\ncircle = "circle.toml"\nack_listen = "127.0.0.1:8181"\nack_base_url = "ftp://x"\n',
            "notify.ack_base_url: expected an http:// or https:// URL",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\ncommand = "/bin/true"\n',
            "notify.sounder.command: expected a list of arguments",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\ncommand = ["page-staff"]\n',
            "notify.sounder.command: the program must be an absolute path",
        ),
        ('[notify]\ncircle = "circle.toml"\n[notify.sounder]\ncommand = ["/nonexistent/pager"]\n', "is not executable"),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\ncommand = ["/bin/true", "{resident}"]\n',
            "unknown field {resident}",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\ncommand = ["/bin/true", "{type.__class__}"]\n',
            "unknown field {type.__class__}",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\ncommand = ["/bin/true", "{type"]\n',
            "notify.sounder.command: argument '{type'",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\nsound_s = 30\n',
            "notify.sounder.command: give a command, a gpio line or both",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.sounder]\ngpio = "gpio99"\n',
            "notify.sounder.gpio: expected the sysfs directory",
        ),
        (
            '[notify]\ncircle = "circle.toml"\n[notify.modem]\nbaudrate = 9600\n',
            "notify.modem.port: missing (required)",
        ),
        ("[liveness]\nmargin_s = 0\n", "liveness.margin_s: expected a number in 1.0..3600.0"),
        ('[liveness]\nenabled = "yes"\n', "liveness.enabled: expected true or false"),
    ],
)
def test_a_bad_notify_section_names_file_and_key(tmp_path: Path, notify: str, message: str) -> None:
    path = _setup(tmp_path, notify)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_the_circle_copy_must_be_this_venues_and_valid(tmp_path: Path) -> None:
    path = _setup(tmp_path, '[notify]\ncircle = "circle.toml"\n', CIRCLE.replace('venue = "rosewood"', 'venue = "elm"'))
    with pytest.raises(
        ConfigError, match=r"notify\.circle: .* is the care circle of venue 'elm'; this gateway is at 'rosewood'"
    ):
        load_config(path)
    # the circle's own errors name the circle file and its key, never the URL's secret
    bad = CIRCLE.replace("json://127.0.0.1:9/li", "dingtalk://")
    path = _setup(tmp_path, '[notify]\ncircle = "circle.toml"\n', bad)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"{tmp_path / 'circle.toml'}: contacts[0].channels[0]" in str(exc.value)
    # a gsm:// channel needs the gateway's modem
    sms = CIRCLE.replace("json://127.0.0.1:9/li", "gsm://+8613800138000")
    path = _setup(tmp_path, '[notify]\ncircle = "circle.toml"\n', sms)
    with pytest.raises(ConfigError, match="gsm"):
        load_config(path)
    path.write_text(BASE + '[notify]\ncircle = "circle.toml"\n[notify.modem]\nport = "/dev/ttyUSB2"\n')
    assert load_config(path).notify is not None


def test_the_sim_pin_file_must_be_private(tmp_path: Path) -> None:
    path = _setup(
        tmp_path, '[notify]\ncircle = "circle.toml"\n[notify.modem]\nport = "/dev/ttyUSB2"\npin_file = "sim.pin"\n'
    )
    pin = tmp_path / "sim.pin"
    pin.write_text("1234\n")
    os.chmod(pin, 0o644)
    with pytest.raises(ConfigError, match=r"notify\.modem\.pin_file: .*chmod 600"):
        load_config(path)


def test_check_config_refuses_a_bad_notify_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _setup(tmp_path, '[notify]\ncircle = "circle.toml"\nfallback_after_s = -1\n')
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "notify.fallback_after_s: expected a number in 1.0..3600.0, got -1" in err
    assert "Traceback" not in err
