"""The agent under a steady mixed load while its processes and brokers fail: kill -9 of the
agent again and again, central taken down and brought back, the local broker restarted, and
a buffer bound far too small. Real Mosquitto processes, the agent and the central verifier
as real processes; the devices are hil_tests/sim/loadgen.py (firmware frame code on CPython,
resending like the firmware does).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.loadgen import FleetLoad, LoadReport
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import wait_until
from tests.conftest import MakeFilesystem

DEVICES = [Device(f"AP-{n:04d}", "alarm_post", bytes([n]) * 32, "venue-1", "hall") for n in range(1, 6)]
Key = tuple[str, int, int]


class Rig:
    def __init__(self, tmp_path: Path, local: Mosquitto, central: Mosquitto, extra_config: str = "") -> None:
        self.local = local
        self.central = central
        self.agent = AgentProcess(tmp_path / "gw", local.address, central.address, DEVICES, extra_config=extra_config)
        self.verifier = CentralVerifier(central.address, [self.agent.public_key_file], self.agent.devices_file)

    def start(self) -> None:
        self.verifier.start()
        self.agent.start()
        self.agent.wait_log("uplink_up")

    def central_keys(self) -> list[Key]:
        gw = self.agent.gateway_id
        return [(e["device"], e["boot"], e["seq"]) for e in self.verifier.events() if e["device"] != gw]

    def wait_central(self, keys: set[Key], timeout: float) -> set[Key]:
        """Wait until all `keys` are at central; returns the ones still missing."""
        self.verifier.wait_for(lambda: keys <= set(self.central_keys()), timeout)
        return keys - set(self.central_keys())

    def close(self) -> None:
        self.verifier.stop()
        self.agent.kill()


@pytest.fixture
def rig(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]) -> Iterator[Rig]:
    r = Rig(tmp_path, *broker_pair)
    try:
        r.start()
        yield r
    finally:
        r.close()


def check_central(rig: Rig, report: LoadReport, seed: int) -> None:
    """Every receipted event and every alarm at central; duplicates only as the same key."""
    must = report.stored | report.keys(0)
    missing = rig.wait_central(must, 60)
    assert not missing, f"seed {seed}: {len(missing)} missing at central, e.g. {sorted(missing)[:5]}"
    keys = rig.central_keys()
    assert len(keys) == len(set(keys)), f"seed {seed}: the verifier let a duplicate event through"
    assert set(keys) <= set(report.sent), f"seed {seed}: central has events no device sent"
    problems = [p for p in rig.verifier.problems() if p["kind"] not in ("new_epoch",)]
    assert problems == [], f"seed {seed}: {problems[:5]}"


def kill_again_and_again(rig: Rig, load: FleetLoad, rng: random.Random, kills: int, when_up: bool = False) -> None:
    """kill -9 the agent `kills` times at random moments of the load's stream, restarting it
    at once each time (`when_up`: each kill lands once the restarted agent is forwarding
    again, not while it starts); then keep the stream going until it means much (bounded)."""
    for _ in range(kills):
        if when_up:
            rig.agent.wait_log("uplink_up")
        time.sleep(rng.uniform(0.05, 0.6))  # the kill lands at a random moment of the stream
        rig.agent.kill()
        rig.agent.start(wait=False)
    rig.agent.wait_log("uplink_up")
    # enough load to mean much whatever the kill times drawn and the machine's speed: the
    # stream goes on after the last kill until it is there
    wait_until(lambda: all(n > m for n, m in zip(load.progress(), (50, 200), strict=True)), 60, "load after the kills")
    load.stop_sending()


def test_kill9_of_the_agent_20_times_under_load_loses_nothing(rig: Rig, seed: int) -> None:
    load = FleetLoad(rig.local.address, DEVICES, rate=300, seed=seed)
    load.start()
    try:
        kill_again_and_again(rig, load, random.Random(seed), 20)
        assert load.wait_settled(60), f"seed {seed}: {load.pending()} frames still without receipt 2"
    finally:
        load.stop()
    report = load.report
    assert rig.agent.starts == 21
    check_central(rig, report, seed)
    # telemetry was not tracked by the devices, but nothing was lost either: the local broker
    # keeps the agent's session and the agent acknowledges only after the commit
    missing_p2 = rig.wait_central(report.keys(2), 30)
    assert not missing_p2, f"seed {seed}: {len(missing_p2)} P2 events missing"


def test_kill9_under_load_from_devices_that_never_resend_loses_no_receipted_event(rig: Rig, seed: int) -> None:
    # Each frame goes out once. An event the gateway answered with receipt 1 (committed
    # durably) and then lost, by deleting it before central's PUBACK or by a commit that was
    # not durable, cannot come back through a resend: it is simply missing at central.
    load = FleetLoad(rig.local.address, DEVICES, rate=300, seed=seed, resend=False)
    load.start()
    try:
        kill_again_and_again(rig, load, random.Random(seed), 10, when_up=True)
    finally:
        load.stop()
    report = load.report
    assert rig.agent.starts == 11 and report.resent == 0
    missing = rig.wait_central(report.stored, 60)
    assert not missing, (
        f"seed {seed}: {len(missing)} events had receipt 1 and never reached central: {sorted(missing)[:5]}"
    )
    # and every frame the local broker took, receipted or not: the agent's session keeps
    # what it did not acknowledge, and it acknowledges only after the commit
    missing = rig.wait_central(set(report.sent), 30)
    assert not missing, f"seed {seed}: {len(missing)} sent frames never reached central: {sorted(missing)[:5]}"
    check_central(rig, report, seed)


def test_central_down_and_local_broker_restarted_under_load(rig: Rig, seed: int) -> None:
    load = FleetLoad(rig.local.address, DEVICES, rate=300, seed=seed)
    load.start()
    try:
        assert rig.verifier.wait_for(lambda: len(rig.central_keys()) > 100, 20), "the load reaches central"
        rig.central.stop()  # central goes away for a while; the gateway buffers
        rig.agent.wait_log("uplink_down")
        stored = len(load.report.stored)
        wait_until(lambda: len(load.report.stored) >= stored + 50, 3, "receipt 1 while central is away")
        rig.local.restart()  # the local broker restarts too, with its persistent store
        rig.central.start()
        rig.agent.wait_log("uplink_up host")
        load.stop_sending()
        assert load.wait_settled(60), f"seed {seed}: {load.pending()} frames still without receipt 2"
    finally:
        load.stop()
    check_central(rig, load.report, seed)


def test_tiny_buffer_keeps_alarms_and_evicts_telemetry(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], seed: int
) -> None:
    local, central = broker_pair
    config = "[buffer]\nmax_bytes = 16384\np0_reserve_bytes = 4096\n"
    rig = Rig(tmp_path, local, central, extra_config=config)
    try:
        rig.start()
        central.stop()
        rig.agent.wait_log("uplink_down")
        # central is away for the whole fill: rechecks for receipt 2 every 5 s would resend
        # every stored frame again and again and starve the new ones
        load = FleetLoad(local.address, DEVICES, rate=400, mix=(0.05, 0.10, 0.85), seed=seed, recheck_s=30)
        load.start()
        try:
            deadline = time.monotonic() + 30  # as much load as 30 s give, 3000 frames at most
            while time.monotonic() < deadline and len(load.report.sent) < 3000:
                time.sleep(0.05)  # polling the load generator's counter
            load.stop_sending()
            # every alarm was stored although the bound was passed many times over
            alarms = load.report.keys(0)
            wait_until(lambda: alarms <= load.report.stored, 20, f"seed {seed}: receipt 1 for every alarm")
            central.start()
            assert load.wait_settled(60), f"seed {seed}: {load.pending()} frames without a final receipt"
        finally:
            load.stop()
        report = load.report
        assert report.dropped, f"seed {seed}: the bound was never reached"
        assert not (report.dropped & report.keys(0)), "an alarm was evicted"
        missing = rig.wait_central(report.keys(0) | (report.stored - report.dropped), 30)
        assert not missing, f"seed {seed}: {sorted(missing)[:5]}"
        # central learns of the evictions through the gateway heartbeat (one at every start)
        rig.agent.stop()
        rig.agent.start()

        def heartbeats() -> list[dict[str, object]]:
            return rig.verifier.events(type_name="GATEWAY_HEARTBEAT", device=rig.agent.gateway_id)

        rig.verifier.wait_for(lambda: any(e["data"]["4"] != [0, 0, 0] for e in heartbeats()), 15)
        evicted = heartbeats()[-1]["data"]["4"]
        assert isinstance(evicted, list) and evicted[0] == 0, evicted
        lost_p2 = len(report.keys(2) - set(rig.central_keys()))
        assert evicted[2] >= lost_p2 > 0, (evicted, lost_p2)
        assert evicted[1] >= len(report.dropped & report.keys(1)), evicted
    finally:
        rig.close()


@pytest.mark.slow
def test_a_full_data_disk_still_stores_every_alarm(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], small_fs: MakeFilesystem, seed: int
) -> None:
    """Invariant 9 on a real filesystem: the agent's data directory on a 4 MiB tmpfs; central is
    away, telemetry fills the disk, then something else takes what is left; the agent is killed
    and restarted while it is full. Every alarm gets receipt 1 throughout, telemetry gives way
    (receipt 4 for P1), and when space returns and central with it, everything stored arrives
    and the heartbeat has told central of the full disk and of its end."""
    local, central = broker_pair
    fs = small_fs("gw/data", 4 << 20, "tmpfs")
    rig = Rig(tmp_path, local, central, extra_config="[buffer]\ndisk_reserve_bytes = 524288\n")
    try:
        rig.start()
        central.stop()
        rig.agent.wait_log("uplink_down")
        fs.hog(leave=640 << 10)  # a runaway log took most of the card already
        load = FleetLoad(local.address, DEVICES, rate=1000, mix=(0.02, 0.08, 0.90), seed=seed, recheck_s=30)
        load.start()
        try:
            rig.agent.wait_log("disk_full", timeout=60)
            alarms_before = load.progress()[0]
            wait_until(lambda: load.progress()[0] >= alarms_before + 40, 30, "alarms while the disk is full")
            fs.hog()  # and then everything that was left
            rig.agent.kill()  # a crash while full: the restart must open the buffer and go on
            rig.agent.start()
            alarms_before = load.progress()[0]
            wait_until(lambda: load.progress()[0] >= alarms_before + 40, 30, "alarms after the restart")
            load.stop_sending()
            alarms = load.report.keys(0)
            wait_until(lambda: alarms <= load.report.stored, 30, f"seed {seed}: receipt 1 for every alarm")
            assert load.report.dropped, f"seed {seed}: telemetry never gave way"
            assert not (load.report.dropped & alarms), "an alarm was evicted"
            # space returns, and central
            fs.free_hog()
            central.start()
            assert load.wait_settled(60), f"seed {seed}: {load.pending()} frames without a final receipt"
        finally:
            load.stop()
        report = load.report
        missing = rig.wait_central(report.keys(0) | (report.stored - report.dropped), 60)
        assert not missing, f"seed {seed}: stored events missing at central: {sorted(missing)[:5]}"

        def disk() -> dict[str, int]:
            beats = rig.verifier.events(type_name="GATEWAY_HEARTBEAT", device=rig.agent.gateway_id)
            return beats[-1]["data"]["10"] if beats else {}  # type: ignore[no-any-return]

        # the heartbeats sent while full were P2 on a full disk; a later one tells of it
        assert rig.verifier.wait_for(lambda: disk().get("6", 0) >= 1 and disk()["1"] == 0, 30), disk()
        assert "disk_space_returned" in rig.agent.log_text()
    finally:
        rig.close()
