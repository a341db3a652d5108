"""guardian-provision flash on virtual boards (the MicroPython unix port on ptys, driven through
mpremote's transport), end to end with real Mosquitto brokers, the agent and central's verifier:
five boards in parallel pass their self-test, their enrollment bundle is imported at the gateway
and their first alarms verify at central; a re-flash copies nothing; a flash killed with SIGKILL
completes on the next run; a revoked device's frames are rejected.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.central.keys import generate_central_key
from hil_tests.sim.board import VirtualBoard, board_uid
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from provisioning.bundle import build_bundle
from provisioning.console import MANAGED_DIRS
from tests.conftest import MakeBoard
from tests.provisioning.conftest import PASSPHRASE, assert_user_error, provision, run_tool

VENUE, ZONE, GW = "venue-1", "hall", "GW-1"


def _dev(board: VirtualBoard) -> str:
    return "AP-" + board_uid(board.name).hex().upper()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle for the module: the firmware tree may change while the tests run."""
    return build_bundle("alarm_post", tmp_path_factory.mktemp("bundle") / "alarm_post").root


def _flash_args(boards: list[VirtualBoard], broker: tuple[str, int], bundle: Path) -> list[str]:
    args = ["flash", "--kind", "alarm_post", "--venue", VENUE, "--zone", ZONE, "--broker", f"{broker[0]}:{broker[1]}"]
    args += ["--bundle", str(bundle)]
    for b in boards:
        args += ["--port", b.console_path]
    return args


def _check_flashed(first: subprocess.CompletedProcess[str], boards: list[VirtualBoard], home: Path) -> None:
    """Every board flashed, labelled and restarted into its app; its key nowhere but in its flash."""
    assert first.returncode == 0, first.stdout + first.stderr
    for b in boards:
        dev = _dev(b)
        assert f"{b.console_path}: {dev} ok (new;" in first.stdout
        assert re.search(rf"label: {dev}  alarm_post  {VENUE}/{ZONE}  check [A-Z2-7]{{6}}", first.stdout)
        for ext in ("png", "svg", "txt"):
            assert (home / "labels" / f"{dev}.{ext}").is_file()
        b.wait_console(f"alarm_post: {dev} boot", timeout=10)  # restarted into the app
        cfg = json.loads((b.flash_dir / "config.json").read_text())
        assert cfg["id"] == dev and cfg["broker"] == "127.0.0.1"
        assert cfg["key"] not in first.stdout + first.stderr
        assert cfg["key"] not in (home / "audit.log").read_text()
        assert cfg["key"] not in (home / "labels" / f"{dev}.txt").read_text()
        assert not (b.flash_dir / "lib" / "cbor.py").exists() and (b.flash_dir / "lib" / "cbor.mpy").exists()
    assert first.stdout.count("selftest") == 0  # the self-test line stays between tool and board
    log = (home / "audit.log").read_text()
    assert log.count('"action":"flash.register"') == len(boards)


def _gateway_with_the_devices(
    tmp_path: Path, home: Path, local: Mosquitto, central: Mosquitto, central_key: Path
) -> AgentProcess:
    """The gateway: its sealing key, the station's devices sealed to it and imported before it starts."""
    agent = AgentProcess(
        tmp_path / "gw", local.address, central.address, [], gateway_id=GW, venue=VENUE,
        central_options=f'command_key = "{central_key}.pub"',
    )  # fmt: skip
    key_out = run_tool("agent", "devices", "key", "--config", str(agent.config_file))
    assert key_out.returncode == 0, key_out.stderr
    pub = key_out.stdout.split(":", 1)[0]
    sealed = tmp_path / "devices.ge"
    export = provision(home, "export", "--format", "gateway", "--gateway-key", pub, "--out", str(sealed))
    assert export.returncode == 0 and "5 devices sealed to gateway GW-1" in export.stdout, export.stderr
    imported = run_tool("agent", "devices", "import", "--config", str(agent.config_file), str(sealed))
    assert imported.returncode == 0 and "5 devices added" in imported.stdout, imported.stderr
    return agent


def test_five_boards_flashed_in_parallel_alarm_verified_at_central_then_revoked(
    tmp_path: Path, make_board: MakeBoard, broker_pair: tuple[Mosquitto, Mosquitto], bundle: Path
) -> None:
    local, central = broker_pair
    home = tmp_path / "station"
    boards = [make_board(f"post-{n}") for n in range(5)]
    first = provision(home, *_flash_args(boards, local.address, bundle), timeout=120)
    _check_flashed(first, boards, home)

    again = provision(home, *_flash_args(boards, local.address, bundle), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("ok (resumed; 0 files copied, 0 removed)") == 5, again.stdout
    assert provision(home, "audit", "verify").returncode == 0

    central_key = tmp_path / "central.key"
    generate_central_key(central_key, "central")
    agent = _gateway_with_the_devices(tmp_path, home, local, central, central_key)
    verifier = CentralVerifier(central.address, [agent.public_key_file])
    try:
        verifier.start()
        agent.start()
        agent.wait_log("uplink_up")
        for b in boards:
            b.wait_console("alarm_post: connected", timeout=15)
            b.click()
        for b in boards:
            b.wait_led("green", timeout=20)
        for b in boards:
            assert verifier.wait_for(lambda b=b: len(verifier.events(device=_dev(b), type_name="ALARM")) == 1, 15)
        assert verifier.problems() == []

        victim = boards[0]
        revoke = provision(
            home, "revoke", _dev(victim), "--broker", f"127.0.0.1:{central.port}", "--central-key", str(central_key),
            "--gateway", GW, "--venue", VENUE,
        )  # fmt: skip
        assert revoke.returncode == 0, revoke.stderr
        agent.wait_log(f"device={_dev(victim)}")
        mark = victim.console_offset
        victim.click()
        victim.wait_console("type 1 saved", since=mark)
        agent.wait_log("reason=revoked")
        listed = provision(home, "export", "--format", "csv").stdout
        assert f"{_dev(victim)},alarm_post" in listed and ",revoked," in listed
        # a revoked board is not keyed again
        refused = provision(home, *_flash_args([victim], local.address, bundle), timeout=60)
        assert refused.returncode == 1 and "FAILED at identify" in refused.stdout and "was revoked" in refused.stdout
        assert len(verifier.events(device=_dev(victim), type_name="ALARM")) == 1
    finally:
        verifier.stop()
        agent.kill()


def test_flash_killed_mid_copy_completes_on_the_next_run(tmp_path: Path, make_board: MakeBoard, bundle: Path) -> None:
    home = tmp_path / "station"
    board = make_board("post-k")
    args = [
        sys.executable,
        "-m",
        "provisioning",
        "--home",
        str(home),
        *_flash_args([board], ("127.0.0.1", 1883), bundle),
    ]
    args += ["--chunk", "256"]
    env = {**os.environ, "GE_PROVISION_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 30
        lib = board.flash_dir / "fw_new" / "lib"
        # kill once the staging is under way: a few modules staged, the manifest (last) not yet
        while not (lib.is_dir() and len(list(lib.iterdir())) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the flash ended before it could be killed"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert not (board.flash_dir / "manifest.json").exists() and not (board.flash_dir / "config.json").exists()
    assert not (board.flash_dir / "fw_new" / "manifest.json").exists()  # staged, never switched to

    rerun = provision(home, *_flash_args([board], ("127.0.0.1", 1883), bundle), timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    dev = _dev(board)
    m = re.search(rf"{dev} ok \(resumed; (\d+) files copied", rerun.stdout)
    assert m, rerun.stdout
    total = len(json.loads((bundle / "manifest.json").read_text())["files"]) + 2
    assert 0 < int(m.group(1)) < total  # what the killed run staged is not sent again
    board.wait_console(f"alarm_post: {dev} boot", timeout=10)
    # no half-copied file left where the flash writes (the root and the managed directories);
    # data/ is the running app's own store, whose atomic writes use .tmp files of their own
    assert not (board.flash_dir / "fw_new").exists() and not (board.flash_dir / "fw.switch").exists()
    flashed = [board.flash_dir, *(board.flash_dir / d for d in MANAGED_DIRS)]
    assert not [p for d in flashed for p in (d.glob("*.tmp") if d == board.flash_dir else d.rglob("*.tmp"))]
    log = (home / "audit.log").read_text()
    assert '"action":"flash.begin"' in log and '"action":"flash.resume"' in log
    assert log.count('"action":"flash.register"') == 1


def test_failing_board_is_reported_and_others_complete(tmp_path: Path, make_board: MakeBoard, bundle: Path) -> None:
    home = tmp_path / "station"
    good = make_board("post-g")
    master, slave = os.openpty()  # a port with nothing behind it
    dead = os.ttyname(slave)
    try:
        proc = provision(home, *_flash_args([good], ("127.0.0.1", 1883), bundle), "--port", dead, timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 1
    assert f"{_dev(good)} ok (new;" in proc.stdout
    # a port where nothing answers is given up after a few silent tries, not the line's twenty
    assert f"{dead}: no device FAILED at connect: no MicroPython raw REPL answers on {dead}: nothing came back" in (
        proc.stdout
    )
    assert "1 of 2 devices failed" in proc.stderr and "Traceback" not in proc.stderr
    assert '"action":"flash.failed"' in (home / "audit.log").read_text()


def test_image_without_a_chip_fails_at_the_image_step(tmp_path: Path) -> None:
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9" + bytes(1023))
    master, slave = os.openpty()
    try:
        args = ["flash", "--kind", "alarm_post", "--venue", VENUE, "--zone", ZONE, "--broker", "127.0.0.1:1883"]
        proc = provision(tmp_path / "h", *args, "--port", os.ttyname(slave), "--image", str(image), timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 1
    assert "FAILED at image: no Espressif chip answered on" in proc.stdout, proc.stdout
    proc = provision(tmp_path / "h", *args, "--port", "/dev/null", "--image", str(tmp_path / "missing.bin"))
    assert_user_error(proc, "guardian-provision", "--image", "missing.bin")
