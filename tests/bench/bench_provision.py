"""technician_steps: the time of each technician step on virtual boards, over a 115200-baud line.

On the practice venue (hil_tests/practice.py: a blank virtual post, the venue's broker, the
gateway with its status page), each run times:

- bundle: `build_bundle` of the alarm post (mpy-cross on every module);
- flash, new board: each step of the transaction (connect, identify, copy, key, selftest,
  switch, register, label, restart), in this process, through a cable held to 11,500 bytes
  a second (hil_tests/sim/relay.py), which is what 115200 baud carries;
- re-flash of a new release (one module changed: the rest copied on the board, not sent),
  and re-flash of the same release (nothing to copy): total each;
- online: from the post's restart to its first frame on the gateway's status page, after
  its key was imported (the practice gateway's inbox), and how long the check waited after
  the flash returned;
- label: the label's SVG, PNG and text for one device; sheet: a PDF sheet of one label;
- move: `guardian-provision move` as a process (the inventory's passphrase KDF included).

The value is the new board's flash, seconds (median over the runs); each step is a median.
Figures depend on the line's speed: a real board's flash writes its own flash too, and its
self-test runs at a board's speed (docs/provisioning.md quotes these runs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hil_tests.practice import PracticeVenue, Tray
from hil_tests.sim.relay import SerialRelay
from provisioning.bundle import build_bundle
from provisioning.flash import FlashOptions, Progress, flash_one
from provisioning.labels import make_label, write_label, write_sheet
from provisioning.online import StatusPage, wait_heard
from provisioning.workspace import Workspace
from tests.bench.rig import median, progress

NAME = "technician_steps"
NAMES = (NAME,)
BAUD_BYTES_S = 11_500
PASSPHRASE = "practice passphrase"


class Steps(Progress):
    """Each step's start time; durations when it ends."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def step(self, name: str, device: str | None = None) -> None:
        self.marks.append((name, time.monotonic()))

    def durations(self) -> dict[str, float]:
        return {a: tb - ta for (a, ta), (_, tb) in zip(self.marks, self.marks[1:], strict=False)}


def _flash(ws: Workspace, bundle_dir: Path, port: str, broker: tuple[str, int]) -> tuple[dict[str, float], Any]:
    from provisioning.bundle import load_bundle

    steps = Steps()
    opts = FlashOptions("alarm_post", "practice", "hall", broker)
    started = time.monotonic()
    out = flash_one(ws, load_bundle(bundle_dir), opts, port, steps)
    if not out.ok:
        raise RuntimeError(f"flash failed at {out.step}: {out.reason}")
    times = steps.durations()
    times["total"] = time.monotonic() - started
    return times, out


def _release(base: Path) -> Path:
    from hil_tests.sim.tools import FIRMWARE_DIR

    tree = base / "release" / "firmware"
    shutil.copytree(FIRMWARE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tree / "launch.py").write_text("# the next release\n" + (FIRMWARE_DIR / "launch.py").read_text())
    return build_bundle("alarm_post", base / "release" / "bundle", root=tree).root


def _one_run(base: Path) -> dict[str, float]:
    got: dict[str, float] = {}
    t = time.monotonic()
    bundle = build_bundle("alarm_post", base / "bundle").root
    got["bundle"] = time.monotonic() - t
    release = _release(base)
    with PracticeVenue(base / "venue", Tray(posts=1, sensors=0, bands=0)) as venue:
        venue.start()
        post = venue.boards["post-1"]
        with (
            Workspace(base / "station", create=True, passphrase=PASSPHRASE) as ws,
            SerialRelay(post.console_path, rate=BAUD_BYTES_S) as cable,
        ):
            first, _ = _flash(ws, bundle, cable.path, venue.local.address)
            got.update({f"flash.{k}": v for k, v in first.items()})
            got["reflash.new_release"] = _flash(ws, release, cable.path, venue.local.address)[0]["total"]
            got["reflash.same"] = _flash(ws, release, cable.path, venue.local.address)[0]["total"]
        env = {**os.environ, "GE_PROVISION_PASSPHRASE": PASSPHRASE}
        home = ["--home", str(base / "station")]
        seal = [*home, "export", "--format", "gateway", "--gateway-key", str(venue.seal_key)]
        subprocess.run([sys.executable, "-m", "provisioning", *seal, "--out", str(venue.dir / "inbox" / "d.ge")],
                       check=True, env=env, capture_output=True)  # fmt: skip
        venue.watch(lambda _m: None)
        page = StatusPage(venue.page, venue.token_file)
        with Workspace(base / "station", passphrase=PASSPHRASE) as ws:
            restarted = _flash(ws, release, post.console_path, venue.local.address)[1]
        t = time.monotonic()
        heard = wait_heard(page, {restarted.device: restarted.started_at}, "-", 30)
        if not heard[0].ok:
            raise RuntimeError(f"online check: {heard[0].why}")
        got["online.check"] = time.monotonic() - t  # the check's own wait, after the flash returned
        got["online.first_frame"] = heard[0].after_s or 0.0  # restart -> first frame at the gateway
        label = make_label(restarted.uid, restarted.device, "alarm_post", "practice", "hall", "", "大厅")
        t = time.monotonic()
        write_label(base / "labels", label)
        got["label"] = time.monotonic() - t
        t = time.monotonic()
        write_sheet(base / "labels" / "sheet.pdf", [label])
        got["sheet"] = time.monotonic() - t
        t = time.monotonic()
        move = [*home, "move", restarted.device, "--zone", "lobby", "--zone-name", "前台"]
        subprocess.run([sys.executable, "-m", "provisioning", *move], check=True, env=env, capture_output=True)
        got["move"] = time.monotonic() - t
    return got


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    per_run: list[dict[str, float]] = []
    for i in range(runs):
        progress(f"{NAME}: run {i + 1}/{runs}")
        with tempfile.TemporaryDirectory(prefix="ge-bench-tech-") as tmp:
            per_run.append(_one_run(Path(tmp)))
    steps = {k: round(median([r[k] for r in per_run if k in r]), 3) for k in per_run[0]}
    return [
        {
            "name": NAME,
            "value": steps["flash.total"],
            "unit": "s",
            "steps_s": steps,
            "runs": runs,
            "line_bytes_s": BAUD_BYTES_S,
        }
    ]
