"""guardian-provision without boards: bundles, the encrypted inventory, the audit log, exports,
device-enrollment bundles sealed to a gateway (and `guardian-agent devices import`), the esptool
path up to the missing chip. Every bad input gives one clear error line and changes nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agent.gateway.command_handler import CommandState, save_state
from agent.shared.commands import key_fingerprint
from agent.shared.registry import Device, load_registry
from hil_tests.sim.gateway import AgentProcess
from provisioning.bundle import build_bundle, load_bundle
from provisioning.errors import DeviceError, ProvisionError
from provisioning.image import plan_image, write_image
from provisioning.labels import make_label, write_label
from provisioning.workspace import Workspace
from tests.provisioning.conftest import PASSPHRASE, assert_user_error, provision, run_tool

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def _station(home: Path, venue: str = "venue-1") -> None:
    """A station home with two provisioned devices (as a flash run leaves them) and one pending."""
    with Workspace(home, create=True, passphrase=PASSPHRASE) as ws:
        for uid, dev, key, state in (
            ("00aa", "AP-00AA", KEY_A, "provisioned"),
            ("00bb", "AP-00BB", KEY_B, "provisioned"),
            ("00cc", "AP-00CC", bytes(32), "pending"),
        ):
            ws.inventory.data["devices"][uid] = {
                "id": dev,
                "uid": uid,
                "kind": "alarm_post",
                "venue": venue,
                "zone": "hall",
                "key": key.hex(),
                "state": state,
                "steps": [],
                "bundle": "b" * 16,
                "fw": "0.1.0",
                "mpy": "1.29.0",
            }
            ws.commit("flash.register", dev, uid=uid)


# ------------------------------------------------------------------------------- bundle


def test_bundle_is_reproducible_and_its_manifest_covers_every_file(tmp_path: Path) -> None:
    one = provision(tmp_path / "h", "bundle", "--kind", "alarm_post", "--out", str(tmp_path / "b1"))
    assert one.returncode == 0, one.stderr
    two = build_bundle("alarm_post", tmp_path / "b2")
    files1 = sorted(p.relative_to(tmp_path / "b1") for p in (tmp_path / "b1").rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(tmp_path / "b2") for p in (tmp_path / "b2").rglob("*") if p.is_file())
    assert files1 == files2
    for rel in files1:
        assert (tmp_path / "b1" / rel).read_bytes() == (tmp_path / "b2" / rel).read_bytes(), rel
    manifest = json.loads((tmp_path / "b1" / "manifest.json").read_bytes())
    assert manifest["bundle"] == two.bundle_id and two.bundle_id in one.stdout
    assert manifest["kind"] == "alarm_post" and manifest["version"] == two.version
    names = set(manifest["files"])
    assert {"boot.py", "main.py", "selftest.mpy", "lib/cbor.mpy", "hal/unix.mpy", "apps/alarm_post/app.mpy"} <= names
    assert sorted(n for n in names if n.endswith(".py")) == ["boot.py", "main.py"]
    assert {str(r) for r in files1} == names | {"manifest.json"}
    # an edited file or manifest is caught when the bundle is loaded
    (tmp_path / "b2" / "lib" / "cbor.mpy").write_bytes(b"M\x06")
    with pytest.raises(ProvisionError, match=r"cbor.mpy: SHA-256 differs"):
        load_bundle(tmp_path / "b2")
    manifest["version"] = "9.9.9"
    (tmp_path / "b1" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ProvisionError, match="bundle id does not match"):
        load_bundle(tmp_path / "b1")


def test_cli_user_errors_are_one_line_exit_1(tmp_path: Path) -> None:
    proc = provision(
        tmp_path / "h", "bundle", "--kind", "alarm_post", "--out", str(tmp_path), "--firmware", "/nonexistent"
    )
    assert_user_error(proc, "guardian-provision", "not a firmware tree")
    proc = provision(tmp_path / "nohome", "list")
    assert_user_error(proc, "guardian-provision", "no provisioning home")
    proc = provision(
        tmp_path / "h", "flash", "--kind", "alarm_post", "--port", "/dev/null", "--venue", "v", "--zone", "z"
    )
    assert_user_error(proc, "guardian-provision", "--broker HOST:PORT is required")


# ------------------------------------------------------------------------------- inventory


def test_wrong_passphrase_and_tampered_inventory_change_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _station(home)
    inv = home / "inventory.ge"
    before = inv.read_bytes()
    assert os.stat(inv).st_mode & 0o777 == 0o600
    assert KEY_A.hex().encode() not in before  # encrypted at rest

    proc = provision(home, "list", env={"GE_PROVISION_PASSPHRASE": "not the passphrase"})
    assert_user_error(proc, "guardian-provision", "wrong passphrase")
    assert inv.read_bytes() == before

    tampered = bytearray(before)
    tampered[-20] ^= 0x01
    inv.write_bytes(bytes(tampered))
    proc = provision(home, "export", "--format", "csv")
    assert_user_error(proc, "guardian-provision", "altered or damaged")
    assert inv.read_bytes() == bytes(tampered)
    inv.write_bytes(b"GEINV\x00\x00\x01" + bytes(10))
    assert_user_error(provision(home, "list"), "guardian-provision", "not a Guardian Edge inventory")


def test_export_csv_and_json_carry_no_secret(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _station(home)
    csv_out = provision(home, "export", "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0] == (
        "id,kind,uid,venue,zone,state,bundle,fw,mpy,provisioned,resident,venue_name,zone_name,fallback,last_failure"
    )
    assert [line.split(",")[0] for line in lines[1:]] == ["AP-00AA", "AP-00BB", "AP-00CC"]
    json_out = provision(home, "export", "--format", "json", "--out", str(tmp_path / "inv.json"))
    assert json_out.returncode == 0, json_out.stderr
    rows = json.loads((tmp_path / "inv.json").read_text())
    assert {r["id"] for r in rows} == {"AP-00AA", "AP-00BB", "AP-00CC"}
    for text in (csv_out.stdout, (tmp_path / "inv.json").read_text(), (home / "audit.log").read_text()):
        assert KEY_A.hex() not in text and KEY_B.hex() not in text


# ------------------------------------------------------------------------------- audit log


def test_audit_verify_detects_an_edit_a_removal_and_a_cut_end(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _station(home)
    log = home / "audit.log"
    ok = provision(home, "audit", "verify")
    assert ok.returncode == 0 and "ok, 3 entries" in ok.stdout, ok.stderr
    good = log.read_bytes()
    lines = good.splitlines(keepends=True)

    log.write_bytes(lines[0] + lines[1].replace(b"AP-00BB", b"AP-00BX") + lines[2])
    assert_user_error(provision(home, "audit", "verify"), "guardian-provision", "line 2", "altered")
    log.write_bytes(lines[0] + lines[2])
    assert_user_error(provision(home, "audit", "verify"), "guardian-provision", "line 2")
    log.write_bytes(lines[0] + lines[1])  # the last entry cut off: the inventory recorded 3
    assert_user_error(provision(home, "audit", "verify"), "guardian-provision", "cut off the end")
    # a broken log is not appended to, and the inventory is not touched
    inv_before = (home / "inventory.ge").read_bytes()
    assert_user_error(provision(home, "export", "--format", "csv"), "guardian-provision", "cut off the end")
    assert log.read_bytes() == lines[0] + lines[1]
    assert (home / "inventory.ge").read_bytes() == inv_before
    log.write_bytes(good)
    assert provision(home, "audit", "verify").returncode == 0


# ------------------------------------------------------------------------------- labels


def test_label_has_qr_png_svg_and_text_without_secret(tmp_path: Path) -> None:
    label = make_label("00aa", "AP-00AA", "alarm_post", "venue-1", "hall")
    paths = write_label(tmp_path, label)
    assert [p.name for p in paths] == ["AP-00AA.png", "AP-00AA.svg", "AP-00AA.txt"]
    assert paths[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in paths[1].read_bytes()
    assert paths[2].read_text() == f"AP-00AA  alarm_post  venue-1/hall  check {label.check}\n"
    assert label.payload == f"GE1|AP-00AA|alarm_post|venue-1|hall|{label.check}" and len(label.check) == 6
    assert make_label("00ab", "AP-00AA", "alarm_post", "venue-1", "hall").check != label.check


# ------------------------------------------------------------------------------- sealed bundle


def _gateway(tmp_path: Path, name: str, gateway_id: str) -> tuple[AgentProcess, Path]:
    agent = AgentProcess(tmp_path / name, ("127.0.0.1", 1), ("127.0.0.1", 1), [], gateway_id=gateway_id)
    out = run_tool("agent", "devices", "key", "--config", str(agent.config_file))
    assert out.returncode == 0, out.stderr
    pub = Path(out.stdout.split(":", 1)[0])
    key = pub.with_name(pub.name.removesuffix(".pub"))
    assert os.stat(key).st_mode & 0o777 == 0o600 and pub.read_text().startswith(f"Gateway-Id: {gateway_id}\n")
    return agent, pub


def test_enrollment_bundle_imports_only_at_its_gateway(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _station(home)
    gw1, pub1 = _gateway(tmp_path, "gw1", "GW-1")
    gw2, _ = _gateway(tmp_path, "gw2", "GW-2")
    bundle = tmp_path / "devices.ge"
    out = provision(home, "export", "--format", "gateway", "--gateway-key", str(pub1), "--out", str(bundle))
    assert out.returncode == 0, out.stderr
    assert "2 devices sealed to gateway GW-1" in out.stdout  # the pending board is not exported
    blob = bundle.read_bytes()
    assert KEY_A.hex().encode() not in blob and KEY_A not in blob

    reg2 = gw2.devices_file.read_bytes()
    proc = run_tool("agent", "devices", "import", "--config", str(gw2.config_file), str(bundle))
    assert_user_error(proc, "guardian-agent", "sealed to gateway 'GW-1'", "not to this gateway 'GW-2'")
    assert gw2.devices_file.read_bytes() == reg2

    reg1 = gw1.devices_file.read_bytes()
    flipped = bytearray(blob)
    flipped[-5] ^= 0x01
    (tmp_path / "flipped.ge").write_bytes(bytes(flipped))
    proc = run_tool("agent", "devices", "import", "--config", str(gw1.config_file), str(tmp_path / "flipped.ge"))
    assert_user_error(proc, "guardian-agent", "altered or damaged")
    header_edit = blob.replace(b'"count":2', b'"count":3')
    (tmp_path / "header.ge").write_bytes(header_edit)
    proc = run_tool("agent", "devices", "import", "--config", str(gw1.config_file), str(tmp_path / "header.ge"))
    assert_user_error(proc, "guardian-agent", "altered or damaged")
    assert gw1.devices_file.read_bytes() == reg1

    # a device central revoked with this key is refused, and nothing else is imported either
    save_state(gw1.data_dir / "commands.toml", CommandState(5, {}, {"AP-00BB": key_fingerprint(KEY_B)}))
    proc = run_tool("agent", "devices", "import", "--config", str(gw1.config_file), str(bundle))
    assert_user_error(proc, "guardian-agent", "AP-00BB was revoked")
    assert gw1.devices_file.read_bytes() == reg1
    (gw1.data_dir / "commands.toml").unlink()

    proc = run_tool("agent", "devices", "import", "--config", str(gw1.config_file), str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "2 devices added, 0 updated" in proc.stdout
    registry = {d.id: d for d in load_registry(gw1.devices_file)}
    assert registry == {
        "AP-00AA": Device("AP-00AA", "alarm_post", KEY_A, "venue-1", "hall"),
        "AP-00BB": Device("AP-00BB", "alarm_post", KEY_B, "venue-1", "hall"),
    }
    assert os.stat(gw1.devices_file).st_mode & 0o777 == 0o600
    log = (home / "audit.log").read_text()
    assert '"action":"export.gateway"' in log and KEY_A.hex() not in log


def test_bundle_for_another_venue_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _station(home, venue="venue-9")
    gw, pub = _gateway(tmp_path, "gw", "GW-1")
    bundle = tmp_path / "devices.ge"
    assert (
        provision(home, "export", "--format", "gateway", "--gateway-key", str(pub), "--out", str(bundle)).returncode
        == 0
    )
    before = gw.devices_file.read_bytes()
    proc = run_tool("agent", "devices", "import", "--config", str(gw.config_file), str(bundle))
    assert_user_error(proc, "guardian-agent", "for venue 'venue-9'")
    assert gw.devices_file.read_bytes() == before


# ------------------------------------------------------------------------------- esptool


def test_esptool_plan_and_no_chip_error(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="No such file"):
        plan_image("/dev/null", tmp_path / "missing.bin")
    (tmp_path / "text.bin").write_bytes(b"hello")
    with pytest.raises(ProvisionError, match="not an ESP firmware image"):
        plan_image("/dev/null", tmp_path / "text.bin")
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9" + bytes(4095))
    plan = plan_image("/dev/ttyUSB0", image)
    assert plan.size == 4096 and len(plan.sha256) == 64
    assert plan.offset("ESP32") == 0x1000 and plan.offset("ESP32-S2") == 0x1000
    assert plan.offset("ESP32-S3") == 0x0 and plan.offset("ESP32-C3") == 0x0
    assert plan.command_line("ESP32") == [
        "esptool", "--port", "/dev/ttyUSB0", "--baud", "460800", "write-flash", "--erase-all", "0x1000", str(image),
    ]  # fmt: skip
    # a port where no chip answers: a pty nobody serves
    master, slave = os.openpty()
    try:
        started = time.monotonic()
        with pytest.raises(DeviceError) as err:
            write_image(plan_image(os.ttyname(slave), image))
        assert err.value.step == "image"
        assert f"no Espressif chip answered on {os.ttyname(slave)}" in err.value.reason
        assert time.monotonic() - started < 30
    finally:
        os.close(master)
        os.close(slave)
