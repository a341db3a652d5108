"""Config and registry files: good ones load, bad ones name the file, the key and what was expected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cli import main
from agent.gateway.config import load_config
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, load_registry, write_registry

KEY = "00" * 32


def _registry(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _config(tmp_path: Path, text: str) -> Path:
    write_registry(tmp_path / "devices.toml", [Device("AP-1", "alarm_post", bytes(32), "v1", "hall")])
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


GOOD = """
[gateway]
id = "GW-1"
venue = "v1"
data_dir = "data"
devices_file = "devices.toml"
[local]
host = "127.0.0.1"
[central]
host = "central.example"
port = 8883
[batch]
window = 4
"""


def test_good_config(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, GOOD))
    assert cfg.gateway_id == "GW-1" and cfg.central.port == 8883 and cfg.local.port == 1883
    assert cfg.data_dir == tmp_path / "data" and cfg.key_file == tmp_path / "data" / "gateway.key"
    assert cfg.batch.window == 4 and cfg.batch.max_events == 1000
    assert cfg.batch_topic == "venues/v1/gateways/GW-1/batches"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('id = "GW-1"', 'id = "GW 1"'), "gateway.id: expected 1-32 characters"),
        (("port = 8883", "port = 70000"), "central.port: expected an integer in 1..65535, got 70000"),
        (("port = 8883", 'port = "8883"'), "central.port: expected an integer, got str"),
        (("window = 4", "window = 0"), "batch.window: expected an integer in 1..256"),
        (("window = 4", "windows = 4"), "batch.windows: unknown key"),
        (('[local]\nhost = "127.0.0.1"\n', ""), "local: missing table (required)"),
        (('venue = "v1"\n', ""), "gateway.venue: missing (required)"),
        (("[batch]", "[batch"), "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = _config(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _config(tmp_path, GOOD.replace("window = 4", "window = = 4"))
    with pytest.raises(ConfigError, match=r"line 13, column 10"):
        load_config(path)


def test_registry_errors(tmp_path: Path) -> None:
    cases = [
        (
            f'[[device]]\nid = "AP-1"\nkind = "alarm_post"\nkey = "{KEY[:10]}"\nvenue = "v"\nzone = "z"\n',
            "device[0].key: expected 64 hex digits (32 bytes), got 10",
        ),
        (
            f'[[device]]\nid = "AP-1"\nkind = "alarm_post"\nkey = "{"zz" * 32}"\nvenue = "v"\nzone = "z"\n',
            "device[0].key: expected 64 hex digits, got non-hex text",
        ),
        (
            f'[[device]]\nid = "AP-1"\nkind = "toaster"\nkey = "{KEY}"\nvenue = "v"\nzone = "z"\n',
            "device[0].kind: expected one of alarm_post, wristband, sensor",
        ),
        (
            (f'[[device]]\nid = "AP-1"\nkind = "alarm_post"\nkey = "{KEY}"\nvenue = "v"\nzone = "z"\n') * 2,
            "device[1].id: duplicate device id 'AP-1' (also device[0])",
        ),
        (
            f'[[device]]\nid = "AP/1"\nkind = "alarm_post"\nkey = "{KEY}"\nvenue = "v"\nzone = "z"\n',
            "device[0].id: expected 1-32 characters",
        ),
        (f'[[device]]\nid = "AP-1"\nkind = "alarm_post"\nkey = "{KEY}"\nvenue = "v"\n', "device[0].zone: missing"),
        ('[[devices]]\nid = "AP-1"\n', "devices: unknown key"),
    ]
    for text, message in cases:
        path = _registry(tmp_path, text)
        with pytest.raises(ConfigError) as exc:
            load_registry(path)
        assert str(path) in str(exc.value) and message in str(exc.value), (message, str(exc.value))
        assert KEY not in str(exc.value)


def test_empty_registry_is_valid(tmp_path: Path) -> None:
    # a gateway before its first devices arrive, or after all of them were revoked
    assert len(load_registry(_registry(tmp_path, ""))) == 0


def test_registry_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _registry(
        tmp_path, f'[[device]]\nid = "AP-1"\nkind = "alarm_post"\nkey = "{KEY}"\nvenue = "v"\nzone = "z"\n', mode=0o644
    )
    with pytest.raises(ConfigError, match="mode 0644 lets other users read device keys; run: chmod 600"):
        load_registry(path)
    os.chmod(path, 0o600)
    assert load_registry(path).get("AP-1") is not None


def test_cli_user_errors_exit_1_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("guardian-agent: ") and "no such file" in err and "Traceback" not in err
    assert main(["check-config", str(_config(tmp_path, GOOD))]) == 0
    assert "ok (gateway GW-1, venue v1, 1 devices)" in capsys.readouterr().out


def test_check_config_prints_venue_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An exit zone with one scanner is valid but weak: a warning, and the check still passes."""
    (tmp_path / "venue.toml").write_text(
        'venue = "v1"\n[[zones]]\nid = "hall"\n[[zones]]\nid = "front"\nkind = "exit"\n'
        '[[scanners]]\nid = "H1"\nzone = "hall"\n[[scanners]]\nid = "X1"\nzone = "front"\n'
    )
    path = _config(tmp_path, GOOD + '[wristbands]\nalerts = "venue.toml"\n')
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok (gateway GW-1" in out
    assert err.startswith("warning: ") and "zones[1] (front): exit zone with one scanner" in err
