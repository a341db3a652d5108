"""One agent per data directory (agent/gateway/datadir.py), with real processes: a second agent
started by hand on the same data directory refuses to start and names the first one's pid; the
first goes on untouched; after kill -9 of the first, the stale lock file blocks nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.gateway.datadir import LOCK_NAME, DataDirInUse, DataDirLock
from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto

DEVICES = [Device("AP-0001", "alarm_post", bytes(32), "venue-1", "hall")]


def test_a_second_lock_on_the_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "data") as first:
        assert (tmp_path / "data" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(DataDirInUse, match=rf"in use by another guardian-agent \(pid {os.getpid()}\)"):
            DataDirLock(tmp_path / "data").acquire()
        first.release()
        with DataDirLock(tmp_path / "data"):
            pass  # released: the next one takes it


def test_a_lock_file_without_a_pid_still_names_what_it_can(tmp_path: Path) -> None:
    with DataDirLock(tmp_path) as held:
        os.truncate(held.path, 0)  # e.g. the pid could not be written on a full disk
        with pytest.raises(DataDirInUse, match="pid unknown"):
            DataDirLock(tmp_path).acquire()


def test_a_second_agent_on_the_same_data_directory_refuses_to_start(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]
) -> None:
    local, central = broker_pair
    agent = AgentProcess(tmp_path / "gw", local.address, central.address, DEVICES)
    try:
        agent.start()
        agent.wait_log("uplink_up")
        first = agent.pid
        second = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--config", str(agent.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1, second
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("guardian-agent: "), second.stderr
        assert f"in use by another guardian-agent (pid {first})" in lines[0]
        assert str(agent.data_dir) in lines[0] and "Traceback" not in second.stderr
        assert agent.running, "the first agent goes on"
        assert "uplink_down" not in agent.log_text(since_start=True), "nobody took its client id"
        # kill -9: the kernel drops the lock with the process; the file stays and blocks nothing
        agent.kill()
        assert (agent.data_dir / LOCK_NAME).exists()
        agent.start()
        agent.wait_log("uplink_up")
        assert (agent.data_dir / LOCK_NAME).read_text() == f"{agent.pid}\n"
    finally:
        agent.kill()
