"""Config and registry files: good ones load, bad ones name the file, the key and what was expected."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
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


# --- every error at once, and what `run` would crash on ------------------------------------


def test_every_error_in_the_file_is_reported_each_on_its_own_line(tmp_path: Path) -> None:
    text = (
        GOOD.replace('id = "GW-1"', 'id = "GW 1"')
        .replace("port = 8883", 'port = "8883"')
        .replace("window = 4", "window = 0\nlinger = 5\nspeed = 1")
        .replace('host = "127.0.0.1"', 'host = ""')
        + "[metrics]\nlisten = 9108\n[[serial]]\nbaudrate = 7\n"
    )
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    expected = [
        "gateway.id: expected 1-32 characters",
        "local.host: expected a host name or IP address, got ''",
        "central.port: expected an integer, got str '8883'",
        "batch.window: expected an integer in 1..256, got 0",
        "batch.linger: unknown key",
        "batch.speed: unknown key",
        "metrics.listen: expected a string HOST:PORT, got int 9108",
        "serial[0].port: missing (required)",
        "serial[0].baudrate: expected an integer in 50..4000000, got 7",
    ]
    assert lines[0] == f"{len(expected)} errors:", lines
    assert len(lines) == len(expected) + 1, lines
    for line, want in zip(lines[1:], expected, strict=True):
        assert line.startswith(f"{path}: ") and want in line, (want, line)


def test_a_missing_table_is_one_error_not_one_per_key(tmp_path: Path) -> None:
    path = _config(tmp_path, GOOD.replace('[local]\nhost = "127.0.0.1"\n', "").replace('venue = "v1"\n', ""))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert lines[0] == "2 errors:" and "gateway.venue: missing (required)" in lines[1]
    assert "local: missing table (required)" in lines[2]


def test_every_registry_error_is_reported(tmp_path: Path) -> None:
    device = '[[device]]\nid = "{id}"\nkind = "{kind}"\nkey = "{key}"\nvenue = "v"\nzone = "z"\n'
    text = (
        device.format(id="AP-1", kind="toaster", key=KEY)
        + device.format(id="AP/2", kind="sensor", key=KEY[:10])
        + device.format(id="AP-1", kind="sensor", key=KEY)
    )
    with pytest.raises(ConfigError) as exc:
        load_registry(_registry(tmp_path, text))
    lines = str(exc.value).splitlines()
    assert lines[0] == "4 errors:"
    for want, line in zip(
        [
            "device[0].kind: expected one of",
            "device[1].id: expected 1-32",
            "device[1].key: expected 64 hex digits",
            "device[2].id: duplicate device id 'AP-1'",
        ],
        lines[1:],
        strict=True,
    ):
        assert want in line, (want, line)
    assert KEY not in str(exc.value), "a key is never printed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('host = "127.0.0.1"', 'host = "bad host"'), "local.host: expected a host name or IP address"),
        (('host = "central.example"', 'host = "  "'), "central.host: expected a host name or IP address"),
        (("[batch]", "[local.x]\n[batch]"), "local.x: unknown key"),
        (("port = 8883", 'port = 8883\nclient_id = ""'), "central.client_id: expected 1-128 printable ASCII"),
        (('data_dir = "data"', 'data_dir = ""'), "gateway.data_dir: expected a path, got an empty string"),
    ],
)
def test_values_run_would_crash_on_are_refused(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_config(tmp_path, GOOD.replace(*change)))


def test_check_config_looks_at_the_machine_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "keys").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = (
            GOOD.replace('data_dir = "data"', 'data_dir = "a-file/data"')
            + f'[metrics]\nlisten = "127.0.0.1:{port}"\n[buffer]\ndisk_reserve_bytes = {1 << 40}\n'
        )
        assert main(["check-config", str(_config(tmp_path, text))]) == 1
        err = capsys.readouterr().err.splitlines()
        assert err[0] == "guardian-agent: 2 errors:", err
        assert "gateway.data_dir: " in err[1] and "a-file is not one" in err[1]
        assert err[2].endswith(f"metrics.listen: 127.0.0.1:{port} is in use by another process")
        # the reserve is checked against the filesystem once the data directory has one
        text = GOOD.replace('data_dir = "data"', 'data_dir = "keys"') + f"[buffer]\ndisk_reserve_bytes = {1 << 40}\n"
        assert main(["check-config", str(_config(tmp_path, text))]) == 1
        assert "buffer.disk_reserve_bytes: 1099511627776 bytes is more than 1/4" in capsys.readouterr().err
        for listen, why in (
            ("192.0.2.1:9108", "is not an address of this machine"),
            ("no-such-host.invalid:9108", "does not resolve"),
        ):
            text = GOOD + f'[metrics]\nlisten = "{listen}"\n'
            assert main(["check-config", str(_config(tmp_path, text))]) == 1
            assert why in capsys.readouterr().err


def test_the_port_of_the_agent_running_on_the_data_directory_is_not_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy, subprocess.Popen(["sleep", "60"]) as agent:
        try:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            (tmp_path / "data").mkdir()
            (tmp_path / "data" / "agent.lock").write_text(f"{agent.pid}\n")
            text = GOOD + f'[metrics]\nlisten = "127.0.0.1:{busy.getsockname()[1]}"\n'
            assert main(["check-config", str(_config(tmp_path, text))]) == 0
            assert f"an agent runs on {tmp_path / 'data'} (pid {agent.pid})" in capsys.readouterr().out
        finally:
            agent.kill()


def test_a_metrics_port_in_use_at_run_time_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = _config(tmp_path, GOOD + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        run = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert run.returncode == 1, run
    last = run.stderr.strip().splitlines()[-1]
    assert last == f"guardian-agent: {path}: metrics.listen: 127.0.0.1:{port} is in use by another process"
    assert "Traceback" not in run.stderr
