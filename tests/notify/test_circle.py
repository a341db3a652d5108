"""Care-circle and notifier config files: refused with errors naming the file and key, never a URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.notify.alert import Alert
from agent.notify.circle import load_circle
from agent.notify.config import load_config
from agent.shared.errors import ConfigError
from tests.notify.conftest import circle_toml
from tests.notify.receiver import Receiver

SECRET = "s3cretTOKEN42"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "home.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str, modem: bool = False) -> str:
    with pytest.raises(ConfigError) as err:
        load_circle(write(tmp_path, text), modem=modem)
    message = str(err.value)
    assert str(tmp_path / "home.toml") in message
    assert SECRET not in message
    return message


def test_a_good_file_loads(tmp_path: Path, rx: Receiver) -> None:
    circle = load_circle(write(tmp_path, circle_toml(rx)))
    assert circle.venue == "rosewood" and circle.staff == ("desk",)
    sos = Alert("rosewood", "GW-1", "WB-0001", 1, 1, 3, 0, {"1": "Room 4"})
    assert [[c.id for c in r] for r in circle.rounds(sos)] == [["li-wei"], ["anna", "tom"], ["desk"]]
    smoke = Alert("rosewood", "GW-1", "SN-1", 1, 1, 7, 0, {"1": 0, "2": 300, "3": "kitchen"})
    assert [[c.id for c in r] for r in circle.rounds(smoke)] == [["desk"]]
    stranger = Alert("rosewood", "GW-1", "WB-9999", 1, 1, 3, 0, {"1": "Room 9"})
    assert [[c.id for c in r] for r in circle.rounds(stranger)] == [["desk"]]  # no circle: staff
    assert "s3cret" not in repr(circle)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"nosuchservice://{SECRET}@host", "channels[0]: unknown service nosuchservice://"),
        (f"https//{SECRET}", "channels[0]: not a URL"),
        ("dingtalk://", "channels[0]: dingtalk:// URL is incomplete"),
        (f"gsm://+86{SECRET}", "channels[0]: gsm:// needs a [modem]"),
    ],
)
def test_bad_channel_urls_are_refused_without_echoing_them(
    tmp_path: Path, rx: Receiver, url: str, expected: str
) -> None:
    text = circle_toml(rx).replace(f'channels = ["{rx.url("li-wei")}"]', f'channels = ["{url}"]')
    message = refused(tmp_path, text)
    assert "contacts[0]." + expected in message, message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"'), "timezone: unknown IANA time zone"),
        (('language = "zh"', 'language = "fr"'), "contacts[0].language: expected one of zh, en"),
        (
            ('circle = ["li-wei", ["anna", "tom"]]', 'circle = ["li-wei", "nobody"]'),
            "residents[0].circle[1]: no contact 'nobody'",
        ),
        (
            ('circle = ["li-wei", ["anna", "tom"]]', 'circle = ["li-wei", "desk"]'),
            "residents[0].circle[1]: 'desk' is staff",
        ),
        (
            ('circle = ["li-wei", ["anna", "tom"]]', 'circle = ["li-wei", ["li-wei"]]'),
            "residents[0].circle[1]: 'li-wei' is already in an earlier round",
        ),
        (('alerts = ["SOS",', 'alerts = ["HELP",'), "contacts[2].alerts: unknown alert 'HELP'"),
        (("escalate_after_s = 60", "escalate_after_s = 0"), "escalate_after_s: expected a number in 1.0..3600.0"),
        (('reference = "Room 4"', 'reference = ""'), "residents[0].reference: expected 1-64 characters"),
        (('name = "Tom"', 'name = "Tom"\ncolour = "red"'), "contacts[2].colour: unknown key"),
        (('id = "anna"', 'id = "li-wei"'), "contacts[1].id: 'li-wei' is used twice"),
    ],
)
def test_bad_circle_files_are_refused_naming_the_key(
    tmp_path: Path, rx: Receiver, change: tuple[str, str], expected: str
) -> None:
    text = circle_toml(rx)
    assert change[0] in text
    message = refused(tmp_path, text.replace(change[0], change[1], 1))
    assert expected in message, message


def test_no_staff_is_refused(tmp_path: Path, rx: Receiver) -> None:
    text = circle_toml(rx)
    text = text[: text.index("[[staff]]")] + text[text.index("[[residents]]") :]
    assert "staff: at least one [[staff]]" in refused(tmp_path, text)


def test_not_toml_is_refused(tmp_path: Path) -> None:
    assert "not valid TOML" in refused(tmp_path, "venue = \n")


def test_the_same_url_twice_is_refused(tmp_path: Path, rx: Receiver) -> None:
    text = circle_toml(rx).replace(f'"{rx.url("anna-mail")}"', f'"{rx.url("anna")}"')
    assert "contacts[1].channels: the same channel URL is listed twice" in refused(tmp_path, text)


def test_notifier_config_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "notify.toml"
    path.write_text('[notifier]\ndata_dir = "d"\ncircles = ["home.toml"]\n[central]\nbroker = "localhost"\n')
    with pytest.raises(ConfigError, match=r"notify.toml: central.broker: expected HOST:PORT"):
        load_config(path)
    path.write_text('[notifier]\ndata_dir = "d"\ncircles = ["home.toml"]\n[central]\nbroker = "127.0.0.1:1883"\n')
    with pytest.raises(ConfigError, match=r"notify.toml: central.gateway_keys: give gateway_keys"):
        load_config(path)
    path.write_text('[notifier]\ndata_dir = "d"\ncircles = []\n')
    with pytest.raises(ConfigError, match=r"notify.toml: notifier.circles: expected a list"):
        load_config(path)
    path.write_text('[notifier]\ndata_dir = "d"\ncircles = ["h.toml"]\n[delivery]\nmax_attempts = 0\n')
    with pytest.raises(ConfigError, match=r"delivery.max_attempts: expected an integer in 1..50"):
        load_config(path)
    path.write_text(
        '[notifier]\ndata_dir = "d"\ncircles = ["h.toml"]\n[ack]\nlisten = "127.0.0.1:8080"\n'
        'base_url = "notify.example.org"\n'
    )
    with pytest.raises(ConfigError, match=r"ack.base_url: expected an http:// or https:// URL"):
        load_config(path)
