"""guardian-provision for venue sensors: the sensor bundle, `--channel` parsed and checked on the
host, and virtual boards (the MicroPython unix port on ptys, driven through mpremote's
transport) flashed as sensors: self-test passed, channels in config.json, a re-flash copies
nothing, other channels rewrite config.json only, and the board's own config check is the
final judge.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil_tests.sim.board import VirtualBoard, board_uid
from provisioning.bundle import build_bundle, load_bundle
from provisioning.channels import SensorChannel, channels_for, parse_channel
from provisioning.errors import ProvisionError
from provisioning.flash import FlashOptions, Outcome, Progress, flash_one
from provisioning.workspace import Workspace
from tests.conftest import MakeBoard
from tests.provisioning.conftest import PASSPHRASE, assert_user_error, provision

VENUE, ZONE = "venue-1", "kitchen"
BROKER = ("127.0.0.1", 1883)
TWO = ("smoke:smoke", "kitchen-gas:gas:confirm_ms=8000,on=30")
TWO_CONFIG = [
    {"name": "smoke", "type": "smoke"},
    {"name": "kitchen-gas", "type": "gas", "confirm_ms": 8000, "on": 30},
]


def _dev(board: VirtualBoard) -> str:
    return "VS-" + board_uid(board.name).hex().upper()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sensor bundle for the module: the firmware tree may change while the tests run."""
    return build_bundle("sensor", tmp_path_factory.mktemp("bundle") / "sensor").root


def _flash(home: Path, bundle: Path, board: VirtualBoard, channels: tuple[str, ...]) -> Outcome:
    """One board's flash transaction in this process, as `flash` runs it."""
    opts = FlashOptions("sensor", VENUE, ZONE, BROKER, channels=channels_for("sensor", channels))
    with Workspace(home, create=True, passphrase=PASSPHRASE) as ws:
        return flash_one(ws, load_bundle(bundle), opts, board.console_path, Progress())


def _flash_cli(bundle: Path, board: VirtualBoard, *channels: str) -> list[str]:
    args = ["flash", "--kind", "sensor", "--venue", VENUE, "--zone", ZONE, "--broker", "127.0.0.1:1883"]
    args += ["--bundle", str(bundle), "--port", board.console_path]
    for ch in channels:
        args += ["--channel", ch]
    return args


# ------------------------------------------------------------------------------- bundle


def test_sensor_bundle_carries_its_app_only_and_is_reproducible(tmp_path: Path, bundle: Path) -> None:
    again = build_bundle("sensor", tmp_path / "again")
    assert (bundle / "manifest.json").read_bytes() == again.manifest
    manifest = json.loads(again.manifest)
    assert manifest["kind"] == "sensor"
    apps = sorted(p for p in manifest["files"] if p.startswith("apps/"))
    assert apps == ["apps/__init__.mpy", "apps/sensor/__init__.mpy", "apps/sensor/app.mpy", "apps/sensor/check.mpy"]
    assert {"lib/detector.mpy", "lib/reporter.mpy", "selftest.mpy", "main.py"} <= set(manifest["files"])


# ------------------------------------------------------------------------------- --channel


def test_channel_values_parse_in_order_with_their_tuning() -> None:
    got = channels_for("sensor", ["smoke:smoke", "kitchen-gas:gas:on=30,confirm_ms=8000", "x.1:door:off=-1"])
    assert got == (
        SensorChannel("smoke", "smoke"),
        SensorChannel("kitchen-gas", "gas", (("confirm_ms", 8000), ("on", 30))),
        SensorChannel("x.1", "door", (("off", -1),)),
    )
    assert [c.config() for c in got[:2]] == TWO_CONFIG
    assert parse_channel("ext_2:extinguisher:fault_ms=0,clear_ms=5").tuning == (("clear_ms", 5), ("fault_ms", 0))
    assert channels_for("alarm_post", []) == ()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("smoke", "expected NAME:TYPE[:key=value,...]"),
        ("a:smoke:on=1:x", "expected NAME:TYPE[:key=value,...]"),
        (":smoke", "name '': expected 1-16 characters"),
        ("a b:smoke", "name 'a b': expected 1-16 characters"),
        ("seventeen-chars-x:smoke", "name 'seventeen-chars-x'"),
        ("hall:fire", "unknown type 'fire' (known: door, extinguisher, gas, smoke)"),
        ("hall:Smoke", "unknown type 'Smoke'"),
        ("hall:smoke:", "'': expected key=value"),
        ("hall:smoke:on", "'on': expected key=value"),
        ("hall:smoke:delay_ms=5", "unknown tuning key 'delay_ms' (known: on, off, confirm_ms, clear_ms, fault_ms)"),
        ("hall:smoke:on=high", "on='high': expected an integer"),
        ("hall:smoke:on=1.5", "on='1.5': expected an integer"),
        ("hall:smoke:on=", "on='': expected an integer"),
        ("hall:smoke:on=1_000", "on='1_000': expected an integer"),
        ("hall:smoke:on=2000000000", "on='2000000000': expected an integer from -1073741824 to 1073741824"),
        ("hall:smoke:on=1,on=2", "on given twice"),
    ],
)
def test_bad_channel_value_is_named_in_the_error(value: str, needle: str) -> None:
    with pytest.raises(ProvisionError) as err:
        channels_for("sensor", ["ok:gas", value])
    assert str(err.value).startswith(f"--channel {value!r}: "), str(err.value)
    assert needle in str(err.value)


def test_channel_count_duplicates_and_kind() -> None:
    with pytest.raises(ProvisionError, match=r"^--channel 'b:gas': channel name 'b' used twice$"):
        channels_for("sensor", ["b:smoke", "c:door", "b:gas"])
    with pytest.raises(ProvisionError, match=r"^--channel: 9 channels given, a sensor has at most 8$"):
        channels_for("sensor", [f"c{n}:smoke" for n in range(9)])
    assert len(channels_for("sensor", [f"c{n}:smoke" for n in range(8)])) == 8
    with pytest.raises(ProvisionError, match=r"^--kind sensor needs at least one --channel NAME:TYPE"):
        channels_for("sensor", [])
    with pytest.raises(ProvisionError, match=r"^--channel is for --kind sensor only, not alarm_post$"):
        channels_for("alarm_post", ["smoke:smoke"])


def test_cli_channel_errors_exit_1_before_anything_is_made(tmp_path: Path) -> None:
    home = tmp_path / "h"
    base = ["flash", "--port", "/dev/null", "--venue", VENUE, "--zone", ZONE, "--broker", "127.0.0.1:1883"]
    proc = provision(home, *base, "--kind", "sensor", "--channel", "smoke:smoke", "--channel", "hall:fire")
    assert_user_error(proc, "guardian-provision", "flash: --channel 'hall:fire': unknown type 'fire'")
    proc = provision(home, *base, "--kind", "sensor")
    assert_user_error(proc, "guardian-provision", "flash: --kind sensor needs at least one --channel")
    proc = provision(home, *base, "--kind", "alarm_post", "--channel", "smoke:smoke")
    assert_user_error(proc, "guardian-provision", "flash: --channel is for --kind sensor only, not alarm_post")
    assert not home.exists()  # refused before the station's state was opened


# ------------------------------------------------------------------------------- boards


def test_sensor_flashed_with_two_channels_passes_selftest_and_reflash_copies_nothing(
    tmp_path: Path, make_board: MakeBoard, bundle: Path
) -> None:
    home = tmp_path / "station"
    board = make_board("sensor-1")
    dev = _dev(board)
    first = _flash(home, bundle, board, TWO)
    assert (first.ok, first.step, first.reason) == (True, "done", "")
    assert (first.device, first.kind, first.resumed) == (dev, "sensor", False)
    assert first.label is not None and first.label.text.startswith(f"{dev}  sensor  {VENUE}/{ZONE}  check ")
    cfg = json.loads((board.flash_dir / "config.json").read_text())
    assert cfg["kind"] == "sensor" and cfg["id"] == dev and cfg["channels"] == TWO_CONFIG
    assert not (board.flash_dir / "apps" / "alarm_post").exists()
    board.wait_console(f"sensor: {dev} boot", timeout=10)  # restarted into the sensor app

    again = _flash(home, bundle, board, TWO)
    assert (again.ok, again.kind, again.resumed, again.copied, again.removed) == (True, "sensor", True, 0, 0)

    listed = provision(home, "list")
    assert listed.returncode == 0 and dev in listed.stdout and " sensor " in listed.stdout, listed.stderr
    csv = provision(home, "export", "--format", "csv").stdout
    assert f"{dev},sensor,{board_uid(board.name).hex()},{VENUE},{ZONE},provisioned," in csv


def test_board_judges_the_tuning_and_other_channels_rewrite_config_only(
    tmp_path: Path, make_board: MakeBoard, bundle: Path
) -> None:
    home = tmp_path / "station"
    board = make_board("sensor-2")
    dev = _dev(board)
    # well-formed, but smoke's valid range is 0..2000: the sensor's own load_config, run on the
    # host, refuses it before the board is touched
    bad = provision(home, *_flash_cli(bundle, board, "smoke:smoke:on=5000", "door:door"), timeout=60)
    assert_user_error(bad, "guardian-provision", "--channel 'smoke:smoke:on=5000': detector: on=5000 outside lo..hi")
    assert not (home / "audit.log").exists()  # nothing was started
    # the board stays the final judge (a bundle of another firmware version): its self-test
    # runs the same check on the staged set, which is never switched to
    board_says = _flash(home, bundle, board, ("smoke:smoke:on=5000", "door:door"))
    assert (board_says.ok, board_says.step) == (False, "selftest")
    assert board_says.reason == "config: config.json: channels[0] (smoke): detector: on=5000 outside lo..hi (0..2000)"
    assert not (board.flash_dir / "config.json").exists() and (board.flash_dir / "fw_new" / "config.json").exists()

    good = provision(home, *_flash_cli(bundle, board, "smoke:smoke:on=500", "door:door"), timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"{board.console_path}: {dev} ok (resumed; 1 files copied, 0 removed)" in good.stdout  # config.json
    assert f"label: {dev}  sensor  {VENUE}/{ZONE}  check " in good.stdout
    cfg = json.loads((board.flash_dir / "config.json").read_text())
    assert cfg["channels"] == [{"name": "smoke", "type": "smoke", "on": 500}, {"name": "door", "type": "door"}]
    log = (home / "audit.log").read_text()
    assert '"action":"flash.failed"' in log and log.count('"action":"flash.register"') == 1
