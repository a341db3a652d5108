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


def phone_circle(tmp_path: Path, rx: Receiver, contact: str, language: str, reference: str) -> Path:
    """A care circle whose one contact is reached by SMS through the modem."""
    path = tmp_path / "home.toml"
    path.write_text(f"""\
venue = "rosewood"
timezone = "Asia/Shanghai"
[[contacts]]
id = "{contact}"
name = "Li Wei"
language = "{language}"
channels = ["gsm://{NUMBER}"]
[[staff]]
id = "desk"
channels = ["{rx.url("desk")}"]
[[residents]]
band = "WB-0001"
reference = "{reference}"
circle = ["{contact}"]
""")
    return path


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
    path = phone_circle(tmp_path, rx, "li-wei", "zh", "4号房")
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


async def test_a_reply_with_the_code_from_the_right_phone_acknowledges(
    tmp_path: Path, rx: Receiver, at: AtModem
) -> None:
    import asyncio
    import re

    from agent.notify.links import Links

    sms = modem.Modem(at.port)
    modem.configure(sms)
    path = phone_circle(tmp_path, rx, "sam", "en", "Room 4")
    ledger = Ledger(tmp_path / "ledger.db")
    clock = Clock()
    n = Notifier(
        {"rosewood": load_circle(path, modem=True)}, ledger, links=Links(bytes(32), "https://x.example"), clock=clock
    )
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    sms.on_sms = lambda number, text: loop.call_soon_threadsafe(replies.put_nowait, (number, text))
    try:
        alert = make_alert(3)
        n.alert(alert)
        await deliver_due(n)
        (msg,) = at.messages()
        code = re.search(r"Or reply OK (\d{6})", msg["text"])
        assert code is not None
        wrong = "000000" if code.group(1) != "000000" else "111111"
        results = []
        for number, text in [
            ("+8613900000000", f"OK {code.group(1)}"),  # the right code from another phone
            (NUMBER, f"OK {wrong}"),  # the right phone, a wrong code
            (NUMBER, f"ok {code.group(1)} on my way"),
        ]:
            at.deleted.clear()
            at.receive(number, text)  # one at a time, as a network delivers them
            try:
                heard = await asyncio.wait_for(replies.get(), 10)
            except TimeoutError:
                raise AssertionError(at.commands[-8:]) from None
            assert heard == (number, text)
            results.append(n.ack_reply(*heard).status)
            # the library deletes a message after handing it over; a notice in the middle of that
            # exchange would be taken for its answer (a real modem queues it; this one waits)
            assert await asyncio.to_thread(at.deleted.wait, 5)
        assert results == ["invalid", "invalid", "acked"]
        row = ledger.alert(alert.id)
        assert row is not None and row.state == "acked" and row.acked_by == "sam"
        assert n.counts["links_rejected_sms_unmatched"] == 1 and n.counts["links_rejected_sms_bad_code"] == 1
        assert ledger.command_state(alert.id) == "pending"
    finally:
        sms.close()
        ledger.close()
