"""The gateway tells people itself while central is down, end to end: the real firmware (a band
in the virtual air, alarm posts on virtual boards), the agent with its fallback notifier, both
Mosquitto brokers (central's stopped and started again), central's guardian-notify, and Apprise
webhooks to a local HTTP receiver standing in for phones. And device liveness: a post powered
off is reported once, across an agent restart, and reported back when it returns."""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.central.keys import generate_central_key
from agent.shared.registry import Device
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, firmware_files
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.notifier import NotifierProcess, fresh_port
from hil_tests.sim.tools import wait_until
from tests.notify.receiver import Receiver
from tests.test_notify_e2e import ESCALATE_S, care_home, circle

POSTS = {"AP-0001": bytes([1]) * 32}
FALLBACK_S = 3


def staff_circle(rx: Receiver) -> str:
    """Two staff members: a post's alarm goes to both at once."""
    return circle(rx, staff=(("nurse", "Nurse Amy"),))


def notify_section(workdir: Path, circle_text: str, page_port: int, pager: Path | None = None) -> str:
    """[notify] with a copy of the care circle, the LAN page on loopback, the pager command."""
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / "circle-copy.toml"
    copy.write_text(circle_text)
    lines = [
        "[notify]",
        f'circle = "{copy}"',
        f"fallback_after_s = {FALLBACK_S}",
        f'ack_listen = "127.0.0.1:{page_port}"',
        "send_timeout_s = 5",
    ]
    if pager is not None:
        lines += ["[notify.sounder]", f'command = ["{pager}", "{{type}}", "{{place}}"]']
    return "\n".join(lines) + "\n"


def duplicates(rx: Receiver) -> dict[tuple[str, str | None, str | None], int]:
    """(who, alert, kind of message) told more than once, a repeat with the same delivery key aside."""
    seen = Counter((r.path, r.alert, r.kind) for r in {(r.path, r.key): r for r in rx.received}.values())
    return {k: n for k, n in seen.items() if n > 1}


def post_link(url: str) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as r:
        return int(r.status)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_central_down_the_gateway_tells_the_family_and_central_does_not_tell_them_again(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str, rx: Receiver
) -> None:
    central = broker_pair[1]
    page = fresh_port()
    extra = notify_section(tmp_path / "gw", circle(rx), page)
    with care_home(tmp_path, broker_pair, micropython, rx, extra) as (band, agent, notifier):
        central.stop()  # central is unreachable: its broker is gone
        agent.wait_log("uplink_down", timeout=15)
        pressed = time.time()
        band.hold(2500)
        assert rx.wait_for(lambda: rx.at("li"), 30), agent.log_text(since_start=True)[-3000:]
        (first,) = rx.at("li")
        assert first.t - pressed < FALLBACK_S + 10
        assert first.title == "SOS: Resident 4 (room 4) (Rosewood House)"
        assert f"http://127.0.0.1:{page}/a/" in first.message, "the link is the gateway's page on the venue LAN"
        # nobody acknowledges: the gateway escalates by itself
        assert rx.wait_for(lambda: rx.at("son"), ESCALATE_S + 5)
        assert rx.at("son")[0].t - first.t > ESCALATE_S - 0.5, "not before escalate_after_s (timing: make bench)"

        central.start()  # central is back: the backlog, the alert's NOTIFIED events behind it
        notifier.wait_log("gateway_notified", timeout=40)
        # the escalation continues (staff), from the gateway or from central: once
        assert rx.wait_for(lambda: rx.at("desk"), 2 * ESCALATE_S + 15), notifier.log_text()[-3000:]
        time.sleep(ESCALATE_S + 2)  # nothing else may arrive
        assert duplicates(rx) == {}, rx.received
        assert [len(rx.at(p)) for p in ("li", "son", "desk")] == [1, 1, 1]
        assert "alert_held" in notifier.log_text(), "central held the late alert for the gateway's NOTIFIED"


class Posts:
    """The agent with its fallback and a virtual alarm post, central's notifier, central down."""

    def __init__(self, tmp_path: Path, local: Mosquitto, central: Mosquitto, micropython: str, rx: Receiver) -> None:
        self.tmp_path = tmp_path
        self.central = central
        self.page = fresh_port()
        self.pager_out = tmp_path / "paged.txt"
        pager = tmp_path / "page-staff"
        pager.write_text(f'#!/bin/sh\necho "$@" >> "{self.pager_out}"\n')
        pager.chmod(0o755)
        central_pub = generate_central_key(tmp_path / "central.key", "central")
        devices = [Device(d, "alarm_post", k, "venue-1", "Lobby") for d, k in POSTS.items()]
        self.agent = AgentProcess(
            tmp_path / "gw",
            local.address,
            central.address,
            devices,
            extra_config=notify_section(tmp_path / "gw", staff_circle(rx), self.page, pager),
            central_options=f'command_key = "{central_pub}"',
        )
        self.notifier = NotifierProcess(
            tmp_path / "notify",
            central.address,
            staff_circle(rx),
            [(self.agent.public_key_file, "venue-1")],
            command_key=tmp_path / "central.key",
            device_keys=self.agent.devices_file,
        )
        self.post = VirtualBoard("AP-0001", tmp_path / "AP-0001", micropython=micropython)
        self.post.install(firmware_files("alarm_post"), alarm_post_config("AP-0001", POSTS["AP-0001"], local.address))

    def start(self) -> None:
        self.notifier.start()
        self.agent.start()
        self.agent.wait_log("uplink_up")
        self.post.power_on()
        self.post.wait_console("alarm_post: connected", timeout=10)
        self.central.stop()
        self.agent.wait_log("uplink_down", timeout=15)

    def close(self) -> None:
        self.post.close()
        self.notifier.stop()
        self.agent.kill()


@pytest.fixture
def posts(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str, rx: Receiver) -> Iterator[Posts]:
    p = Posts(tmp_path, *broker_pair, micropython, rx)
    try:
        p.start()
        yield p
    finally:
        p.close()


def test_an_acknowledgement_on_the_gateways_page_turns_the_post_white_and_reaches_central(
    posts: Posts, rx: Receiver
) -> None:
    posts.post.click()
    assert rx.wait_for(lambda: rx.at("desk") and rx.at("nurse"), FALLBACK_S + 15), posts.agent.log_text()[-3000:]
    # staff on site hear it: the pager command ran with the alert's type and place
    wait_until(lambda: posts.pager_out.exists() and posts.pager_out.read_text() == "ALARM Lobby\n", 10, "the pager")
    assert posts.post.led != "white"
    link = re.search(rf"http://127\.0\.0\.1:{posts.page}/a/\S+", rx.at("nurse")[0].message)
    assert link is not None
    assert post_link(link.group(0)) == 200
    posts.post.wait_led("white", timeout=10)  # receipt 3 from the gateway, no command from central
    assert rx.wait_for(lambda: len(rx.at("desk")) == 2, 10)
    assert "Nurse Amy acknowledged this" in rx.at("desk")[1].message
    time.sleep(ESCALATE_S + 1)
    assert "alert_unacknowledged" not in posts.agent.log_text(since_start=True), "escalation stopped"

    posts.central.start()
    posts.notifier.wait_log("gateway_acked", timeout=30)
    assert "status=acked" in posts.notifier.log_text().split("gateway_acked", 1)[1].splitlines()[0]
    time.sleep(ESCALATE_S + 1)
    assert sorted((r.path, r.kind) for r in rx.received) == [("desk", "acked"), ("desk", "alert"), ("nurse", "alert")]
    assert "ack_command_sent" not in posts.notifier.log_text()


def test_kill_9_of_the_agent_mid_fallback_loses_nothing_and_sends_nothing_twice(posts: Posts, rx: Receiver) -> None:
    rx.hold["desk"] = 8.0  # the desk's webhook receives it, its answer never comes back in time
    posts.post.click()
    assert rx.holding.wait(FALLBACK_S + 15), posts.agent.log_text()[-3000:]
    posts.agent.kill()  # between the send and its result
    posts.agent.start()
    posts.agent.wait_log("delivery_in_doubt action=resend", timeout=20)
    assert rx.wait_for(lambda: len(rx.at("desk")) >= 2 and rx.at("nurse"), 20)
    # the one in doubt went again with the same delivery key (a receiver drops the repeat); the
    # nurse's, sent at the same moment, may have been in doubt too
    assert len({r.key for r in rx.at("desk")}) == 1 and len({r.key for r in rx.at("nurse")}) == 1
    restarted = posts.agent.log_text(since_start=True)
    assert "fallback_alert_resumed alert=AP-0001/1/2" in restarted, "the restart followed the alert again"
    assert "notified_raised alert=AP-0001/1/2 kind=alert round=0" in restarted, "and told central again"

    posts.central.start()
    posts.notifier.wait_log("gateway_notified", timeout=30)
    time.sleep(ESCALATE_S + 2)
    assert duplicates(rx) == {}, rx.received
    assert {r.path for r in rx.received} == {"desk", "nurse"}, "central told nobody again"


def test_a_post_powered_off_is_reported_offline_once_and_online_when_it_returns(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str
) -> None:
    local, central = broker_pair
    devices = [Device(d, "alarm_post", k, "venue-1", "Lobby") for d, k in POSTS.items()]
    agent = AgentProcess(
        tmp_path / "gw", local.address, central.address, devices, extra_config="[liveness]\nmargin_s = 2\n"
    )
    verifier = CentralVerifier(central.address, [agent.public_key_file])
    post = VirtualBoard("AP-0001", tmp_path / "AP-0001", micropython=micropython)
    post.install(
        firmware_files("alarm_post"), alarm_post_config("AP-0001", POSTS["AP-0001"], local.address, heartbeat_s=1)
    )

    def of(name: str) -> list[dict[str, object]]:
        return verifier.events(type_name=name)

    try:
        verifier.start()
        agent.start()
        agent.wait_log("uplink_up")
        post.power_on()
        post.wait_console("alarm_post: connected", timeout=10)
        wait_until(lambda: len(verifier.events(device="AP-0001", type_name="HEARTBEAT")) >= 3, 15, "heartbeats")
        cut = time.time()
        post.power_cut()  # its connection drops: the broker publishes its will
        assert verifier.wait_for(lambda: of("DEVICE_OFFLINE"), 15), agent.log_text()[-2000:]
        (offline,) = of("DEVICE_OFFLINE")
        assert offline["device"] == agent.gateway_id
        assert offline["data"]["1"] == "AP-0001" and offline["data"]["3"] == "will"
        assert 800 <= offline["data"]["4"] <= 1500, "the learned interval: 1 s heartbeats"
        assert time.time() - cut < 10
        # a restart while it is still off: not raised again
        agent.stop()
        agent.start()
        agent.wait_log("uplink_up")
        time.sleep(2 * 1.5 + 2 + 3)  # past two intervals and the margin after the start
        assert len(of("DEVICE_OFFLINE")) == 1
        post.power_on()
        assert verifier.wait_for(lambda: of("DEVICE_ONLINE"), 15)
        (online,) = of("DEVICE_ONLINE")
        assert online["data"]["1"] == "AP-0001" and online["data"]["2"] >= 5000
        time.sleep(3)
        assert len(of("DEVICE_OFFLINE")) == 1 and len(of("DEVICE_ONLINE")) == 1
        assert verifier.problems() == []
    finally:
        post.close()
        verifier.stop()
        agent.kill()
