"""Alarm posts end to end: the real firmware on virtual boards (MicroPython unix port), real
Mosquitto brokers, the agent and the central verifier as real processes.

A press travels: button pin -> debouncer -> flash outbox -> MQTT -> local broker -> agent
(verify, store, receipt 1) -> signed batch -> central broker (PUBACK, receipt 2) -> verifier.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.shared.registry import Device
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, firmware_files
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR
from tests import oracle

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

KEYS = {f"AP-{n:04d}": bytes([n]) * 32 for n in (1, 2)}
DEVICES = [Device(dev, "alarm_post", key, "venue-1", "hall") for dev, key in KEYS.items()]


class Venue:
    """Two brokers, the agent, the verifier and virtual alarm posts; everything stopped at the end."""

    def __init__(self, workdir: Path, local: Mosquitto, central: Mosquitto, micropython: str) -> None:
        self.workdir = workdir
        self.local = local
        self.central = central
        self.micropython = micropython
        self.agent = AgentProcess(workdir / "gw", local.address, central.address, DEVICES)
        self.verifier = CentralVerifier(central.address, [self.agent.public_key_file])
        self.boards: list[VirtualBoard] = []

    def start(self) -> None:
        self.verifier.start()
        self.agent.start()
        self.agent.wait_log("uplink_up")

    def post(self, device: str = "AP-0001", **options: Any) -> VirtualBoard:
        board = VirtualBoard(device, self.workdir / device, micropython=self.micropython)
        self.boards.append(board)
        board.install(
            firmware_files("alarm_post"), alarm_post_config(device, KEYS[device], self.local.address, **options)
        )
        board.power_on()
        board.wait_console("alarm_post: connected", timeout=10)
        return board

    def close(self) -> None:
        for board in self.boards:
            board.close()
        self.verifier.stop()
        self.agent.kill()


@pytest.fixture
def venue(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str) -> Iterator[Venue]:
    v = Venue(tmp_path, *broker_pair, micropython)
    try:
        v.start()
        yield v
    finally:
        v.close()


def colours(board: VirtualBoard) -> list[str]:
    return [c for _, c in board.led_history]


def alarms(verifier: CentralVerifier, device: str = "AP-0001") -> list[tuple[int, int]]:
    return [(e["boot"], e["seq"]) for e in verifier.events(device=device, type_name="ALARM")]


def wait_alarms(
    verifier: CentralVerifier, n: int, timeout: float = 15, device: str = "AP-0001"
) -> list[tuple[int, int]]:
    verifier.wait_for(lambda: len(alarms(verifier, device)) >= n, timeout)
    return alarms(verifier, device)


def test_press_is_verified_at_central_and_led_follows_receipts(venue: Venue) -> None:
    post = venue.post()
    mark = post.console_offset
    post.click()
    post.wait_led("green", timeout=10)
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]
    # the LED said "sending" first and "delivered" last; blue (stored) may be too short to see
    seen = colours(post)
    assert seen[0] == "amber" and seen[-1] == "green", seen
    assert set(seen) <= {"amber", "blue", "green"}, seen
    log = post.console_output(mark).decode()
    assert log.index("1/2 type 1 saved") < log.index("1/2 stored at the gateway") < log.index("1/2 delivered")
    online = venue.verifier.events(device="AP-0001", type_name="ONLINE")
    assert [(e["boot"], e["seq"], e["data"]) for e in online] == [(1, 1, {"1": 0})]
    assert venue.verifier.problems() == []


def test_a_click_made_during_the_idle_poll_and_two_clicks_right_after_green_all_arrive(venue: Venue) -> None:
    # The post idles in 1 s polls once an alarm is delivered (green). A 150 ms click made
    # entirely inside one of them is one ALARM; then two clicks 200 ms apart are two more.
    post = venue.post()
    post.click()
    post.wait_led("green", timeout=10)
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]
    time.sleep(0.5)  # the post is idle: nothing due, its loop sleeps in 1 s polls
    post.click(ms=150)
    assert wait_alarms(venue.verifier, 2) == [(1, 2), (1, 3)]
    post.wait_led("green", timeout=10)
    time.sleep(0.3)
    post.click(ms=150)
    time.sleep(0.05)  # the second click starts 200 ms after the first
    post.click(ms=150)
    assert wait_alarms(venue.verifier, 4) == [(1, 2), (1, 3), (1, 4), (1, 5)]
    time.sleep(0.5)
    assert len(alarms(venue.verifier)) == 4  # exactly one ALARM per click
    assert venue.verifier.problems() == []


def test_long_press_and_tamper_travel_in_their_lanes(venue: Venue) -> None:
    post = venue.post(long_press_ms=500)
    post.hold(800)
    post.set_input("tamper", 1)
    assert venue.verifier.wait_for(lambda: len(venue.verifier.events(type_name="TAMPER")) == 1, 15)
    events = {e["type_name"]: e for e in venue.verifier.events(device="AP-0001")}
    assert events["ALARM"]["priority"] == 0
    assert events["ALARM_HELD"]["priority"] == 0 and events["ALARM_HELD"]["data"] == {"1": 500}
    assert events["TAMPER"]["priority"] == 1 and events["TAMPER"]["data"] == {"1": 1}
    assert events["ALARM"]["seq"] < events["ALARM_HELD"]["seq"] < events["TAMPER"]["seq"]


def test_central_down_for_5s_alarm_arrives_once_receipts_in_order(venue: Venue) -> None:
    post = venue.post()
    venue.central.wait_saved()  # the verifier's session survives the kill, as on a broker that ran a while
    venue.central.kill()
    mark = post.console_offset
    post.click()
    post.wait_led("blue", timeout=10)  # receipt 1: stored at the gateway, central unreachable
    assert post.led == "blue"
    # still blue 5 s later: nothing pretends the alarm reached central
    with pytest.raises(TimeoutError):
        post.wait_led("green", timeout=5)
    venue.central.start()
    post.wait_led("green", timeout=30)
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]
    assert colours(post) == ["amber", "blue", "green"]
    log = post.console_output(mark).decode()
    assert log.index("1/2 stored at the gateway") < log.index("1/2 delivered")
    assert [p for p in venue.verifier.problems() if p["kind"] != "new_epoch"] == []


def test_power_cut_before_the_alarm_left_the_post(venue: Venue) -> None:
    post = venue.post()
    venue.local.kill()  # the post cannot send: the alarm exists only in its flash
    post.wait_console("link lost", timeout=15)
    mark = post.console_offset
    post.click()
    post.wait_console("1/2 type 1 saved", since=mark)
    post.wait_led("amber")
    post.power_cut()
    venue.local.start()
    post.power_on()
    post.wait_led("green", timeout=20)
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]
    # after the cut: boot 2, and its ONLINE reports the alarm still waiting in the outbox
    assert venue.verifier.wait_for(lambda: len(venue.verifier.events(type_name="ONLINE")) == 2, 15)
    online = venue.verifier.events(type_name="ONLINE")
    # ONLINE of boot 1 (it never reached central: it was in the outbox too) and boot 2,
    # which saw the alarm and boot 1's ONLINE waiting in its outbox
    assert sorted((e["boot"], e["seq"], e["data"]["1"]) for e in online) == [(1, 1, 0), (2, 1, 2)]
    assert [p for p in venue.verifier.problems() if p["kind"] != "new_epoch"] == []


def test_power_cut_at_random_moments_after_presses(venue: Venue, seed: int) -> None:
    # A cut may come before the press registered (then the post never showed amber and no
    # alarm is owed), between saving and sending, or after sending. Every alarm the post
    # saved reaches central exactly once.
    rng = random.Random(seed)
    post = venue.post()
    saved: list[tuple[int, int]] = []
    for boot in range(1, 6):
        mark = post.console_offset
        post.press()
        time.sleep(rng.uniform(0.0, 0.12))  # the moment of the cut is the variable under test
        post.power_cut()
        post.release()
        out = post.console_output(mark).decode()
        saved += [(boot, 2)] if f"{boot}/2 type 1 saved" in out else []
        post.power_on()
        post.wait_console(f"boot {boot + 1} outbox", since=mark)
    assert saved, f"seed {seed}: no press was saved before its cut"
    venue.verifier.wait_for(lambda: len(alarms(venue.verifier)) >= len(saved), 30)
    got = alarms(venue.verifier)
    # the console line comes after the flash write, so a cut may also hide a saved press
    assert set(saved) <= set(got) <= {(b, 2) for b in range(1, 6)}, f"seed {seed}: saved {saved} central {got}"
    assert len(got) == len(set(got)), f"seed {seed}: duplicates at central {got}"


def _mqtt(port: int, work: Callable[[aiomqtt.Client], Any]) -> Any:
    async def run() -> Any:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-tap") as c:
            return await work(c)

    return asyncio.run(run())


def test_flipped_replayed_and_unknown_frames_rejected_next_press_delivered(venue: Venue) -> None:
    post = venue.post()
    captured: list[bytes] = []

    async def capture_one_press(c: aiomqtt.Client) -> None:
        await c.subscribe("ge/dev/AP-0001/up", qos=1)
        post.click()
        async with asyncio.timeout(10):
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                captured.append(m.payload)
                return

    _mqtt(venue.local.port, capture_one_press)
    post.wait_led("green", timeout=10)
    good = captured[0]
    # a frame the firmware built under MicroPython verifies with pycose
    assert oracle.verify_mac0(KEYS["AP-0001"], good, fwframe.AAD_FRAME)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    unknown = fwframe.build(bytes(32), "AP-9999", 1, 1, fwframe.T_ALARM, 0, {}, 0)
    wrong_key = fwframe.build(KEYS["AP-0002"], "AP-0001", 1, 50, fwframe.T_ALARM, 0, {}, 0)

    async def inject(c: aiomqtt.Client) -> None:
        for topic, data in (
            ("ge/dev/AP-0001/up", bytes(flipped)),
            ("ge/dev/AP-0001/up", good),  # replayed
            ("ge/dev/AP-9999/up", unknown),
            ("ge/dev/AP-0001/up", wrong_key),
        ):
            await c.publish(topic, data, qos=1)

    _mqtt(venue.local.port, inject)
    venue.agent.wait_log("frame_rejected source=mqtt device=AP-9999")
    # the button input is a waveform: presses closer than the 30 ms debounce are one press
    time.sleep(0.1)
    mark = post.console_offset
    post.click()
    post.wait_console("1/3 delivered", since=mark, timeout=10)
    assert wait_alarms(venue.verifier, 2) == [(1, 2), (1, 3)]
    venue.agent.stop()
    rejected = venue.agent.stats()["rejected"]
    assert "'unknown_device':1" in rejected and "'replay':1" in rejected, rejected
    # the flipped byte lands in the payload or the tag: bad_mac or malformed, once
    assert ("'bad_mac':2" in rejected) or ("'bad_mac':1" in rejected and "'malformed':1" in rejected), rejected
    assert KEYS["AP-0001"].hex() not in venue.agent.log_text()
    assert venue.verifier.problems() == []


def test_receipts_with_a_bad_mac_or_for_unknown_events_are_ignored(venue: Venue) -> None:
    # the local broker is open to anything on the venue's network: a forged "delivered"
    # must not turn the post green while the alarm is not at central
    post = venue.post()
    venue.central.wait_saved()
    venue.central.kill()
    post.click()
    post.wait_led("blue", timeout=10)
    key = KEYS["AP-0001"]

    def receipt(k: bytes, boot: int, seq: int, kind: int) -> bytes:
        payload = fwframe.cbor.dumps({1: boot, 2: seq, 3: kind})
        return fwframe.cose.mac0_encode(k, b"GW-1", payload, fwframe.AAD_RECEIPT)

    forged = [
        receipt(KEYS["AP-0002"], 1, 2, fwframe.R_DELIVERED),  # wrong key
        receipt(key, 1, 3, fwframe.R_DELIVERED),  # an event the post does not hold
        receipt(key, 1, 2, fwframe.R_DELIVERED)[:-3],  # truncated
        b"\xff" * 40,
    ]

    async def send(c: aiomqtt.Client) -> None:
        for msg in forged:
            await c.publish("ge/dev/AP-0001/down", msg, qos=1)

    mark = post.console_offset
    _mqtt(venue.local.port, send)
    post.wait_console("receipt ignored (3 so far)", since=mark)
    assert post.led == "blue"
    venue.central.start()
    post.wait_led("green", timeout=30)
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]


OUTAGE_S = 25.0  # the local broker's outage in the recovery test (issue 16's case)


def _retry_delays(console: str) -> list[int]:
    return [int(m) for m in re.findall(r"next try in (\d+) ms", console)]


def test_press_right_after_the_local_broker_returns_is_delivered_within_2s(venue: Venue) -> None:
    # The local broker is down for 25 s (a little more: it returns right after AP-0001 failed
    # an attempt and scheduled its next one at least 2 s later). 0.5 s after the broker is
    # back, with AP-0001 still waiting for its backoff, AP-0001 is pressed: the press tries
    # the link at once and receipt 2 comes within 2 s. AP-0002, with nothing to send, comes
    # back on its own backoff, within the 4 s cap.
    posts = [venue.post("AP-0001"), venue.post("AP-0002")]
    for post in posts:
        post.wait_console("1/1 delivered", timeout=10)
    marks = [post.console_offset for post in posts]
    venue.local.kill()
    time.sleep(OUTAGE_S)  # the outage itself is what is under test
    since = posts[0].console_offset
    while True:
        since = posts[0].wait_console("next try in ", since=since, timeout=5)
        found = re.match(rb"(\d+) ms", posts[0].console_output(since))
        if found and int(found[1]) >= 2000:
            break
    venue.local.start()
    back = time.monotonic()
    down_logs = [post.console_output(mark).decode() for post, mark in zip(posts, marks, strict=True)]
    time.sleep(max(0.0, back + 0.5 - time.monotonic()))
    mark = posts[0].console_offset
    pressed = time.monotonic()
    posts[0].click()
    posts[0].wait_console(" delivered", since=posts[0].wait_console("type 1 saved", since=mark), timeout=10)
    delivered = time.monotonic() - pressed
    log = posts[0].console_output(mark).decode()
    assert log.index("new alarm: link attempt now") < log.index("connected to"), log
    assert delivered <= 2.0, f"receipt 2 {delivered:.2f} s after the press\n{log}"
    posts[1].wait_console("connected to", since=marks[1], timeout=4.0 + 1.0)
    # when the post was back before the agent (the broker restarted without the agent's
    # session), the agent's `online` made it send the alarm again (docs/protocol.md §5)
    how = "sent again on the gateway's online" if "gateway online, resending" in log else "first send"
    print(f"receipt 2 {delivered:.2f} s after the press ({how}); AP-0002 back {time.monotonic() - back:.2f} s")
    # during the outage: retries capped at 4 s, jittered per device, never below 250 ms
    delays = [_retry_delays(text) for text in down_logs]
    for d in delays:
        assert len(d) >= 6 and min(d) >= 250 and max(d) < 4000, d
    assert delays[0] != delays[1]
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]


def test_a_press_the_restarted_broker_dropped_goes_again_when_the_agent_says_online(venue: Venue) -> None:
    # The local broker comes back without its store (so without the agent's session) while the
    # agent is still away: a press goes to the broker, which has no subscriber for it and drops
    # it after its PUBACK. When the agent is subscribed again it publishes `online`, and the
    # post sends the alarm again at once; resend_s is a minute, so nothing else could.
    post = venue.post(resend_s=60)
    post.wait_console("1/1 delivered", timeout=10)
    venue.agent.kill()
    venue.local.kill()
    venue.local.db_path.unlink(missing_ok=True)
    venue.local.start()
    mark = post.console_offset
    post.wait_console("connected to", since=mark, timeout=10)
    seen: list[bytes] = []

    async def press_and_see_it_published(c: aiomqtt.Client) -> None:
        await c.subscribe("ge/dev/AP-0001/up", qos=1)
        post.click()
        async with asyncio.timeout(10):
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                seen.append(m.payload)
                return

    _mqtt(venue.local.port, press_and_see_it_published)
    assert oracle.verify_mac0(KEYS["AP-0001"], seen[0], fwframe.AAD_FRAME)  # the alarm left the post
    venue.agent.start()  # returns once the agent logged local_broker_up
    back = time.monotonic()
    post.wait_console(" delivered", since=mark, timeout=10)
    took = time.monotonic() - back
    log = post.console_output(mark).decode()
    assert "gateway online, resending" in log, log
    assert took <= 2.0, f"receipt 2 {took:.2f} s after the agent was back\n{log}"
    assert wait_alarms(venue.verifier, 1) == [(1, 2)]
