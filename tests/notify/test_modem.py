"""SMS through a serial modem: the real python-gsmmodem-new AT exchange against a modem on a pty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import modem
from agent.notify.circle import load_circle
from agent.notify.ledger import Ledger
from agent.notify.notifier import Notifier, Settings
from tests.notify.atmodem import AtModem
from tests.notify.conftest import Clock, deliver_due, make_alert
from tests.notify.receiver import Receiver

NUMBER = "+8613912345678"


@pytest.fixture
def at() -> Iterator[AtModem]:
    m = AtModem()
    yield m
    modem.configure(None)
    m.close()


def test_gsm_urls_need_a_modem_and_never_show_the_number(tmp_path: Path, rx: Receiver) -> None:
    from agent.notify import channels

    ch = channels.parse(f"gsm://{NUMBER}", modem=True)
    assert NUMBER not in ch.label and "…678" in ch.label
    assert NUMBER not in repr(ch)


async def test_an_sos_reaches_a_phone_through_the_modem(tmp_path: Path, rx: Receiver, at: AtModem) -> None:
    sms = modem.Modem(at.port)
    modem.configure(sms)
    path = tmp_path / "home.toml"
    path.write_text(f"""\
venue = "rosewood"
timezone = "Asia/Shanghai"
[[contacts]]
id = "li-wei"
name = "Li Wei"
language = "zh"
channels = ["gsm://{NUMBER}"]
[[staff]]
id = "desk"
channels = ["{rx.url("desk")}"]
[[residents]]
band = "WB-0001"
reference = "4号房"
circle = ["li-wei"]
""")
    circle = load_circle(path, modem=True)
    ledger = Ledger(tmp_path / "ledger.db")
    clock = Clock()
    n = Notifier({"rosewood": circle}, ledger, settings=Settings(retry_base_s=1.0), clock=clock)
    try:
        at.fail_next = 1  # the network refuses the first submission
        alert = make_alert(3, data={"1": "4号房", "2": "客厅", "3": {}})
        n.alert(alert)
        await deliver_due(n)
        (d,) = ledger.deliveries(alert.id, "alert")
        assert d.state == "failed" and "CmsError 500" in (d.last_error or "")
        assert NUMBER not in (d.last_error or "")
        clock.advance(1.1)
        await deliver_due(n)
        (d,) = ledger.deliveries(alert.id, "alert")
        assert d.state == "sent"
        (msg,) = at.messages()
        assert msg["number"] == NUMBER
        assert "4号房在客厅按下了紧急求助按钮" in msg["text"] and "11月15日" in msg["text"]
        assert any(c.startswith("AT+CMGS=") for c in at.commands)
        assert 'AT+CSCS="UCS2"' in at.commands  # Chinese goes as UCS-2
    finally:
        sms.close()
        ledger.close()
