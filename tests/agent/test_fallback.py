"""The gateway's fallback notifier, driven directly: the real notifier core (agent/notify), its
ledger in SQLite, webhooks to a local HTTP receiver, an SMS modem on a pty; the pipeline and the
uplink replaced by what the fallback sees of them (events raised, an uplink's down time)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.gateway.config import NotifyConfig, SounderConfig
from agent.gateway.fallback import AlarmWatch, Fallback
from agent.gateway.signer import SealedBatch, Signer
from agent.gateway.sounder import SimRelay, Sounder
from agent.gateway.stats import FallbackCounters
from agent.notify import modem
from agent.notify.alert import Alert
from agent.notify.circle import load_circle
from agent.notify.ledger import Ledger
from agent.notify.links import Links
from agent.shared.frames import Event
from agent.shared.protocol import ZERO_HASH
from agent.shared.registry import Device, Registry
from tests.notify.atmodem import AtModem
from tests.notify.conftest import T0, Clock, deliver_due
from tests.notify.receiver import Receiver
from tests.test_notify_e2e import ESCALATE_S, circle

GW, EPOCH = "GW-1", 1_700_000_000
NOTIFIED, LOCAL_ACK = 9, 10
NUMBER = "+8613912345678"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def circle_file(tmp_path: Path, rx: Receiver, li: str | None = None) -> Path:
    """The end-to-end tests' circle (Li Wei, then Sam; the desk last) for venue "rosewood";
    `li`: another channel for Li Wei."""
    path = tmp_path / "circle.toml"
    text = circle(rx, "rosewood", ("WB-1",))
    path.write_text(text if li is None else text.replace(rx.url("li"), li))
    return path


class Uplink:
    def __init__(self, down_since_ms: int | None) -> None:
        self.down_since_ms = down_since_ms


class Home:
    """A fallback with everything it talks to recorded."""

    def __init__(self, tmp_path: Path, rx: Receiver, clock: Clock, down_since_ms: int | None, **kw: Any) -> None:
        self.clock = clock
        self.path = circle_file(tmp_path, rx, kw.pop("li", None))
        self.cfg = NotifyConfig(circle=self.path, fallback_after_s=20.0, ledger=tmp_path / "notify.db")
        self.registry = Registry(
            [
                Device("AP-1", "alarm_post", bytes(32), "rosewood", "Lobby"),
                Device("WB-1", "wristband", bytes(32), "rosewood", ""),
            ]
        )
        self.watch = AlarmWatch(GW, 20.0)
        self.uplink = Uplink(down_since_ms)
        self.raised: list[tuple[int, dict[int, Any]]] = []
        self.receipts: list[tuple[str, int, int, int]] = []
        self.tmp_path = tmp_path
        self.extra = kw
        self.fallback = self.build()
        self.sealer = Signer(KEY, GW, EPOCH, 0, ZERO_HASH)

    def build(self) -> Fallback:
        return Fallback(
            self.cfg,
            venue="rosewood",
            gateway_id=GW,
            registry=self.registry,
            watch=self.watch,
            uplink=self.uplink,
            raise_event=lambda t, d: self.raised.append((int(t), d)),
            send_receipt=lambda *a: self.receipts.append(a),
            circle=load_circle(self.path, modem=self.extra.get("modem") is not None),
            ledger=Ledger(self.cfg.ledger),
            links=Links(bytes(32), "http://192.168.1.10:8181"),
            clock=self.clock,
            **self.extra,
        )

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def events(self, type_: int) -> list[dict[int, Any]]:
        return [d for t, d in self.raised if t == type_]

    def batch(self, *events: Event) -> SealedBatch:
        return self.sealer.seal([e.encoded for e in events], self.now_ms(), events[0].prio)


def sos(clock: Callable[[], float], seq: int = 1, band: str = "WB-1") -> Event:
    data = {1: "Room 4", 2: "Lounge", 3: {"event_id": seq}}
    return Event(band, EPOCH, seq, 3, 0, int(clock() * 1000), data, b"")


def exit_(clock: Callable[[], float], seq: int) -> Event:
    return Event("WB-1", EPOCH, seq, 5, 0, int(clock() * 1000), {1: "Room 4", 2: "Front door", 3: {}}, b"")


def back_inside(clock: Callable[[], float], seq: int) -> Event:
    data = {1: "Room 4", 2: "Lounge", 3: {"resolves": "EXIT"}}
    return Event("WB-1", EPOCH, seq, 68, 0, int(clock() * 1000), data, b"")


def alarm(clock: Callable[[], float], seq: int = 2) -> Event:
    return Event("AP-1", 1, seq, 1, 0, int(clock() * 1000), {}, b"\x01" * 8, 1)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


async def test_central_down_the_gateway_tells_the_circle_round_by_round_and_central_learns_it(
    tmp_path: Path, rx: Receiver
) -> None:
    clock = Clock()
    home = Home(tmp_path, rx, clock, down_since_ms=int((T0 - 30) * 1000))  # central gone 30 s ago
    ev = sos(clock)
    home.watch.committed([ev])
    home.fallback.step()
    n = home.fallback.notifier
    assert await deliver_due(n) == 1
    assert [r.title for r in rx.at("li")] == ["SOS: Room 4 (Rosewood House)"], "the reference the band's alert gives"
    link = re.search(r"http://192\.168\.1\.10:8181/a/\S+", rx.at("li")[0].message)
    assert link is not None, "the link points at the gateway's page on the venue LAN"
    assert home.events(NOTIFIED) == [{1: "WB-1", 2: EPOCH, 3: 1, 4: ["li"], 5: 0, 6: int(T0 * 1000)}]
    assert home.fallback.counters.active and home.fallback.counters.taken == 1
    clock.advance(ESCALATE_S)
    n.tick()
    assert await deliver_due(n) == 1 and len(rx.at("son")) == 1
    assert home.events(NOTIFIED)[1] == {1: "WB-1", 2: EPOCH, 3: 1, 4: ["son"], 5: 1, 6: int((T0 + ESCALATE_S) * 1000)}
    # central's broker takes the alert: the gateway hands it over, no further round here
    home.uplink.down_since_ms = None
    home.watch.delivered(home.batch(ev))
    home.fallback.step()
    assert home.fallback.counters.handed_over == 1
    clock.advance(ESCALATE_S)
    n.tick()
    assert await deliver_due(n) == 0 and rx.at("desk") == []
    assert len(home.events(NOTIFIED)) == 2
    row = n.ledger.alert(f"WB-1/{EPOCH}/1")
    assert row is not None and row.state == "central"


async def test_with_the_uplink_up_an_alert_waits_for_its_puback_first(tmp_path: Path, rx: Receiver) -> None:
    clock = Clock()
    home = Home(tmp_path, rx, clock, down_since_ms=None)
    first, second = sos(clock, 1), alarm(clock, 2)
    home.watch.committed([first, second])
    home.fallback.step()
    assert home.fallback.notifier.ledger.alert(f"WB-1/{EPOCH}/1") is None
    assert home.watch.next_due_ms(None) == int((T0 + 20) * 1000)
    home.watch.delivered(home.batch(first, second))  # acknowledged in time: central tells people
    clock.advance(25)
    home.fallback.step()
    assert home.raised == [] and not home.fallback.counters.active
    # an alert whose PUBACK does not come within fallback_after_s is taken on
    third = sos(clock, 3, band="WB-2")
    home.watch.committed([third])
    clock.advance(19.9)
    home.fallback.step()
    assert home.raised == []
    clock.advance(0.2)
    home.fallback.step()
    assert await deliver_due(home.fallback.notifier) == 1 and len(rx.at("desk")) == 1, "a band without a circle: staff"
    assert home.events(NOTIFIED)[0][4] == ["desk"]


async def test_a_closer_before_the_alert_was_taken_on_drops_it_after_it_tells_who_was_told(
    tmp_path: Path, rx: Receiver
) -> None:
    clock = Clock()
    home = Home(tmp_path, rx, clock, down_since_ms=None)
    home.watch.committed([exit_(clock, 1)])
    clock.advance(5)
    home.watch.committed([back_inside(clock, 2)])  # back inside before anyone had to be told
    clock.advance(30)
    home.fallback.step()
    assert home.raised == [] and rx.received == []
    # an exit the gateway did tell the family of: the follow-up, and central hears of it
    home.watch.committed([exit_(clock, 3)])
    clock.advance(21)
    home.fallback.step()
    n = home.fallback.notifier
    await deliver_due(n)
    home.watch.committed([back_inside(clock, 4)])
    home.fallback.step()
    await deliver_due(n)
    assert [r.kind for r in rx.at("li")] == ["alert", "followup"]
    (follow,) = [d for d in home.events(NOTIFIED) if d.get(7) == "followup"]
    assert follow[3] == 3 and follow[4] == ["li"]


async def test_an_acknowledgement_at_the_gateway_stops_escalation_and_turns_the_post_white(
    tmp_path: Path, rx: Receiver
) -> None:
    clock = Clock()
    home = Home(tmp_path, rx, clock, down_since_ms=int((T0 - 60) * 1000))
    ev = alarm(clock)
    home.watch.committed([ev])
    home.fallback.step()
    n = home.fallback.notifier
    await deliver_due(n)
    (msg,) = rx.at("desk")
    token = msg.message.rsplit("/a/", 1)[1].split()[0]
    clock.advance(3)
    result = n.ack_link(token)
    assert result.status == "acked"
    home.fallback.acked(result.alert.id if result.alert else "", "link")
    assert home.receipts == [("AP-1", 1, 2, 3)], "receipt 3 to the post, through the receipt router"
    assert home.events(LOCAL_ACK) == [{1: "AP-1", 2: 1, 3: 2, 4: "desk", 5: "link", 6: int((T0 + 3) * 1000), 7: []}]
    clock.advance(600)
    n.tick()
    assert await deliver_due(n) == 0 and len(rx.received) == 1
    # a band's alert acknowledged: no receipt (a band takes none), LOCAL_ACK all the same
    band = sos(clock, 5)
    home.watch.committed([band])
    home.fallback.step()
    await deliver_due(n)
    link = rx.at("li")[0].message.rsplit("/a/", 1)[1].split()[0]
    assert n.ack_link(link).status == "acked"
    home.fallback.acked(f"WB-1/{EPOCH}/5", "link")
    assert len(home.receipts) == 1 and home.events(LOCAL_ACK)[1][4] == "li"


async def test_a_restart_takes_nothing_twice_and_hands_over_what_central_got_meanwhile(
    tmp_path: Path, rx: Receiver
) -> None:
    clock = Clock()
    home = Home(tmp_path, rx, clock, down_since_ms=int((T0 - 60) * 1000))
    one, two = sos(clock, 1), alarm(clock, 2)
    home.watch.committed([one, two])
    home.fallback.step()
    await deliver_due(home.fallback.notifier)
    assert len(rx.received) == 2 and len(home.events(NOTIFIED)) == 2
    home.fallback.notifier.ledger.close()
    # restart: the buffer still has the SOS (undelivered); the alarm reached central meanwhile
    home.raised.clear()
    home.watch = AlarmWatch(GW, 20.0)
    home.watch.committed([one])
    clock.advance(5)
    home.fallback = home.build()
    assert home.events(NOTIFIED) == [{1: "WB-1", 2: EPOCH, 3: 1, 4: ["li"], 5: 0, 6: int(T0 * 1000)}], "again"
    row = home.fallback.notifier.ledger.alert("AP-1/1/2")
    assert row is not None and row.state == "central"
    home.fallback.step()
    assert await deliver_due(home.fallback.notifier) == 0 and len(rx.received) == 2
    assert home.fallback.counters.taken == 0


async def test_no_internet_the_modem_sends_and_a_reply_acknowledges(tmp_path: Path, rx: Receiver) -> None:
    at = AtModem()
    sms = modem.Modem(at.port)
    modem.configure(sms)
    home = Home(tmp_path, rx, Clock(), down_since_ms=0, li=f"gsm://{NUMBER}", modem=sms)
    home.fallback.clock = home.fallback.notifier.clock = time.time
    task = asyncio.create_task(home.fallback.run())
    try:
        home.watch.committed([sos(time.time)])
        home.watch.changed.set()
        for _ in range(300):  # the message goes in several parts (concatenated SMS)
            if at.messages():
                break
            await asyncio.sleep(0.05)
        (msg,) = at.messages()
        assert msg["number"] == NUMBER
        code = re.search(r"Or reply OK (\d{6})", msg["text"])
        assert code is not None
        at.receive(NUMBER, f"OK {code.group(1)}")
        for _ in range(300):
            if home.events(LOCAL_ACK):
                break
            await asyncio.sleep(0.05)
        (ack,) = home.events(LOCAL_ACK)
        assert ack[4] == "li" and ack[5] == "sms"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        modem.configure(None)
        at.close()


async def test_the_sounder_pages_once_and_the_relay_follows_the_open_alerts(tmp_path: Path, rx: Receiver) -> None:
    out = tmp_path / "paged.txt"
    pager = tmp_path / "page-staff"
    pager.write_text(f'#!/bin/sh\necho "$@" >> {out}\n')
    pager.chmod(0o755)
    relay = SimRelay()
    counters = FallbackCounters()
    mono = Clock(0.0)
    cfg = SounderConfig(command=(str(pager), "{type}", "{place}", "{alert}"), sound_s=120.0)
    sounder = Sounder(cfg, relay=relay, counters=counters, venue="Rosewood House", clock=mono)
    try:
        clock = Clock()
        home = Home(tmp_path, rx, clock, down_since_ms=0, sounder=sounder, counters=counters)
        home.watch.committed([alarm(clock)])
        home.fallback.step()
        assert relay.on
        await asyncio.wait_for(asyncio.gather(*sounder._tasks), 10)
        assert out.read_text() == "ALARM Lobby AP-1/1/2\n"
        # acknowledged: the relay goes off
        n = home.fallback.notifier
        await deliver_due(n)
        n.ack("AP-1/1/2", "desk", "operator")
        home.fallback.step()
        assert not relay.on
        # an alert nobody acknowledges: the relay stops after sound_s all the same
        home.watch.committed([sos(clock, 9)])
        home.fallback.step()
        assert relay.on
        mono.advance(121)
        home.fallback.step()
        assert not relay.on and [on for _, on in relay.changes] == [True, False, True, False]
        await asyncio.wait_for(asyncio.gather(*sounder._tasks), 10)
        assert counters.sounder_failures == 0 and counters.sounder_runs == 2
    finally:
        await sounder.close()


async def test_a_failing_or_hanging_pager_is_counted_and_killed(tmp_path: Path) -> None:
    counters = FallbackCounters()
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    fail = tmp_path / "fail"
    fail.write_text("#!/bin/sh\nexit 3\n")
    fail.chmod(0o755)
    alert = Alert("v", GW, "AP-1", 1, 2, 1, 0)
    for program, timeout in ((fail, 5.0), (hang, 1.0)):
        sounder = Sounder(
            SounderConfig(command=(str(program),), command_timeout_s=timeout), relay=None, counters=counters, venue="v"
        )
        sounder.alert(alert, None)
        await asyncio.wait_for(asyncio.gather(*sounder._tasks), 10)
    assert counters.sounder_failures == 2 and counters.sounder_runs == 2


def test_the_sysfs_relay_writes_the_lines_value(tmp_path: Path) -> None:
    from agent.gateway.sounder import SysfsRelay

    line = tmp_path / "gpio17"
    line.mkdir()
    (line / "direction").write_text("in\n")
    (line / "value").write_text("0\n")
    relay = SysfsRelay(line)
    assert (line / "direction").read_text() == "low", "an output, off"
    relay.set(True)
    assert (line / "value").read_text() == "1"
    relay.set(False)
    assert (line / "value").read_text() == "0"
    low = SysfsRelay(line, active_low=True)
    low.set(True)
    assert (line / "value").read_text() == "0"
