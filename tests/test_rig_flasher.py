"""The rig's flasher driver (hil_tests/rig/flasher.py) on virtual boards (the MicroPython unix
port on ptys, flashed through mpremote's transport by the provisioning code): a fresh board is
flashed and runs its app, a re-flash copies nothing; a port that is gone is the rig's failure
(RigInfraError) and a board that fails its self-test the product's (never retried); under the
pytest plugin a flash that meets a busy port is retried once, on record, on the simulated rig
and on a bench file's flasher section.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.gateway.signer import load_or_create_key
from hil_tests.plugin import Dut, load_bench
from hil_tests.rig.drivers import ConsoleDriver, FixtureDriver
from hil_tests.rig.errors import RigInfraError, SelftestFailure
from hil_tests.rig.flasher import INFRA_STEPS, PRODUCT_STEPS, FlasherDriver
from hil_tests.rig.resources import SerialPort
from hil_tests.sim.board import VirtualBoard, board_uid
from hil_tests.sim.fixture import SimFixture
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR
from provisioning.bundle import Bundle, build_bundle
from provisioning.flash import STEPS, FlashOptions
from provisioning.workspace import Workspace
from tests.conftest import MakeBoard

VENUE, ZONE = "venue-1", "hall"
PASSPHRASE = "correct horse battery staple"
PASSPHRASE_ENV = "GE_TEST_BENCH_PASSPHRASE"

# A hardware layer whose green LED driver is dead: the pin reads 0 whatever is written.
STUCK_LED_HAL = """\
from hal.unix import Board as _Board


class _Stuck:
    name = "led_g"

    def value(self, v=None):
        return 0 if v is None else None

    def on(self):
        pass

    def off(self):
        pass


class Board(_Board):
    def __init__(self):
        _Board.__init__(self)
        self.led_g = _Stuck()
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_bundle("alarm_post", tmp_path_factory.mktemp("bundle") / "alarm_post")


@pytest.fixture(scope="module")
def broken_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The firmware with a hardware layer that has a stuck LED output: its self-test fails."""
    base = tmp_path_factory.mktemp("broken")
    tree = base / "firmware"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tree / "hal" / "__init__.py").write_text(STUCK_LED_HAL)
    return build_bundle("alarm_post", base / "bundle", root=tree)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    with Workspace(tmp_path / "station", create=True, passphrase=PASSPHRASE) as ws:
        yield ws


def _dev(board: VirtualBoard) -> str:
    return "AP-" + board_uid(board.name).hex().upper()


def _key(board: VirtualBoard) -> str:
    """The device key, from the running set's config.json or the staged one's (a set that
    failed its self-test is never switched to)."""
    path = board.flash_dir / "config.json"
    if not path.exists():
        path = board.flash_dir / "fw_new" / "config.json"
    return str(json.loads(path.read_text())["key"])


def test_every_flash_step_is_classified() -> None:
    assert set(STEPS) == INFRA_STEPS | PRODUCT_STEPS
    assert not INFRA_STEPS & PRODUCT_STEPS
    assert {"selftest"} == PRODUCT_STEPS


def test_fresh_board_flashed_runs_its_app_and_a_reflash_copies_nothing(
    tmp_path: Path, make_board: MakeBoard, broker: Mosquitto, bundle: Bundle, workspace: Workspace
) -> None:
    board = make_board("post-f")
    dev = _dev(board)
    console = ConsoleDriver(board.name, SerialPort(path=board.console_path))
    console.log_to(tmp_path / "post-f.log")
    console.open()  # a test had the console open: the flasher takes it over and gives it back
    flasher = FlasherDriver(
        board.name, console, workspace, bundle, FlashOptions("alarm_post", VENUE, ZONE, broker.address)
    )
    try:
        first = flasher.flash()
        assert (first.device, first.uid) == (dev, board_uid(board.name).hex())
        assert (first.bundle, first.fw) == (bundle.bundle_id, bundle.version)  # read back by the self-test
        assert re.fullmatch(r"\d+\.\d+\.\d+", first.mpy), first.mpy
        assert first.changed and not first.resumed
        assert first.copied == len(bundle.files) + 2  # the bundle's files, its manifest, config.json
        booted = board.wait_console(f"alarm_post: {dev} boot", timeout=10)
        board.wait_console("alarm_post: connected", timeout=10, since=booted)
        board.click()
        console.expect(rb"event \d+/\d+ type 1 saved", timeout=5)  # the console driver reads the app again

        mark = board.console_offset
        again = flasher.flash()
        assert (again.device, again.bundle) == (dev, bundle.bundle_id)
        assert again.resumed and not again.changed and (again.copied, again.removed) == (0, 0)
        board.wait_console(f"alarm_post: {dev} boot", timeout=10, since=mark)
        assert flasher.last_steps[-2:] == ["restart", "done"]
    finally:
        console.close()
    log = (tmp_path / "post-f.log").read_text()
    assert "==== flash: selftest" in log and "==== flash: done" in log and "type 1 saved" in log
    assert _key(board) not in log and _key(board).encode() not in board.console_output()
    assert workspace.inventory.device(first.uid)["state"] == "provisioned"  # type: ignore[index]


def test_a_port_that_is_gone_or_holds_another_board_is_the_rigs_failure(
    tmp_path: Path, make_board: MakeBoard, bundle: Bundle, workspace: Workspace
) -> None:
    opts = FlashOptions("alarm_post", VENUE, ZONE, ("127.0.0.1", 1883))
    absent = FlasherDriver(
        "post-u", SerialPort(serial_number="GE-NO-SUCH-ADAPTER"), workspace, bundle, opts, find_timeout=0.2
    )
    with pytest.raises(RigInfraError, match=r"^post-u: flash failed at connect: no serial port with USB serial"):
        absent.flash()

    # a /dev/serial/by-id style link, removed when the adapter is unplugged
    board = make_board("post-v")
    link = tmp_path / "by-id" / "usb-GE_post-v-if00"
    link.parent.mkdir()
    link.symlink_to(board.console_path)
    console = ConsoleDriver(board.name, SerialPort(path=str(link)))
    flasher = FlasherDriver(board.name, console, workspace, bundle, opts)
    try:
        assert flasher.flash().device == _dev(board)
        # the rig names this port for AP-0001, but the board on it is another device
        wrong = FlasherDriver("AP-0001", console, workspace, bundle, opts, expect_id="AP-0001")
        with pytest.raises(RigInfraError, match=rf"^AP-0001: flash found board \w+ at {link}, .* names {_dev(board)}"):
            wrong.flash()
        link.unlink()
        with pytest.raises(RigInfraError) as caught:
            flasher.flash()
    finally:
        console.close()
    message = str(caught.value)
    assert message.startswith(f"post-v: flash failed at connect: cannot open {link}"), message
    assert not isinstance(caught.value, AssertionError)
    assert _key(board) not in message


def test_a_board_failing_its_selftest_is_a_product_failure(
    make_board: MakeBoard, bundle: Bundle, broken_bundle: Bundle, workspace: Workspace
) -> None:
    board = make_board("post-b")
    dev = _dev(board)
    console = ConsoleDriver(board.name, SerialPort(path=board.console_path))
    opts = FlashOptions("alarm_post", VENUE, ZONE, ("127.0.0.1", 1883))
    flasher = FlasherDriver(board.name, console, workspace, broken_bundle, opts)
    try:
        with pytest.raises(SelftestFailure) as caught:
            flasher.flash()
        assert not isinstance(caught.value, RigInfraError)
        assert str(caught.value) == (
            f"post-b ({dev}): self-test failed after flashing: hal: output led_g does not switch on"
        )
        assert flasher.last_steps[-2:] == ["selftest", "failed"]
        rec = workspace.inventory.device(board_uid(board.name).hex())
        assert rec is not None and rec["state"] == "pending"
        assert _key(board) not in str(caught.value)

        # the fixed firmware on the same board: the transaction completes, same device
        fixed = flasher.flash(bundle)
        assert fixed.device == dev and fixed.resumed and fixed.bundle == bundle.bundle_id
        board.wait_console(f"alarm_post: {dev} boot", timeout=10)
    finally:
        console.close()


def test_a_bench_without_a_flasher_skips_naming_the_option(tmp_path: Path) -> None:
    dut = Dut("AP-0001", 0, ConsoleDriver("AP-0001", SerialPort(path="/dev/null")), FixtureDriver(SerialPort()))
    with pytest.raises(pytest.skip.Exception, match=r"add a `flasher:` section to the bench file"):
        dut.flash()


# --- under the plugin ---------------------------------------------------------------------

INNER_FLASH_TESTS = """
from pathlib import Path

import serial

from provisioning.bundle import load_bundle

CALLS = {{}}


def _calls(request):
    return CALLS.setdefault(request.node.name, [])


def test_flash_with_a_terminal_left_on_the_port(rig, request):
    dut = rig.dut("AP-0001")
    _calls(request).append(1)
    before = {{e["boot"] for e in rig.central.events(device=dut.id, type_name="ONLINE")}}
    if len(_calls(request)) == 1:
        with serial.Serial(dut.console.port.find(), exclusive=True):  # a terminal holds the port
            dut.flash()
    result = dut.flash()
    assert result.device == "AP-0001" and result.changed
    # the flashed post runs, with the same id and key: central verifies it coming online
    assert rig.central.wait_for(
        lambda: any(e["boot"] not in before for e in rig.central.events(device=dut.id, type_name="ONLINE")), 15
    )


def test_flash_a_broken_build(rig, request):
    _calls(request).append(1)
    rig.dut("AP-0002").flash(load_bundle(Path({broken!r})))


def test_counts():
    assert {{k: len(v) for k, v in CALLS.items()}} == {{
        "test_flash_with_a_terminal_left_on_the_port": 2, "test_flash_a_broken_build": 1}}
"""


@pytest.fixture
def _inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


@pytest.mark.usefixtures("_inner_ini")
def test_plugin_retries_an_infra_failure_while_flashing_once_never_a_selftest_failure(
    pytester: pytest.Pytester, micropython: str, broken_bundle: Bundle
) -> None:
    pytester.makepyfile(INNER_FLASH_TESTS.format(broken=str(broken_bundle.root)))
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=junit.xml", "--rig-artifacts", "art")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*SelftestFailure: AP-0002: self-test failed after flashing: hal: output led_g*"])
    junit = (pytester.path / "junit.xml").read_text()
    assert junit.count('name="infra_retry"') == 1, junit  # never for the self-test failure
    assert re.search(
        r'name="infra_retry" value="AP-0001: flash failed at connect: cannot open /dev/pts/\d+: ', junit
    ), junit
    log = next((pytester.path / "art").rglob("AP-0002.log")).read_text()  # kept: the test failed
    assert "==== flash: selftest (AP-0002) ====" in log


def _bench_file(
    tmp_path: Path, central: tuple[str, int], fixture_port: str, devices: list[dict[str, object]], flasher: object
) -> Path:
    gateway_key = tmp_path / "gw.key"
    load_or_create_key(gateway_key, "GW-1")
    spec = {
        "fixture": {"path": fixture_port},
        "central": {"broker": f"{central[0]}:{central[1]}", "gateway_key": f"{gateway_key}.pub"},
        "devices": devices,
        "flasher": flasher,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.mark.usefixtures("_inner_ini")
def test_bench_file_flasher_flashes_through_the_plugin(
    tmp_path: Path,
    pytester: pytest.Pytester,
    make_board: MakeBoard,
    broker: Mosquitto,
    bundle: Bundle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    board = make_board("bench-post")
    dev = _dev(board)
    sim_fixture = SimFixture([board])
    home = tmp_path / "station"
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    try:
        bench = _bench_file(
            pytester.path,  # inside the inner session's root: pytest looks for its ini from there
            broker.address,
            sim_fixture.port,
            [{"id": dev, "channel": 0, "console": {"path": board.console_path}}],
            {
                "home": str(home),
                "passphrase_env": PASSPHRASE_ENV,
                "bundle": str(bundle.root),
                "venue": VENUE,
                "zone": ZONE,
                "broker": f"127.0.0.1:{broker.port}",
            },
        )
        pytester.makepyfile(
            f"""
            def test_flash(rig):
                dut = rig.dut({dev!r})
                result = dut.flash()
                assert result.device == dut.id and result.changed and not result.resumed
            """
        )
        result = pytester.runpytest("-p", "no:cacheprovider", "--rig", str(bench))
        result.assert_outcomes(passed=1)
    finally:
        sim_fixture.close()
    board.wait_console(f"alarm_post: {dev} boot", timeout=10)
    with Workspace(home, passphrase=PASSPHRASE) as ws:  # the bench's home has the device, provisioned
        rec = ws.inventory.device(board_uid(board.name).hex())
        assert rec is not None and (rec["id"], rec["state"], rec["venue"]) == (dev, "provisioned", VENUE)
    assert PASSPHRASE not in bench.read_text()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"passphrase": PASSPHRASE}, "flasher.passphrase: the passphrase never goes into the bench file"),
        ({"bundle": None}, "flasher.bundle: missing or not text"),
        ({"bundle": "nowhere"}, "flasher.bundle: nowhere: not a bundle"),
        ({"broker": "gateway.local"}, "flasher.broker: expected HOST:PORT, got 'gateway.local'"),
        (
            {"passphrase_env": "GE_TEST_UNSET_PASSPHRASE"},
            "flasher.passphrase_env: $GE_TEST_UNSET_PASSPHRASE is not set",
        ),
        ({"passphrase_env": PASSPHRASE}, "flasher.passphrase_env: expected the name of an environment variable"),
        ({"zone": None}, "flasher.zone: missing or not text"),
        ({"kind": "wristband"}, "flasher.kind: 'wristband', but the bundle"),
        ({"transport": "ble"}, "flasher.transport: expected mqtt or uart"),
        ({"colour": "red"}, "flasher: unknown key colour"),
        ({"channels": ["smoke:smoke"]}, "flasher.channels: --channel is for --kind sensor only, not alarm_post"),
        ({"channels": "smoke:smoke"}, "flasher.channels: expected a list of NAME:TYPE"),
        ({"home": "WRONG-PASSPHRASE"}, "flasher.passphrase_env: "),  # and "wrong passphrase", below
    ],
)
def test_bench_file_flasher_errors_name_the_file_and_key(
    tmp_path: Path, bundle: Bundle, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], needle: str
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("GE_TEST_UNSET_PASSPHRASE", raising=False)
    flasher: dict[str, Any] = {
        "home": str(tmp_path / "station"),
        "passphrase_env": PASSPHRASE_ENV,
        "bundle": str(bundle.root),
        "venue": VENUE,
        "zone": ZONE,
        "broker": "127.0.0.1:1883",
    }
    if change.get("home") == "WRONG-PASSPHRASE":  # a home made before with another passphrase
        Workspace(tmp_path / "other", create=True, passphrase="another passphrase").close()
        change = {"home": str(tmp_path / "other")}
        needle += f"{tmp_path / 'other' / 'inventory.ge'}: wrong passphrase"
    flasher.update(change)
    flasher = {k: v for k, v in flasher.items() if v is not None}
    bench = _bench_file(tmp_path, ("127.0.0.1", 1), "/dev/null", [], flasher)
    with pytest.raises(pytest.UsageError) as caught:
        load_bench(bench)
    message = str(caught.value)
    assert message.startswith(f"{bench}: flasher"), message
    assert needle in message, message
    assert PASSPHRASE not in message
