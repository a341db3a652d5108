"""Local-broker logins (agent/shared/broker_auth.py): Mosquitto's hash format against
mosquitto_passwd, the registry and the sealed bundle carrying hashes, never passwords."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.shared import broker_auth
from agent.shared.broker_auth import acl_text, check_hash, new_password, password_file_text, password_hash, verify
from agent.shared.device_bundle import open_devices, seal_devices
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, load_registry, write_registry
from provisioning.flash import FlashOptions, device_config, new_record


def test_new_passwords_are_random_and_usable() -> None:
    pws = {new_password() for _ in range(100)}
    assert len(pws) == 100 and all(len(p) == 32 for p in pws)
    assert all(broker_auth.check_password(p, "x") == p for p in pws)
    with pytest.raises(ConfigError, match="x: expected 16 to 128"):
        broker_auth.check_password("short", "x")


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (package mosquitto)")
    pw = new_password()
    path = tmp_path / "passwd"
    path.write_text(f"AP-1:{pw}\n")  # plain text, hashed in place by -U: no password on a command line
    subprocess.run([tool, "-U", str(path)], check=True, capture_output=True, timeout=30)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert check_hash(theirs, "theirs") == theirs and verify(pw, theirs) and not verify(pw + "x", theirs)
    ours = password_hash(pw)
    assert ours.startswith("$7$101$") and verify(pw, ours) and ours != password_hash(pw), "a fresh salt each time"
    _, _, it, salt, _ = theirs.split("$")
    import base64

    assert password_hash(pw, base64.b64decode(salt), int(it)) == theirs, "the same bytes as mosquitto_passwd"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "$6$abc",
        "$7$101$short$" + "A" * 88,
        "$7$0$" + "A" * 16 + "$" + "A" * 88,
        "$7$101$" + "!" * 16 + "$" + "A" * 88,
    ],
)
def test_bad_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="where: expected a Mosquitto"):
        check_hash(bad, "where")


def test_files_name_only_identifiers() -> None:
    h = password_hash(new_password())
    assert password_file_text([("AP-1", h)]) == f"AP-1:{h}\n".encode()
    with pytest.raises(ConfigError):
        password_file_text([("a:b", h)])
    with pytest.raises(ConfigError):
        acl_text("agent\nuser AP-1")
    acl = acl_text("GW-1-agent").decode()
    assert "pattern write ge/dev/%u/up\n" in acl and "pattern read ge/dev/%u/down\n" in acl
    assert "user GW-1-agent\ntopic read ge/dev/+/up\n" in acl


def test_registry_and_bundle_carry_the_hash_only(tmp_path: Path) -> None:
    opts = FlashOptions("alarm_post", "venue-1", "hall", broker=("gw.local", 1883))
    rec = new_record("AP-00AA", "00aa", opts, bytes(32))
    pw = rec["broker_password"]
    assert new_record("WB-00AA", "00aa", FlashOptions("wristband", "v", "z"), bytes(32)).get("broker_password") is None
    uart = FlashOptions("alarm_post", "v", "z", transport="uart")
    assert new_record("AP-00AB", "00ab", uart, bytes(32)).get("broker_password") is None
    assert f'"password":"{pw}"' in device_config(rec, opts).decode()
    dev = Device("AP-00AA", "alarm_post", bytes(32), "venue-1", "hall", password_hash(pw))
    assert pw not in repr(dev) and dev.broker_hash not in repr(dev)
    key = X25519PrivateKey.generate()
    bundle = tmp_path / "devices.ge"
    bundle.write_bytes(seal_devices(key.public_key(), "GW-1", [dev], 0))
    (back,) = open_devices(bundle, key, "GW-1")
    assert back == dev and back.broker_hash is not None and verify(pw, back.broker_hash)
    reg = tmp_path / "devices.toml"
    write_registry(reg, [back, Device("AP-00BB", "alarm_post", bytes(32), "venue-1", "hall")])
    assert pw not in reg.read_text()
    first, second = load_registry(reg)
    assert first == dev and second.broker_hash is None
    reg.write_text(reg.read_text().replace("$7$101$", "$7$x$"))
    with pytest.raises(ConfigError, match=r"device\[0\]\.broker_hash: expected a Mosquitto"):
        load_registry(reg)
