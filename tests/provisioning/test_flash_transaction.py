"""A flash is a transaction on the board too: every way a re-flash can fail, against a running
virtual post (the MicroPython unix port on a pty, real Mosquitto brokers, the real agent and
central's verifier), leaves the post running the firmware it ran before, and the post still
delivers an alarm afterwards; the inventory says what the board runs. Then the re-flash that
succeeds switches the post to the new set and keeps the old one as its fallback. The switch
itself (firmware/fwswitch.py) is cut at every move under MicroPython and finished by the next
start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil_tests.sim.board import VirtualBoard, board_uid
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.relay import SerialRelay
from hil_tests.sim.tools import FIRMWARE_DIR, wait_until
from provisioning.bundle import Bundle, build_bundle
from tests.conftest import MakeBoard
from tests.provisioning.conftest import PASSPHRASE, provision, run_tool
from tests.test_rig_flasher import STUCK_LED_HAL

VENUE, ZONE, GW = "venue-1", "hall", "GW-1"


def _variant(base: Path, name: str, edit: tuple[str, str] | None = None) -> Bundle:
    """A bundle of a copy of the firmware tree, with one file replaced."""
    tree = base / name / "firmware"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if edit is not None:
        (tree / edit[0]).write_text(edit[1])
    return build_bundle("alarm_post", base / name / "bundle", root=tree)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    base = tmp_path_factory.mktemp("bundles")
    launch = (FIRMWARE_DIR / "launch.py").read_text()
    app = (FIRMWARE_DIR / "apps" / "alarm_post" / "app.py").read_text()
    return {
        "a": build_bundle("alarm_post", base / "a"),
        # the next release: launch.py with one more line (another .mpy, another bundle id)
        "b": _variant(base, "b", ("launch.py", "# release b\n" + launch)),
        # a release whose hal has a dead green LED: its self-test fails
        "broken": _variant(base, "broken", ("hal/__init__.py", STUCK_LED_HAL)),
        # a release that passes its self-test but whose app crashes at start
        "crashes": _variant(
            base,
            "crashes",
            (
                "apps/alarm_post/app.py",
                app.replace("    AlarmPost(cfg, hal.Board()).run()", "    raise RuntimeError('boom')"),
            ),
        ),
    }


def _args(port: str, bundle: Bundle, broker: tuple[str, int]) -> list[str]:
    return [
        "flash", "--kind", "alarm_post", "--venue", VENUE, "--zone", ZONE,
        "--broker", f"{broker[0]}:{broker[1]}", "--bundle", str(bundle.root), "--port", port,
    ]  # fmt: skip


class Post:
    """One provisioned post reporting through the agent to central's verifier."""

    def __init__(self, board: VirtualBoard, home: Path, verifier: CentralVerifier) -> None:
        self.board = board
        self.home = home
        self.verifier = verifier
        self.dev = "AP-" + board_uid(board.name).hex().upper()

    def record(self) -> dict[str, object]:
        out = provision(self.home, "export", "--format", "json")
        assert out.returncode == 0, out.stderr
        return next(r for r in json.loads(out.stdout) if r["id"] == self.dev)

    def running(self) -> str:
        return str(json.loads((self.board.flash_dir / "manifest.json").read_text())["bundle"])

    def alarm_gets_through(self) -> None:
        """The app runs (connected again if it was stopped) and a press reaches central."""
        self.board.wait_console("alarm_post: connected", timeout=20, since=self._since)
        before = len(self.verifier.events(device=self.dev, type_name="ALARM"))
        self.board.click()
        self.board.wait_led("green", timeout=20)
        assert self.verifier.wait_for(
            lambda: len(self.verifier.events(device=self.dev, type_name="ALARM")) == before + 1, 20
        )
        self.mark()

    def mark(self) -> None:
        self._since = self.board.console_offset

    _since = 0


@pytest.fixture
def post(
    tmp_path: Path, make_board: MakeBoard, broker_pair: tuple[Mosquitto, Mosquitto], bundles: dict[str, Bundle]
) -> Iterator[Post]:
    local, central = broker_pair
    home = tmp_path / "station"
    board = make_board("post-t")
    first = provision(home, *_args(board.console_path, bundles["a"], local.address), timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    agent = AgentProcess(tmp_path / "gw", local.address, central.address, [], gateway_id=GW, venue=VENUE)
    pub = run_tool("agent", "devices", "key", "--config", str(agent.config_file)).stdout.split(":", 1)[0]
    sealed = tmp_path / "devices.ge"
    assert provision(home, "export", "--format", "gateway", "--gateway-key", pub, "--out", str(sealed)).returncode == 0
    assert run_tool("agent", "devices", "import", "--config", str(agent.config_file), str(sealed)).returncode == 0
    verifier = CentralVerifier(central.address, [agent.public_key_file])
    try:
        verifier.start()
        agent.start()
        agent.wait_log("uplink_up")
        yield Post(board, home, verifier)
    finally:
        verifier.stop()
        agent.kill()


def _staged(post: Post, bundle: Bundle) -> Callable[[], bool]:
    """True once the new release's launch.mpy is staged on the board."""
    staged = post.board.flash_dir / "fw_new" / "launch.mpy"
    new_launch = bundle.read("launch.mpy")
    return lambda: staged.exists() and staged.read_bytes() == new_launch


def _interrupted_flash(
    post: Post, bundle: Bundle, local: tuple[str, int], cut: Callable[[subprocess.Popen[str]], None], unplug: bool
) -> tuple[int, str, str]:
    """A flash over a cable at about half of 115200 baud, cut by `cut` (after pulling the cable,
    with `unplug`) once the new set is being staged; (exit status, stdout, stderr). The cable
    holds the tool's next command from the moment launch.mpy is staged until the cut, so the
    flash cannot run past the staging however slow the machine is."""
    shutil.rmtree(post.board.flash_dir / "fw_new", ignore_errors=True)  # nothing staged yet
    relay = SerialRelay(post.board.console_path, rate=5_000, hold_when=_staged(post, bundle))
    args = [sys.executable, "-m", "provisioning", "--home", str(post.home), *_args(relay.path, bundle, local)]
    env = {**os.environ, "GE_PROVISION_PASSPHRASE": PASSPHRASE}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(lambda: relay.holding.is_set() or proc.poll() is not None, 60, "the new release's launch.mpy staged")
        if proc.poll() is None:
            if unplug:
                relay.unplug()
            cut(proc)
            relay.release()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        relay.close()
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in stdout + stderr
    return proc.returncode, stdout, stderr


def test_every_failed_reflash_leaves_the_post_delivering_alarms(
    post: Post, bundles: dict[str, Bundle], broker_pair: tuple[Mosquitto, Mosquitto]
) -> None:
    local = broker_pair[0].address
    a, b = bundles["a"].bundle_id, bundles["b"].bundle_id
    post.alarm_gets_through()
    assert post.record()["bundle"] == a

    # 1. the new release fails its self-test: never switched to, the post restarted into A
    post.mark()
    out = provision(post.home, *_args(post.board.console_path, bundles["broken"], local), timeout=120)
    assert out.returncode == 1 and f"{post.dev} FAILED at selftest: hal: output led_g" in out.stdout, out.stdout
    assert "restarted into the firmware it ran before" in out.stdout and "Traceback" not in out.stdout + out.stderr
    assert post.running() == a and (post.board.flash_dir / "fw_new").is_dir()
    post.alarm_gets_through()
    rec = post.record()
    assert rec["bundle"] == a and rec["state"] == "provisioned" and "selftest" in str(rec["last_failure"])

    # 2. the cable is pulled while the set is being staged: the USB-powered post loses power
    # with it and comes back on A; the inventory still says A
    post.mark()

    def pulled(_proc: subprocess.Popen[str]) -> None:
        post.board.power_cut()

    rc, stdout, _ = _interrupted_flash(post, bundles["b"], local, pulled, unplug=True)
    assert rc == 1 and re.search(rf"{post.dev} FAILED at (copy|key): .*went away", stdout), stdout
    post.board.power_on()
    post.alarm_gets_through()
    assert post.running() == a and post.record()["bundle"] == a

    # 3. Ctrl-C during the staging: the flash stops, the post is restarted into A
    post.mark()

    def ctrl_c(proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGINT)

    rc, stdout, stderr = _interrupted_flash(post, bundles["b"], local, ctrl_c, unplug=False)
    assert rc == 130 and "stopped (Ctrl-C)" in stderr, stdout + stderr
    assert re.search(rf"{post.dev} FAILED at (copy|key): stopped \(Ctrl-C\)", stdout), stdout
    assert "restarted into the firmware it ran before" in stdout
    assert post.running() == a and post.record()["bundle"] == a
    post.alarm_gets_through()

    # 4. the release that works: switched to, A kept as the fallback, alarms still delivered
    post.mark()
    out = provision(post.home, *_args(post.board.console_path, bundles["b"], local), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert post.running() == b
    assert json.loads((post.board.flash_dir / "fw_old" / "manifest.json").read_text())["bundle"] == a
    post.alarm_gets_through()
    rec = post.record()
    assert (rec["bundle"], rec["fallback"]) == (b, a)

    # 5. a release that passes its self-test but does not start: switched to, seen failing at
    # the restart, and rolled back to B (the fallback) at once
    post.mark()
    out = provision(post.home, *_args(post.board.console_path, bundles["crashes"], local), timeout=120)
    assert out.returncode == 1 and f"{post.dev} FAILED at restart: the board did not start its app" in out.stdout
    assert "restarted into the firmware it ran before" in out.stdout, out.stdout
    assert post.running() == b and post.record()["bundle"] == b
    post.alarm_gets_through()
    assert post.verifier.problems() == []


def test_a_sensor_reflash_with_a_bad_channel_is_refused_before_the_board_is_touched(
    tmp_path: Path, make_board: MakeBoard
) -> None:
    home = tmp_path / "station"
    board = make_board("sens-t")
    base = ["flash", "--kind", "sensor", "--venue", VENUE, "--zone", "kitchen", "--broker", "127.0.0.1:1883"]
    base += ["--port", board.console_path]
    ok = provision(home, *base, "--channel", "smoke:smoke", timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    config = (board.flash_dir / "config.json").read_bytes()
    board.wait_console("sensor: ", timeout=10)
    mark = board.console_offset
    bad = provision(home, *base, "--channel", "smoke:smoke:on=5000", timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "--channel 'smoke:smoke:on=5000': detector: on=5000 outside lo..hi (0..2000)" in bad.stderr, bad.stderr
    assert (board.flash_dir / "config.json").read_bytes() == config
    assert b"stopped from the console" not in board.console_output(mark)  # never interrupted


# --- the switch under power cuts (firmware/fwswitch.py on the MicroPython unix port) ----------

_CUT = """\
import sys
sys.path.insert(0, %(fw)r)
import fwswitch
n = [0]
real = fwswitch._rename
def cut(a, b):
    if n[0] == %(k)d:
        raise SystemExit(3)
    n[0] += 1
    real(a, b)
fwswitch._rename = cut
print('moved', fwswitch.run())
"""


def _switch(micropython: str, root: Path) -> subprocess.CompletedProcess[str]:
    """What boot.py does at a start: fwswitch.run() in the flash root."""
    code = f"import sys\nsys.path.insert(0, {str(FIRMWARE_DIR)!r})\nimport fwswitch\nprint(fwswitch.run())"
    return subprocess.run([micropython, "-c", code], cwd=root, capture_output=True, text=True, timeout=30, check=False)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _flash(root: Path) -> None:
    files = {
        "boot.py": "boot", "main.py": "main", "launch.py": "old launch", "config.json": "old config",
        "lib/a.py": "old a", "lib/gone.py": "old gone", "data/outbox": "queued alarm",
        "fw_new/launch.mpy": "new launch", "fw_new/config.json": "new config", "fw_new/lib/a.mpy": "new a",
    }  # fmt: skip
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    plan = {"src": "fw_new", "keep": "fw_old", "set": ["config.json", "launch.mpy", "lib"], "drop": ["launch.py"]}
    (root / "fw.switch").write_text(json.dumps(plan))


def test_a_switch_cut_at_every_move_is_finished_by_the_next_start(tmp_path: Path, micropython: str) -> None:
    want = {
        "boot.py": "boot", "main.py": "main", "config.json": "new config", "launch.mpy": "new launch",
        "lib/a.mpy": "new a", "data/outbox": "queued alarm",
        "fw_old/launch.py": "old launch", "fw_old/config.json": "old config", "fw_old/lib/a.py": "old a",
        "fw_old/lib/gone.py": "old gone",
    }  # fmt: skip
    for k in range(6):  # 4 moves: launch.py dropped, config.json, launch.mpy, lib; and none cut
        root = tmp_path / f"cut{k}"
        root.mkdir()
        _flash(root)
        script = root.parent / f"cut{k}.py"
        script.write_text(_CUT % {"fw": str(FIRMWARE_DIR), "k": k})
        cut = subprocess.run(
            [micropython, str(script)], cwd=root, capture_output=True, text=True, timeout=30, check=False
        )
        assert cut.returncode in (0, 3), cut.stdout + cut.stderr
        if cut.returncode == 3:  # the power came back: boot.py runs the switch again
            again = _switch(micropython, root)
            assert again.returncode == 0, again.stdout + again.stderr
        assert _tree(root) == want, (k, _tree(root))
    # an uncommitted switch (the marker never renamed into place) is not taken
    root = tmp_path / "uncommitted"
    root.mkdir()
    _flash(root)
    (root / "fw.switch").rename(root / "fw.switch.tmp")
    run = _switch(micropython, root)
    assert run.stdout.strip() == "None"
    assert (root / "launch.py").read_text() == "old launch" and not (root / "fw.switch.tmp").exists()
