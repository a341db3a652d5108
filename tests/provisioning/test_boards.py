"""Bundles carry only what the app imports; boards (--board) pick the pin map and the base-image
route; base images are checked before anything is erased (UF2 blocks and families, the ESP
image's chip); wristbands are flashed with their keys and resident on a virtual board."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from hil_tests.sim.board import board_uid
from provisioning.boards import load_board
from provisioning.bundle import FIRMWARE_DIR, build_bundle, source_files
from provisioning.errors import ProvisionError
from provisioning.image import (
    UF2_END,
    UF2_MAGIC0,
    UF2_MAGIC1,
    check_drive,
    check_uf2,
    esp_image_chip,
    plan_uf2,
    write_uf2,
)
from tests.conftest import MakeBoard
from tests.provisioning.conftest import assert_user_error, provision

VENUE, ZONE = "venue-1", "lounge"


def _modules(
    kind: str, port: str = "unix", root: Path = FIRMWARE_DIR, parts: tuple[str, ...] = (), transport: str | None = None
) -> set[str]:
    return {path for path, _ in source_files(kind, root, port, parts, transport)}


def test_each_bundle_carries_only_its_import_closure() -> None:
    post, sensor, band = _modules("alarm_post"), _modules("sensor"), _modules("wristband")
    common = {"boot.py", "main.py", "selftest.py", "hal/__init__.py", "hal/unix.py", "lib/clock.py"}
    assert common <= post and common <= sensor and common <= band
    # what the reporting devices send with, and nothing of the band's
    links = ("lib/mqtt.py", "lib/mqttlink.py", "lib/link.py", "lib/uartlink.py", "lib/cobsframe.py")
    for mod in (*links, "lib/store.py", "lib/frame.py"):
        assert mod in post and mod in sensor and mod not in band, mod
    for mod in ("lib/advert.py", "lib/aesccm.py", "lib/bandclock.py", "lib/fall.py", "lib/sos.py"):
        assert mod in band and mod not in post and mod not in sensor, mod
    assert "lib/detector.py" in sensor and "lib/detector.py" not in post | band
    assert "lib/button.py" in post and "lib/button.py" not in sensor  # the band's SOS button uses it too
    # the band keeps its clock in atomic records without the outbox, and no frame crypto
    assert {"lib/record.py"} <= band and not {"lib/store.py", "lib/cose.py", "lib/cbor.py", "lib/reporter.py"} & band
    for kind, mods in (("alarm_post", post), ("sensor", sensor), ("wristband", band)):
        assert {m for m in mods if m.startswith("apps/") and "/" in m[5:]} == {
            f"apps/{kind}/__init__.py",
            f"apps/{kind}/app.py",
            f"apps/{kind}/check.py",
        }
        assert "lib/fixture_proto.py" not in mods  # the rig fixture's, imported by no device app
        # the virtual board's hal only: no real port's module, no part driver
        real = {"hal/esp32.py", "hal/rp2.py", "hal/zephyr.py", "hal/machineboard.py", "hal/lis3dh.py"}
        assert not (real | {"hal/boardspec.py"}) & mods


def test_a_bundle_for_one_transport_carries_only_that_link(tmp_path: Path) -> None:
    mqtt_link, uart_link = {"lib/mqttlink.py", "lib/mqtt.py", "lib/linktls.py"}, {"lib/uartlink.py", "lib/cobsframe.py"}
    for kind in ("alarm_post", "sensor"):
        both, mqtt, uart = _modules(kind), _modules(kind, transport="mqtt"), _modules(kind, transport="uart")
        assert mqtt_link | uart_link <= both
        assert mqtt_link <= mqtt and not uart_link & mqtt and mqtt == both - uart_link
        assert uart_link <= uart and not mqtt_link & uart and uart == both - mqtt_link
        assert "lib/link.py" in mqtt and "lib/link.py" in uart  # LinkError and Redial, for both links
    assert _modules("wristband", transport="mqtt") == _modules("wristband")
    with pytest.raises(ProvisionError, match="unknown transport 'lora'"):
        _modules("alarm_post", transport="lora")
    b = build_bundle("alarm_post", tmp_path / "b", transport="uart")
    assert b.transport == "uart" and "lib/mqtt.mpy" not in {f.path for f in b.files}
    assert json.loads(b.manifest)["transport"] == "uart"
    band = build_bundle("wristband", tmp_path / "w", transport="uart")
    assert band.transport == ""  # a band has no link to choose


REAL_HAL = {"hal/__init__.py", "hal/machineboard.py"}


@pytest.mark.parametrize(
    ("kind", "board", "port_module", "driver"),
    [
        ("alarm_post", "alarm-post-esp32c3", "hal/esp32.py", None),
        ("alarm_post", "alarm-post-picow", "hal/rp2.py", None),
        ("sensor", "sensor-esp32s3", "hal/esp32.py", None),
        ("wristband", "wristband-nrf52840", "hal/zephyr.py", "hal/lis3dh.py"),
    ],
)
def test_a_real_boards_bundle_carries_its_ports_hal_and_its_parts_drivers(
    tmp_path: Path, kind: str, board: str, port_module: str, driver: str | None
) -> None:
    b = build_bundle(kind, tmp_path / "bundle", board=load_board(board, FIRMWARE_DIR))
    paths = {f.path for f in b.files}
    want = {p[:-3] + ".mpy" for p in REAL_HAL | {port_module}}
    assert want <= paths, sorted(want - paths)
    # the board file was checked here (hal/boardspec.py under CPython): its checker stays home
    others = {"hal/unix.py", "hal/esp32.py", "hal/rp2.py", "hal/zephyr.py", "hal/lis3dh.py", "hal/boardspec.py"}
    others -= {port_module, driver}
    assert not {p[:-3] + ".mpy" for p in others} & paths
    assert (driver is not None) == ("hal/lis3dh.mpy" in paths)
    # the board file in its checked form: every key with its default, the format the hal reads
    form = json.loads(b.read(f"boards/{board}.json"))
    raw = json.loads((FIRMWARE_DIR / "boards" / f"{board}.json").read_bytes())
    assert form["spec"] == 1 and form["board"] == board and form["button"]["pin"] == raw["button"]["pin"]
    assert {"wdt_ms", "sleep", "adc_vref_mv"} <= set(form) and "note" not in form
    assert (b.board, b.port) == (board, load_board(board, FIRMWARE_DIR).port)


ON_USE = {"hal/ble.py", "hal/civil.py", "hal/analog.py", "hal/accel.py"}  # loaded by a Board method


def test_a_part_an_app_never_asks_for_is_not_carried(tmp_path: Path) -> None:
    # the modules hal/machineboard.py loads on the first call of radio(), rtc(), sensor() or
    # battery(), accel(): carried for the apps that call the method, and no other
    post = _modules("alarm_post", "esp32", transport="mqtt")
    sensor = _modules("sensor", "esp32", transport="mqtt")
    band = _modules("wristband", "zephyr", parts=("lis3dh",))
    assert not ON_USE & post
    assert ON_USE & sensor == {"hal/analog.py"}
    assert {"hal/ble.py", "hal/analog.py", "hal/accel.py", "hal/lis3dh.py"} <= band
    # the Wi-Fi goes with the MQTT link; the virtual board's radio with the band only
    assert "hal/wifi.py" in post and "hal/wifi.py" not in _modules("alarm_post", "esp32", transport="uart")
    assert "hal/unixradio.py" in _modules("wristband") and "hal/unixradio.py" not in _modules("sensor")
    # an app that starts to ask for a part gets its module, written out or by name
    tree = tmp_path / "fw"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    app = tree / "apps" / "alarm_post" / "app.py"
    text = app.read_text()
    app.write_text(text + "\n\ndef _battery(board):\n    return board.battery()\n")
    assert ON_USE & _modules("alarm_post", "esp32", tree) == {"hal/analog.py"}
    app.write_text(text + '\n\ndef _clock(board):\n    return getattr(board, "rtc", None)\n')
    assert ON_USE & _modules("alarm_post", "esp32", tree) == {"hal/civil.py"}
    # the hal naming its own method is not a use
    mb = tree / "hal" / "machineboard.py"
    mb.write_text(mb.read_text() + "\n\ndef _probe(b):\n    return b.radio\n")
    app.write_text(text)
    assert "hal/ble.py" not in _modules("alarm_post", "esp32", tree)


@pytest.mark.parametrize(
    ("board", "outputs"),
    [
        ("alarm-post-esp32c3", {"hal/pixel.py", "hal/pwm.py"}),  # a WS2812 LED, a piezo's tone
        ("alarm-post-picow", {"hal/pwm.py"}),  # PWM for the LED's brightness and the piezo
        ("sensor-esp32s3", set()),  # three LED pins, an active sounder
        ("wristband-nrf52840", set()),
    ],
)
def test_output_code_goes_with_the_boards_that_drive_such_outputs(board: str, outputs: set[str]) -> None:
    b = load_board(board, FIRMWARE_DIR)
    kind = "sensor" if board.startswith("sensor") else "wristband" if board.startswith("wrist") else "alarm_post"
    assert {"hal/pixel.py", "hal/pwm.py"} & _modules(kind, b.port, parts=b.parts) == outputs


def test_closure_picks_the_ports_hardware_layer_and_follows_its_imports(tmp_path: Path) -> None:
    tree = tmp_path / "fw"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    # a port module that imports a module of its own: followed, and only for that port
    (tree / "hal" / "rp2.py").write_text("from hal import pinmap\nfrom hal.machineboard import MachineBoard\n")
    (tree / "hal" / "pinmap.py").write_text("import json\n")
    rp2 = _modules("alarm_post", "rp2", tree)
    assert {"hal/rp2.py", "hal/pinmap.py"} | REAL_HAL <= rp2 and not {"hal/unix.py", "hal/esp32.py"} & rp2
    esp = _modules("alarm_post", "esp32", tree)
    assert "hal/esp32.py" in esp and not {"hal/pinmap.py", "hal/rp2.py", "hal/lis3dh.py"} & esp
    unix = _modules("alarm_post", "unix", tree)
    assert "hal/unix.py" in unix and not {"hal/esp32.py", "hal/pinmap.py", "hal/rp2.py"} & unix
    # a part driver goes with a board that names the part, whatever the port
    assert "hal/lis3dh.py" in _modules("alarm_post", "esp32", tree, ("lis3dh",))
    (tree / "hal" / "zephyr.py").unlink()
    with pytest.raises(ProvisionError, match=r"no hardware layer for port zephyr \(hal/zephyr.py\)"):
        _modules("wristband", "zephyr", tree)
    with pytest.raises(ProvisionError, match=r"no driver for the part bma400 \(hal/bma400.py\)"):
        _modules("wristband", "esp32", tree, ("bma400",))

    (tree / "boards" / "post-esp.json").write_text(
        json.dumps({"board": "post-esp", "port": "esp32", "button": {"pin": 9}})
    )
    board = load_board("post-esp", tree)
    b = build_bundle("alarm_post", tmp_path / "bundle", root=tree, board=board)
    assert (b.board, b.port) == ("post-esp", "esp32")
    assert b.read("boards/post-esp.json") == board.data
    assert json.loads(board.data)["button"] == {"pin": 9, "active": 1, "pull": None}
    assert "hal/esp32.mpy" in {f.path for f in b.files} and "hal/unix.mpy" not in {f.path for f in b.files}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[]", "must hold a JSON object"),
        ('{"board": "other", "port": "esp32"}', "\"board\" must be 'b1'"),
        ('{"board": "b1", "port": "avr"}', '"port" must be one of'),
        ("{", "not valid JSON"),
        # the firmware's own checker, by key, before anything is built or flashed
        ('{"board": "b1", "port": "esp32"}', "b1.json: button: is required"),
        ('{"board": "b1", "port": "esp32", "button": {"pin": 60}}', "button.pin: must be an integer from 0 to 48"),
        ('{"board": "b1", "port": "zephyr", "button": {"pin": 3}}', 'button.pin: must be ["gpioN", 0-31] on zephyr'),
        ('{"board": "b1", "port": "rp2", "button": {"pin": 1}, "led": {"rgb": [1]}}', "led: needs"),
    ],
)
def test_bad_board_file_is_named(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "boards").mkdir()
    (tmp_path / "hal").mkdir()
    shutil.copy(FIRMWARE_DIR / "hal" / "boardspec.py", tmp_path / "hal")  # the tree's checker
    (tmp_path / "boards" / "b1.json").write_text(content)
    with pytest.raises(ProvisionError, match=r"b1\.json") as exc:
        load_board("b1", tmp_path)
    assert needle in str(exc.value)
    with pytest.raises(ProvisionError, match="known boards: b1"):
        load_board("nope", tmp_path)


# ------------------------------------------------------------------------------- images


def uf2(payload: bytes, family: int = 0xE48BFF56, base: int = 0x10000000, chunk: int = 256) -> bytes:
    """A UF2 file as picotool/uf2conv write it: 256 bytes per block, family id flag."""
    parts = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    out = b""
    for n, part in enumerate(parts):
        head = struct.pack("<8I", UF2_MAGIC0, UF2_MAGIC1, 0x2000, base + n * chunk, len(part), n, len(parts), family)
        out += head + part.ljust(476, b"\x00") + struct.pack("<I", UF2_END)
    return out


def test_uf2_image_checked_block_by_block(tmp_path: Path) -> None:
    good = uf2(bytes(range(256)) * 8)
    img = tmp_path / "fw.uf2"
    img.write_bytes(good)
    assert check_uf2(img, good, "rp2") == ("RP2040",)
    assert check_uf2(img, uf2(b"\x01" * 600, 0xADA52840, 0x26000), "zephyr") == ("nRF52840",)
    bad = {
        "not a whole number of 512-byte": good[:-1],
        "block 3: not a UF2 block": good[: 3 * 512] + b"\x00" * 512 + good[4 * 512 :],
        "family 0xada52840 is not for the rp2 port": uf2(b"\x01" * 600, 0xADA52840),
        "outside the chip's flash": uf2(b"\x01" * 600, base=0x20000000),
        "7 of 8 blocks (truncated?)": good[:-512],
        "no block to write": b"",
    }
    for needle, data in bad.items():
        with pytest.raises(ProvisionError) as exc:
            check_uf2(img, data, "rp2")
        assert needle in str(exc.value), (needle, str(exc.value))
    with pytest.raises(ProvisionError, match="esp32 port takes no UF2"):
        check_uf2(img, good, "esp32")


def test_uf2_goes_to_a_checked_bootloader_drive_then_the_console_port(tmp_path: Path) -> None:
    img = tmp_path / "micropython.uf2"
    img.write_bytes(uf2(b"\x02" * 1000))
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    console = tmp_path / "ttyACM0"
    with pytest.raises(ProvisionError, match="not a UF2 bootloader drive"):
        plan_uf2(str(console), img, "rp2", drive)
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    with pytest.raises(ProvisionError, match="names no nRF52 bootloader"):
        check_drive(drive, "zephyr")
    plan = plan_uf2(str(console), img, "rp2", drive)
    console.write_text("")  # the board's console appears once the image runs
    assert write_uf2(plan, wait_s=2) == "RP2040"
    assert (drive / img.name).read_bytes() == img.read_bytes()


def test_esp_image_header_names_its_chip(tmp_path: Path) -> None:
    from esptool.bin_image import ESP32S3FirmwareImage, ImageSegment

    image = ESP32S3FirmwareImage()
    image.entrypoint = 0x40370000
    segment = ImageSegment(0x3FC88000, b"\x00" * 64)
    segment.name = "dram0"
    image.segments = [segment]
    path = tmp_path / "fw.bin"
    image.save(str(path))
    assert esp_image_chip(path, path.read_bytes()) == "ESP32-S3"
    with pytest.raises(ProvisionError, match="not an ESP firmware image"):
        esp_image_chip(path, b"\x00" + path.read_bytes()[1:])


# ------------------------------------------------------------------------------- wristbands


def test_wristband_flashed_with_key_resident_and_clock_on_a_virtual_board(
    tmp_path: Path, make_board: MakeBoard
) -> None:
    home = tmp_path / "station"
    board = make_board("band-1")
    dev = "WB-" + board_uid(board.name).hex().upper()
    args = ["flash", "--kind", "wristband", "--venue", VENUE, "--zone", ZONE, "--port", board.console_path]
    refused = provision(home, *args)
    assert_user_error(refused, "guardian-provision", "--kind wristband needs one --resident REF per --port")
    refused = provision(home, *args, "--resident", "Room 12", "--broker", "127.0.0.1:1883")
    assert_user_error(refused, "guardian-provision", "a wristband only advertises")

    first = provision(home, *args, "--resident", "Room 12 - Mrs A.", timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{board.console_path}: {dev} ok (new;" in first.stdout
    board.wait_console(f"wristband: {dev} up", timeout=10)  # restarted into the band's app
    cfg = json.loads((board.flash_dir / "config.json").read_text())
    assert cfg["kind"] == "wristband" and cfg["id"] == dev and len(bytes.fromhex(cfg["key"])) == 32
    assert "transport" not in cfg and "broker" not in cfg
    assert (board.flash_dir / "data" / "clock.0").is_file()  # the band clock was set
    assert not (board.flash_dir / "lib" / "mqtt.mpy").exists()
    assert (board.flash_dir / "lib" / "advert.mpy").exists()
    for text in (first.stdout, (home / "audit.log").read_text(), (home / "labels" / f"{dev}.txt").read_text()):
        assert "Mrs A." not in text and cfg["key"] not in text
    assert '"action":"flash.clock"' in (home / "audit.log").read_text()
    exported = json.loads(provision(home, "export", "--format", "json").stdout)
    assert [(r["id"], r["kind"], r["resident"]) for r in exported] == [(dev, "wristband", "Room 12 - Mrs A.")]

    other = provision(home, *args, "--resident", "Room 14 - Mr B.", timeout=120)
    assert other.returncode == 1 and "for another resident; revoke it" in other.stdout, other.stdout
