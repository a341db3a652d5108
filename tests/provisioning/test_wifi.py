"""Wi-Fi credentials for MQTT boards on Wi-Fi: from a 0600 TOML file or the environment, checked
as WPA2-Personal takes them, written into config.json with the board's name next to its board
file, and never shown: not in errors, output, the audit log or labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil_tests.sim.board import board_uid
from provisioning.boards import VIRTUAL, load_board
from provisioning.bundle import FIRMWARE_DIR
from provisioning.errors import ProvisionError
from provisioning.flash import FlashOptions, device_config
from provisioning.wifi import ENV_PASSWORD, ENV_SSID, WifiCredentials, credentials, from_environment, from_file
from tests.conftest import MakeBoard
from tests.provisioning.conftest import assert_user_error, provision

SECRET = "s3cret-Passphrase!"


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "wifi.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_from_a_private_toml_file(tmp_path: Path) -> None:
    wifi = from_file(_file(tmp_path, f'ssid = "Venue Staff"\npassword = "{SECRET}"\n'))
    assert wifi.config() == {"ssid": "Venue Staff", "password": SECRET}
    assert SECRET not in repr(wifi)
    psk = "ab" * 32  # a raw 256-bit PSK
    assert from_file(_file(tmp_path, f'ssid = "x"\npassword = "{psk}"\n')).password == psk
    assert from_file(_file(tmp_path, 'ssid = "Guest"\npassword = ""\n')).password == ""  # an open network


@pytest.mark.parametrize(
    ("text", "mode", "needle"),
    [
        (f'ssid = "a"\npassword = "{SECRET}"\n', 0o644, "mode 0644 lets other users read the Wi-Fi password"),
        (f'ssid = "a"\npassword = "{SECRET}\n', 0o600, "not valid TOML"),  # the parser would quote the line
        (f'ssid = "a"\npassword = "{SECRET}"\nchannel = 6\n', 0o600, "unknown key 'channel'"),
        ('ssid = "a"\n', 0o600, "password is missing"),
        (f'password = "{SECRET}"\n', 0o600, "ssid must be 1-32 bytes"),
        (f'ssid = "{"x" * 33}"\npassword = "{SECRET}"\n', 0o600, "ssid must be 1-32 bytes"),
        ('ssid = "a"\npassword = "short"\n', 0o600, "8-63 printable ASCII characters or 64 hex digits"),
        (f'ssid = "a"\npassword = "{SECRET}\\u00e9"\n', 0o600, "8-63 printable ASCII"),
        (f'ssid = "a\\u0007"\npassword = "{SECRET}"\n', 0o600, "control characters"),
        ('ssid = "a"\npassword = 12345678\n', 0o600, "password must be a string"),
    ],
)
def test_bad_credentials_file_is_named_and_the_password_never_shown(
    tmp_path: Path, text: str, mode: int, needle: str
) -> None:
    path = _file(tmp_path, text, mode)
    with pytest.raises(ProvisionError) as exc:
        from_file(path)
    assert needle in str(exc.value) and str(path) in str(exc.value), str(exc.value)
    assert SECRET not in str(exc.value) and "short" not in str(exc.value)


def test_missing_file_and_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="No such file"):
        from_file(tmp_path / "none.toml")
    assert from_environment({}) is None
    got = from_environment({ENV_SSID: "Venue", ENV_PASSWORD: SECRET})
    assert got is not None and got.config() == {"ssid": "Venue", "password": SECRET}
    with pytest.raises(ProvisionError, match=r"\$GE_WIFI_PASSWORD is not set"):
        from_environment({ENV_SSID: "Venue"})
    with pytest.raises(ProvisionError) as exc:
        from_environment({ENV_SSID: "Venue", ENV_PASSWORD: "tiny"})
    assert "$GE_WIFI_SSID/$GE_WIFI_PASSWORD" in str(exc.value) and "tiny" not in str(exc.value)
    # the file wins over the environment
    path = _file(tmp_path, f'ssid = "FromFile"\npassword = "{SECRET}"\n')
    file_wifi = credentials(path, {ENV_SSID: "FromEnv", ENV_PASSWORD: SECRET})
    assert file_wifi is not None and file_wifi.ssid == "FromFile"


def test_config_json_names_the_board_and_carries_the_wifi() -> None:
    rec = {"kind": "alarm_post", "id": "AP-01", "key": "00" * 32}
    board = load_board("alarm-post-picow", FIRMWARE_DIR)
    opts = FlashOptions("alarm_post", "v", "z", ("10.0.0.2", 1883), board=board, wifi=WifiCredentials("Hall", SECRET))
    cfg = json.loads(device_config(rec, opts))
    assert cfg["board"] == "alarm-post-picow" and cfg["wifi"] == {"ssid": "Hall", "password": SECRET}
    plain = json.loads(device_config(rec, FlashOptions("alarm_post", "v", "z", ("10.0.0.2", 1883), board=VIRTUAL)))
    assert "board" not in plain and "wifi" not in plain


def test_flash_asks_for_wifi_only_where_the_board_needs_it(
    tmp_path: Path, make_board: MakeBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SSID, raising=False)
    monkeypatch.delenv(ENV_PASSWORD, raising=False)
    home = tmp_path / "station"
    board = make_board("post-w")
    base = ["flash", "--kind", "alarm_post", "--venue", "v", "--zone", "z", "--port", board.console_path]
    refused = provision(home, *base, "--broker", "127.0.0.1:1883", "--board", "alarm-post-picow")
    assert_user_error(refused, "guardian-provision", "board alarm-post-picow reaches the broker over Wi-Fi", "--wifi")
    wifi = _file(tmp_path, f'ssid = "Hall"\npassword = "{SECRET}"\n')
    for extra in (["--broker", "127.0.0.1:1883"], ["--transport", "uart", "--board", "alarm-post-picow"]):
        refused = provision(home, *base, *extra, "--wifi", str(wifi))
        assert_user_error(refused, "guardian-provision", "--wifi is for a board that reaches the broker over Wi-Fi")
    wifi.chmod(0o640)
    refused = provision(home, *base, "--broker", "127.0.0.1:1883", "--board", "alarm-post-picow", "--wifi", str(wifi))
    assert_user_error(refused, "guardian-provision", "chmod 600")
    assert SECRET not in refused.stderr


def test_flash_writes_board_and_wifi_into_config_and_the_board_file_next_to_it(
    tmp_path: Path, make_board: MakeBoard
) -> None:
    # A Pico W post's bundle onto a virtual board: the copy and key steps stage what a real
    # board gets (fw_new/); the self-test then stops it, because the unix port runs no rp2 hal
    # (one line naming the board file), which is what a technician sees with the wrong image,
    # and the staged set is never switched to.
    home = tmp_path / "station"
    board = make_board("post-wifi")
    dev = "AP-" + board_uid(board.name).hex().upper()
    args = ["flash", "--kind", "alarm_post", "--venue", "v", "--zone", "z", "--port", board.console_path]
    args += ["--broker", "10.0.0.2:1883", "--board", "alarm-post-picow"]
    out = provision(home, *args, env={ENV_SSID: "Venue Hall", ENV_PASSWORD: SECRET}, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{dev} FAILED at selftest: hal: boards/alarm-post-picow.json: port:" in out.stdout, out.stdout
    staged = board.flash_dir / "fw_new"
    assert not (board.flash_dir / "config.json").exists()  # nothing switched to
    cfg = json.loads((staged / "config.json").read_text())
    assert cfg["board"] == "alarm-post-picow" and cfg["wifi"] == {"ssid": "Venue Hall", "password": SECRET}
    on_board = staged / "boards" / "alarm-post-picow.json"
    assert on_board.read_bytes() == load_board("alarm-post-picow", FIRMWARE_DIR).data  # the checked form
    assert (staged / "hal" / "rp2.mpy").is_file() and not (staged / "hal" / "unix.mpy").exists()
    for text in (out.stdout, out.stderr, (home / "audit.log").read_text()):
        assert SECRET not in text
