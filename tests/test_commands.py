"""Signed commands from central, end to end: `guardian-agent command` -> central Mosquitto ->
the agent (a real process) -> receipt 3 on the local Mosquitto -> a virtual alarm post running
the real firmware under MicroPython; rejections, revocation, runtime settings across kill -9,
and the gateway's presence on its status topic.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.central import command_sender
from agent.central.keys import generate_central_key, load_central_private_key
from agent.gateway import command_handler
from agent.shared import commands, cose
from agent.shared.registry import Device, load_registry
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, firmware_files
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

KEYS = {f"AP-{n:04d}": bytes([n]) * 32 for n in (1, 2)}
DEVICES = [Device(dev, "alarm_post", key, "venue-1", "hall") for dev, key in KEYS.items()]
GW, VENUE = "GW-1", "venue-1"
COMMANDS = f"venues/{VENUE}/gateways/{GW}/commands"
STATUS = f"venues/{VENUE}/gateways/{GW}/status"


class Tap:
    """A subscriber on paho's own network thread, collecting (topic, payload) as they arrive."""

    def __init__(self, address: tuple[str, int], topic: str, name: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(*address)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def _on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[tuple[str, bytes]]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Site:
    """Two brokers, the agent with central's key pinned, the verifier and central's command tool."""

    def __init__(self, workdir: Path, local: Mosquitto, central: Mosquitto) -> None:
        self.workdir = workdir
        self.local = local
        self.central = central
        self.central_key = workdir / "central.key"
        generate_central_key(self.central_key, "central")
        self.kid, self.key = load_central_private_key(self.central_key)
        self.agent = AgentProcess(
            workdir / "gw",
            local.address,
            central.address,
            DEVICES,
            gateway_id=GW,
            venue=VENUE,
            central_options=f'command_key = "{self.central_key}.pub"',
        )
        self.verifier = CentralVerifier(central.address, [self.agent.public_key_file])
        self.boards: list[VirtualBoard] = []
        self.taps: list[Tap] = []

    def start(self) -> None:
        self.verifier.start()
        self.agent.start()
        self.agent.wait_log("status_online")

    def command(self, *args: str, seq: int | None = None) -> str:
        """Run `guardian-agent command`; returns its output (the seq it used is in it)."""
        cmd = [sys.executable, "-m", "agent", "command", "--broker", f"127.0.0.1:{self.central.port}"]
        cmd += ["--central-key", str(self.central_key), "--gateway", GW, "--venue", VENUE]
        if seq is not None:
            cmd += ["--command-seq", str(seq)]
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def signed(
        self, seq: int, op: int, args: dict[int, Any], gateway: str = GW, age: int = 0, key: Any = None, kid: str = ""
    ) -> bytes:
        """A command built here (to forge, expire or misaddress one on purpose)."""
        now = int(time.time()) - age
        payload = commands.encode_payload(gateway, seq, now, now + 300, op, args)
        return commands.sign_command(key or self.key, kid or self.kid, payload)

    def publish_central(self, messages: list[bytes]) -> None:
        async def run() -> None:
            async with aiomqtt.Client(*self.central.address, identifier="test-central") as c:
                for m in messages:
                    await c.publish(COMMANDS, m, qos=1)

        asyncio.run(run())

    def frames(self, frames: list[tuple[str, bytes]]) -> None:
        async def run() -> None:
            async with aiomqtt.Client(*self.local.address, identifier="test-devices") as c:
                for device, data in frames:
                    await c.publish(f"ge/dev/{device}/up", data, qos=1)

        asyncio.run(run())

    def tap(self, address: tuple[str, int], topic: str) -> Tap:
        tap = Tap(address, topic, f"tap-{len(self.taps)}")
        self.taps.append(tap)
        return tap

    def stopped_stats(self) -> dict[str, Any]:
        self.agent.stop()
        stats = self.agent.stats()
        return {k: ast.literal_eval(stats[k]) for k in ("commands_accepted", "commands_rejected", "rejected")}

    def close(self) -> None:
        for tap in self.taps:
            tap.close()
        for board in self.boards:
            board.close()
        self.verifier.stop()
        self.agent.kill()


@pytest.fixture
def site(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto]) -> Iterator[Site]:
    s = Site(tmp_path, *broker_pair)
    try:
        s.start()
        yield s
    finally:
        s.close()


def frame(device: str, seq: int, typ: int = 1, boot: int = 1) -> bytes:
    return fwframe.build(KEYS[device], device, boot, seq, typ, seq * 100, {}, 0)


def test_dispatcher_ack_turns_the_posts_led_white_also_when_sent_while_the_gateway_was_away(
    site: Site, micropython: str
) -> None:
    post = VirtualBoard("AP-0001", site.workdir / "AP-0001", micropython=micropython)
    site.boards.append(post)
    config = alarm_post_config("AP-0001", KEYS["AP-0001"], site.local.address, ack_s=3)
    post.install(firmware_files("alarm_post"), config)
    post.power_on()
    post.wait_console("alarm_post: connected", timeout=10)
    post.click()
    post.wait_led("green", timeout=15)
    assert [(e["boot"], e["seq"]) for e in site.verifier.wait_events(1, 15, type_name="ALARM")] == [(1, 2)]

    mark, beeps = post.console_offset, len(post.output_history)
    out = site.command("ack", "--device", "AP-0001", "--boot", "1", "--seq", "2", "--text", "on our way")
    assert out.startswith("sent op=ack seq=")
    post.wait_led("white", timeout=10)
    post.wait_console("1/2 acknowledged: help is coming", since=mark)

    def buzzer() -> list[int]:
        # levels since the mark, repeats (a reconnected board reports every pin) left out
        levels = [0]
        for c in post.output_history[beeps:]:
            if c.pin == "buzzer" and c.level != levels[-1]:
                levels.append(c.level)
        return levels[1:]

    post.wait_for(lambda: len(buzzer()) >= 4, 5, "two beeps")
    assert buzzer() == [1, 0, 1, 0]
    site.agent.wait_log("command_accepted op=ack")
    assert 'device=AP-0001 boot=1 event_seq=2 text="on our way"' in site.agent.log_text(since_start=True)
    post.wait_led("green", timeout=10)  # ack_s is over; delivered less than green_s ago

    # the gateway is away (kill -9) when the dispatcher acknowledges again: the persistent
    # session keeps the command until the agent is back
    site.agent.kill()
    mark = post.console_offset
    site.command("ack", "--device", "AP-0001", "--boot", "1", "--seq", "2")
    site.agent.start()
    post.wait_led("white", timeout=15)
    post.wait_console("1/2 acknowledged: help is coming", since=mark)
    assert buzzer() == [1, 0, 1, 0]  # the same alarm again: white, no new beeps
    assert site.stopped_stats()["commands_accepted"] == {"ack": 1}


def test_replayed_forged_misaddressed_and_expired_commands_change_nothing(site: Site) -> None:
    registry_before = site.agent.devices_file.read_bytes()
    downlink = site.tap(site.local.address, "ge/dev/+/down")
    good = site.signed(100, commands.OP_ACK, command_sender.ack_args("AP-0001", 1, 1))
    site.publish_central([good])
    site.agent.wait_log("command_accepted op=ack seq=100")
    assert downlink.wait(lambda m: len(m) == 1, 10)

    rogue = Ed25519PrivateKey.generate()
    revoke = {1: "AP-0001"}
    now = int(time.time())
    unsigned = cose.mac0_encode(bytes(32), b"central", commands.encode_payload(GW, 106, now, now + 300, 2, revoke), b"")
    bad = [
        good,  # replayed as is
        site.signed(50, commands.OP_ACK, command_sender.ack_args("AP-0001", 1, 1)),  # older seq, good signature
        site.signed(101, commands.OP_REVOKE, revoke, key=rogue),  # forged under central's kid
        site.signed(102, commands.OP_CONFIG, {1: 5000}, key=rogue, kid="rogue"),  # unknown kid
        unsigned,  # a COSE_Mac0: not signed
        b"\x00not a command",
        site.signed(103, commands.OP_REVOKE, revoke, gateway="GW-2"),  # for another gateway
        site.signed(104, commands.OP_REVOKE, revoke, age=1000),  # expired 700 s ago
    ]
    site.publish_central([*bad, site.signed(105, commands.OP_ACK, command_sender.ack_args("AP-0001", 1, 2))])
    # commands are settled in order: once 105 is accepted every one before it was handled
    site.agent.wait_log("command_accepted op=ack seq=105")
    assert downlink.wait(lambda m: len(m) == 2, 10)
    site.frames([("AP-0001", frame("AP-0001", 7))])
    assert site.verifier.wait_events(1, 15, device="AP-0001", seq=7)  # the device was not revoked
    assert site.agent.devices_file.read_bytes() == registry_before
    state = command_handler.load_state(site.agent.data_dir / command_handler.STATE_FILE)
    assert state == command_handler.CommandState(seq=105)
    stats = site.stopped_stats()
    assert stats["commands_accepted"] == {"ack": 2}
    assert stats["commands_rejected"] == {
        "replay": 2,
        "bad_signature": 1,
        "unknown_kid": 1,
        "malformed": 2,
        "wrong_gateway": 1,
        "expired": 1,
    }
    receipts = [cose.mac0_parse(m) for _, m in downlink.messages]
    assert all(r.verify(KEYS["AP-0001"], b"ge/1/receipt") for r in receipts)
    log = site.agent.log_text()
    assert "command_rejected reason=wrong_gateway seq=103 op=revoke" in log
    assert "command_rejected reason=expired seq=104" in log
    assert KEYS["AP-0001"].hex() not in log and "PRIVATE KEY" not in log


def test_revoked_device_is_rejected_as_revoked_others_continue_also_after_kill_9(site: Site) -> None:
    site.frames([("AP-0001", frame("AP-0001", 1)), ("AP-0002", frame("AP-0002", 1))])
    assert len(site.verifier.wait_events(2, 15)) >= 2
    site.command("revoke", "--device", "AP-0002")
    site.agent.wait_log("command_accepted op=revoke")
    assert [d.id for d in load_registry(site.agent.devices_file)] == ["AP-0001"]
    assert site.agent.devices_file.stat().st_mode & 0o777 == 0o600

    site.frames([("AP-0002", frame("AP-0002", 2)), ("AP-0001", frame("AP-0001", 2))])
    site.agent.wait_log("frame_rejected source=mqtt device=AP-0002 reason=revoked")
    assert site.verifier.wait_events(1, 15, device="AP-0001", seq=2)

    site.agent.kill()
    site.agent.start()
    site.frames([("AP-0002", frame("AP-0002", 3)), ("AP-0001", frame("AP-0001", 3))])
    site.agent.wait_log("frame_rejected source=mqtt device=AP-0002 reason=revoked")
    assert site.verifier.wait_events(1, 15, device="AP-0001", seq=3)
    assert site.verifier.events(device="AP-0002") and not site.verifier.events(device="AP-0002", seq=2)
    assert not site.verifier.events(device="AP-0002", seq=3)
    assert site.stopped_stats()["rejected"].get("revoked") == 1


def test_config_change_applies_live_and_survives_kill_9(site: Site) -> None:
    site.command("config", "--set", "batch.max_events=2", "--set", "batch.linger_ms=300", "--set", "log.level=debug")
    site.agent.wait_log("command_accepted op=config")

    def heartbeats(first: int) -> list[dict[str, Any]]:
        # P2 events published together: with linger 300 ms they would share a batch, so
        # batches of exactly max_events show the setting at work
        site.frames([("AP-0001", frame("AP-0001", s, typ=128)) for s in range(first, first + 6)])
        events = site.verifier.wait_events(first + 5, 20, device="AP-0001", type_name="HEARTBEAT")
        return [e for e in events if e["seq"] >= first]

    def batch_sizes() -> Counter[tuple[int, int]]:
        return Counter((e["epoch"], e["batch"]) for e in site.verifier.events())

    assert len(heartbeats(1)) == 6
    assert max(batch_sizes().values()) == 2

    site.agent.kill()
    site.agent.start()
    site.agent.wait_log("runtime_settings")
    assert "batch.linger_ms=300 batch.max_events=2 log.level=debug" in site.agent.log_text(since_start=True)
    before = set(batch_sizes())
    assert len(heartbeats(7)) == 6
    after = {k: n for k, n in batch_sizes().items() if k not in before}
    assert after and max(after.values()) <= 2, after
    state = command_handler.load_state(site.agent.data_dir / command_handler.STATE_FILE)
    assert state.settings == {"batch.linger_ms": 300, "batch.max_events": 2, "log.level": "debug"}


def test_status_is_online_retained_offline_by_will_and_at_stop(site: Site) -> None:
    status = site.tap(site.central.address, STATUS)
    assert status.wait(lambda m: m[-1:] == [(STATUS, b"online")], 10)  # retained
    site.agent.kill()  # no DISCONNECT: the broker publishes the will after 1.5 keepalives (5 s)
    assert status.wait(lambda m: m[-1][1] == b"offline", 20)
    site.agent.start()
    assert status.wait(lambda m: m[-1][1] == b"online", 15)
    site.agent.stop()  # graceful: the agent says offline itself
    assert status.wait(lambda m: m[-1][1] == b"offline", 5)
    late = site.tap(site.central.address, STATUS)  # a subscriber that comes later sees it retained
    assert late.wait(lambda m: m == [(STATUS, b"offline")], 10)
