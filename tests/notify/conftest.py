"""Fixtures for the notifier: a local webhook receiver, care-circle files, a notifier on a clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.notify.alert import Alert
from agent.notify.circle import Circle, load_circle
from agent.notify.ledger import Ledger
from agent.notify.links import Links
from agent.notify.notifier import Notifier, Settings
from tests.notify.receiver import Receiver

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def circle_toml(rx: Receiver, escalate_after_s: float = 60, extra: str = "") -> str:
    return f"""\
venue = "rosewood"
name = "Rosewood House"
timezone = "Asia/Shanghai"
escalate_after_s = {escalate_after_s}

[[contacts]]
id = "li-wei"
name = "Li Wei"
language = "zh"
channels = ["{rx.url("li-wei")}"]

[[contacts]]
id = "anna"
name = "Anna"
channels = ["{rx.url("anna")}", "{rx.url("anna-mail")}"]

[[contacts]]
id = "tom"
name = "Tom"
channels = ["{rx.url("tom")}"]
alerts = ["SOS", "FALL", "EXIT", "MISSING", "BATTERY_LOW"]

[[staff]]
id = "desk"
name = "Night desk"
channels = ["{rx.url("desk")}"]

[[residents]]
band = "WB-0001"
reference = "Room 4"
circle = ["li-wei", ["anna", "tom"]]
{extra}"""


@pytest.fixture
def rx() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def circle(tmp_path: Path, rx: Receiver) -> Circle:
    path = tmp_path / "rosewood.toml"
    path.write_text(circle_toml(rx))
    return load_circle(path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier(tmp_path: Path, circle: Circle, clock: Clock) -> Iterator[Notifier]:
    ledger = Ledger(tmp_path / "ledger.db")
    links = Links(bytes(range(32)), "https://notify.example.org")
    n = Notifier(
        {circle.venue: circle},
        ledger,
        settings=Settings(retry_base_s=1.0, max_attempts=3, send_timeout_s=5.0),
        links=links,
        clock=clock,
    )
    yield n
    ledger.close()


SEQ = iter(range(1, 1_000_000))


def make_alert(
    type_: int,
    device: str = "WB-0001",
    at: float = T0,
    data: dict[str, Any] | None = None,
    seq: int | None = None,
    venue: str = "rosewood",
    gateway: str = "GW-1",
) -> Alert:
    if data is None:
        data = {"1": "Room 4", "2": "Lounge", "3": {"zone": "Lounge", "time": "2023-11-15T06:13:20+08:00"}}
    return Alert(venue, gateway, device, 1700000000, seq if seq is not None else next(SEQ), type_, int(at * 1000), data)


async def deliver_due(n: Notifier) -> int:
    """Send every delivery that is due now (one attempt each); how many were tried."""
    due = n.ledger.due_deliveries(n._now_ms(), 1000, set())
    for d in due:
        await n.deliver(d)
    return len(due)
