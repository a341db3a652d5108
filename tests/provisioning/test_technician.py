"""The technician's day on the practice venue (hil_tests/practice.py: blank virtual boards, the
venue's broker and gateway with its status page): the online check says why a first frame is
missing and then that it arrived; a band is registered with its resident and one venue
description becomes the gateway's venue file; a post moves zone without being revoked, the
gateway learns it from a sealed export; labels and a sheet people can read; names in any
script and local times in the export. And a noisy cable (about one byte in 5,000 lost) still
completes a flash; an error on the board (a full flash) arrives as its one line; a wrong port
and a broker typo are named before anything is touched.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.gateway.wristbands import venue as gateway_venue
from hil_tests.practice import PracticeVenue, Tray
from hil_tests.sim.board import board_uid
from hil_tests.sim.relay import SerialRelay
from hil_tests.sim.tools import free_port
from tests.conftest import MakeBoard, MakeFilesystem
from tests.provisioning.conftest import assert_user_error, provision

PROG = "guardian-provision"


@pytest.fixture
def venue(tmp_path: Path, micropython: str) -> Iterator[PracticeVenue]:
    with PracticeVenue(tmp_path / "practice", Tray(posts=1, sensors=0, bands=1), micropython) as v:
        v.start()
        yield v


def _gateway(venue: PracticeVenue) -> None:
    """The gateway's side: what landed in its inbox is imported, a rebuilt venue file loaded."""
    said: list[str] = []
    venue.watch(said.append)
    assert said and said[-1] == "gateway: restarted", said


def _labels_and_export(home: Path, tmp_path: Path, flash_dir: Path, dev: str) -> None:
    """Labels people read, a sheet for the tray; names and local times in the export; no key."""
    svg = (home / "labels" / f"{dev}.svg").read_text(encoding="utf-8")
    assert dev in svg and "前台" in svg and "alarm post" in svg and re.search(r"check [A-Z2-7]{6}", svg)
    sheet = provision(home, "labels", "--out", str(tmp_path / "tray.pdf"))
    assert sheet.returncode == 0 and "2 labels on 1 A4 page(s)" in sheet.stdout, sheet.stdout + sheet.stderr
    assert (tmp_path / "tray.pdf").read_bytes().startswith(b"%PDF")
    csv = provision(home, "export", "--format", "csv").stdout
    row = next(line for line in csv.splitlines() if line.startswith(dev))
    assert ",lobby," in row and ",前台," in row and re.search(r",\d{4}-\d\d-\d\d \d\d:\d\d [+-]\d{4},", row)
    full_key = json.loads((flash_dir / "config.json").read_text())["key"]
    for text in (svg, csv, (home / "labels" / f"{dev}.txt").read_text(encoding="utf-8")):
        assert full_key not in text


def test_online_check_move_venue_file_and_labels_on_the_practice_venue(venue: PracticeVenue, tmp_path: Path) -> None:
    home = tmp_path / "station"
    post, band = venue.boards["post-1"], venue.boards["band-1"]
    dev = "AP-" + board_uid(post.name).hex().upper()
    broker = f"{venue.local.address[0]}:{venue.local.address[1]}"
    online = ["--gateway", venue.page, "--gateway-token", str(venue.token_file), "--online-timeout", "6"]
    flash = ["flash", "--kind", "alarm_post", "--venue", "practice", "--zone", "hall", "--zone-name", "大厅"]
    flash += ["--broker", broker, "--port", post.console_path, *online]

    # a broker typo, and a broker that is not there, are named before a board is touched
    typo = provision(home, *[a if a != broker else "127.0.0.1.5:1883" for a in flash])
    assert_user_error(typo, PROG, "--broker '127.0.0.1.5:1883': an IPv4 address has four numbers")
    gone = provision(home, *[a if a != broker else f"127.0.0.1:{free_port()}" for a in flash])
    assert_user_error(gone, PROG, "no MQTT broker answers at 127.0.0.1:", "nothing was flashed")
    assert not home.exists() or not (home / "audit.log").exists()

    # flashed, but the gateway does not know the device yet: the cause is named
    first = provision(home, *flash, timeout=120)
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"{dev}: flashed, but not heard by the gateway within 6 s: the gateway does not know {dev}" in first.stdout
    seal = ["export", "--format", "gateway", "--gateway-key", str(venue.seal_key)]
    assert provision(home, *seal, "--out", str(venue.dir / "inbox" / "devices.ge")).returncode == 0
    _gateway(venue)
    again = provision(home, *flash, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{dev} ok (resumed; 0 files copied, 0 removed)" in again.stdout
    assert re.search(rf"{dev}: online: its first frame reached the gateway \d+\.\d s after its restart", again.stdout)

    # the band, registered with its resident; the venue file made from the one description
    bflash = ["flash", "--kind", "wristband", "--venue", "practice", "--zone", "hall", "--port", band.console_path]
    made = provision(home, *bflash, "--resident", "Room 4", timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    wb = "WB-" + board_uid(band.name).hex().upper()
    built = provision(home, "venue", "build", str(venue.dir / "venue.yaml"), "--out", str(venue.venue_file))
    assert built.returncode == 0, built.stderr
    loaded = gateway_venue.load(venue.venue_file)
    assert loaded.residents[wb].reference == "Room 4" and loaded.zones["hall"].name == "大厅"
    assert provision(home, *seal, "--out", str(venue.dir / "inbox" / "devices.ge")).returncode == 0
    _gateway(venue)

    # the post moves to the lobby (前台) without being revoked; the gateway's registry follows
    moved = provision(
        home, "move", dev, "--zone", "lobby", "--zone-name", "前台",
        "--gateway-key", str(venue.seal_key), "--out", str(venue.dir / "inbox" / "moved.ge"),
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert f"{dev}: moved from practice/hall (大厅) to practice/lobby (前台)" in moved.stdout
    _gateway(venue)
    registry = tomllib.loads((venue.agent.devices_file).read_text())
    assert {d["id"]: d["zone"] for d in registry["device"]}[dev] == "lobby"
    assert '"action":"move"' in (home / "audit.log").read_text()
    resumed = provision(home, *[a if a not in ("hall", "大厅") else {"hall": "lobby"}.get(a, "前台") for a in flash])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr  # flashing again in the new zone: no revoke

    _labels_and_export(home, tmp_path, post.flash_dir, dev)


def test_a_noisy_cable_completes_the_flash_and_says_so(tmp_path: Path, make_board: MakeBoard, seed: int) -> None:
    board = make_board("post-n")
    dev = "AP-" + board_uid(board.name).hex().upper()
    with SerialRelay(board.console_path, loss=1 / 5000, seed=seed) as cable:
        out = provision(
            tmp_path / "station", "flash", "--kind", "alarm_post", "--venue", "v", "--zone", "z",
            "--broker", "127.0.0.1:1883", "--port", cable.path, timeout=240,
        )  # fmt: skip
        lost = cable.dropped
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{dev} ok (new;" in out.stdout and "Traceback" not in out.stdout + out.stderr
    if lost:  # the line's bytes are random; most runs lose a dozen or more
        assert "line errors recovered: check the cable" in out.stdout, (lost, out.stdout)
    board.wait_console(f"alarm_post: {dev} boot", timeout=10)


def test_a_byte_lost_in_the_raw_repls_bootstrap_is_a_line_error(tmp_path: Path, make_board: MakeBoard) -> None:
    # `exec` arriving as `xec` is still valid Python: a bootstrap run as it arrived would make
    # every later command fail on the board as if the board were broken
    board = make_board("post-x")
    dev = "AP-" + board_uid(board.name).hex().upper()
    with SerialRelay(board.console_path, cut=b"exec(c") as cable:
        out = provision(
            tmp_path / "station", "flash", "--kind", "alarm_post", "--venue", "v", "--zone", "z",
            "--broker", "127.0.0.1:1883", "--port", cable.path, timeout=120,
        )  # fmt: skip
        assert cable.cut is None and cable.dropped == 1, "the byte was not on the line"
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{dev} ok (new;" in out.stdout and "line errors recovered: check the cable" in out.stdout, out.stdout


def test_an_exception_on_the_board_reaches_the_technician_as_one_line(
    tmp_path: Path, small_fs: MakeFilesystem, make_board: MakeBoard
) -> None:
    # a board whose flash is full: its first write raises OSError on the board, which comes
    # back as the board's own one line, not as the MicroPython traceback around it
    flash = small_fs("boards/post-f/flash", 256 << 10, "tmpfs")  # make_board's flash directory
    board = make_board("post-f")
    flash.hog()
    dev = "AP-" + board_uid(board.name).hex().upper()
    out = provision(
        tmp_path / "station", "flash", "--kind", "alarm_post", "--venue", "v", "--zone", "z",
        "--broker", "127.0.0.1:1883", "--port", board.console_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    # the board's str() of it is `OSError: 28` (its errno table lacks ENOSPC): the host names it
    says = "the board says: OSError: [Errno 28] ENOSPC (No space left on device)"
    last = out.stdout.splitlines()[-1]
    assert f"{board.console_path}: {dev} FAILED at copy: {says}" in last, out.stdout
    # a blank board has nothing it ran before to go back to, and the line says so
    assert "the board holds no firmware yet" in last and "ran before" not in last, last
    assert "Traceback" not in out.stdout + out.stderr and 'File "<stdin>"' not in out.stdout
    failed = [json.loads(line) for line in (tmp_path / "station" / "audit.log").read_text().splitlines()][-1]
    assert failed["action"] == "flash.failed" and failed["detail"]["reason"] == says


def test_a_wrong_port_is_answered_with_the_ports_there_are(tmp_path: Path) -> None:
    out = provision(
        tmp_path / "h", "flash", "--kind", "alarm_post", "--venue", "v", "--zone", "z",
        "--broker", "127.0.0.1:1883", "--port", "/dev/ttyUSB97",
    )  # fmt: skip
    assert_user_error(out, PROG, "--port /dev/ttyUSB97: no such port", "guardian-provision ports")
    listed = provision(tmp_path / "h", "ports")
    assert listed.returncode == 0 and "serial ports" in listed.stdout
