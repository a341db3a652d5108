"""The practice venue as a technician starts it (`make practice` runs `guardian-rig practice`;
`guardian-provision practice` runs the same): it prints the commands to rehearse with ports and
files that are there, and Ctrl-C stops it with every board, broker and gateway it started.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

READY = "Ctrl-C here stops the practice venue."
BOARDS = {"post-1", "post-2", "post-3", "sensor-1", "band-1"}  # the default tray


def _descendants(pid: int) -> dict[int, str]:
    """pid -> its start time (field 22 of /proc/PID/stat) for every process below `pid`."""
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                started = _started(child)
                if started is not None:
                    out[child] = started
                    todo.append(child)
    return out


def _started(pid: int) -> str | None:
    """The process's start time, or None once it is gone (a zombie has finished too)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _alive(procs: dict[int, str]) -> list[str]:
    alive = []
    for pid, started in procs.items():
        if _started(pid) == started:  # the same process, not a new one with its pid
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive.append(f"{pid} {cmd[:120]}")
    return alive


def _read_until(proc: subprocess.Popen[bytes], text: str, timeout: float) -> str:
    """The process's output until `text` appears; fails after `timeout` s or when it exits."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} within {timeout} s: {got.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"exited ({proc.wait()}) before {text!r}: {got.decode(errors='replace')}"
            got += chunk
    return got.decode()


def _check_plan(plan: str, workdir: Path) -> None:
    """Every board, the broker, the status page and every file the printed commands name exist."""
    boards = dict(re.findall(r"(\S+) (/dev/\S+)", re.search(r"boards:(.*)", plan)[1]))  # type: ignore[index]
    assert set(boards) == BOARDS, plan
    for path in boards.values():
        assert stat.S_ISCHR(os.stat(path).st_mode), path  # a pty a serial tool opens
    listening = re.findall(r"(broker|status page):? +(?:http://)?([\d.]+):(\d+)", plan)
    assert {name for name, _, _ in listening} == {"broker", "status page"}, plan
    for _, host, port in listening:
        with socket.create_connection((host, int(port)), timeout=5):
            pass  # something listens there
    token = Path(re.search(r"--gateway-token (\S+)", plan)[1])  # type: ignore[index]
    seal = Path(re.search(r"--gateway-key (\S+)", plan)[1])  # type: ignore[index]
    description = Path(re.search(r"venue build (\S+)", plan)[1])  # type: ignore[index]
    for path in (token, seal, description):
        assert path.is_file() and path.is_relative_to(workdir), path
    assert (workdir / "inbox").is_dir()


@pytest.mark.parametrize(
    ("command", "interrupt"),
    [
        (("hil_tests.cli", "practice"), "terminal"),  # make practice; Ctrl-C reaches the foreground group
        (("provisioning", "practice"), "terminal"),
        (("provisioning", "practice"), "pid"),  # kill -INT PID, as a supervisor or an IDE stops it
    ],
    ids=["rig-ctrl-c", "provision-ctrl-c", "provision-sigint-to-pid"],
)
def test_practice_prints_what_to_rehearse_and_ctrl_c_stops_everything(
    tmp_path: Path, command: tuple[str, str], interrupt: str
) -> None:
    workdir = tmp_path / "practice"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GE_PROVISION_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, "--dir", str(workdir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, as a job in a terminal has
    )
    started: dict[int, str] = {}
    try:
        plan = _read_until(proc, READY, timeout=30)
        started = _descendants(proc.pid)
        assert len(started) >= 2 + 1 + len(BOARDS), started  # two brokers, the gateway, the boards
        _check_plan(plan, workdir)
        if interrupt == "terminal":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        try:
            rest = proc.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired as exc:
            # what it said and what still runs: the shutdown that did not finish, for the report
            said = (exc.output or b"").decode(errors="replace")
            pytest.fail(f"not stopped 30 s after SIGINT; it said: {said!r}; still running: {_alive(started)}")
        assert proc.returncode == 0, (proc.returncode, rest)
        assert "practice venue stopped" in rest and "Traceback" not in plan + rest, rest
        deadline = time.monotonic() + 5  # gone with it; a moment to be reaped, not a leak
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(started) == []
    finally:
        for line in _alive(started):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the venue's group, so nothing outlives a failure
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
