"""Venue SCANNER_BLIND: an exit zone no scanner watches is told to every staff member in words
staff can act on, and so is its end; one scanner's restart notice tells no one by default."""

from __future__ import annotations

from agent.notify.circle import Circle
from agent.notify.notifier import Notifier
from tests.notify.conftest import T0, deliver_due, make_alert
from tests.notify.receiver import Receiver

SCANNER_BLIND = 69


def _unwatched(seq: int | None = None) -> dict[str, object]:
    ctx = {
        "zone": "Front door",
        "time": "2023-11-15T06:13:20+08:00",
        "scanners_down": "sc-front",
        "blind_s": 60,
        "since": "2023-11-15T06:12:20+08:00",
        "watched": 0,
        "text": "Exit Front door is not watched",
    }
    return {"1": "sc-front", "2": 60_000, "3": 0, "4": ctx}


def _watched_again() -> dict[str, object]:
    ctx = {"zone": "Front door", "time": "2023-11-15T06:20:00+08:00", "scanner": "sc-front", "watched": 1}
    return {"1": "sc-front", "2": 460_000, "3": 0, "4": ctx}


def test_an_unwatched_exit_goes_to_every_staff_member_a_scanner_restart_to_none(circle: Circle) -> None:
    # the circle's staff ("desk") did not list SCANNER_BLIND among its alerts
    assert not circle.contacts["desk"].wants(SCANNER_BLIND)
    exit_blind = make_alert(SCANNER_BLIND, device="GW-1", data=_unwatched())
    assert exit_blind.exit_watch is not None and not exit_blind.wristband
    assert [[c.id for c in r] for r in circle.rounds(exit_blind)] == [["desk"]]
    back = make_alert(SCANNER_BLIND, device="GW-1", data=_watched_again())
    assert [[c.id for c in r] for r in circle.rounds(back)] == [["desk"]]
    restart = make_alert(SCANNER_BLIND, device="GW-1", data={"1": "sc-lounge", "2": 120_000, "3": 1})
    assert restart.exit_watch is None and circle.rounds(restart) == []
    # a band's SCANNER_BLIND is the resident's circle's, as before
    band = make_alert(SCANNER_BLIND)
    assert band.exit_watch is None and band.wristband


async def test_staff_read_which_exit_which_scanner_since_when_and_what_to_do(notifier: Notifier, rx: Receiver) -> None:
    notifier.alert(make_alert(SCANNER_BLIND, device="GW-1", at=T0, data=_unwatched()))
    assert await deliver_due(notifier) == 1
    (msg,) = rx.at("desk")
    assert msg.title == "Exit not watched (Rosewood House)"
    assert "Exit Front door is not watched: scanner(s) sc-front down since 06:12 on 15 Nov." in msg.message
    assert "have someone watch that exit" in msg.message
    assert "cannot be located" not in msg.message and "A resident" not in msg.message

    notifier.alert(make_alert(SCANNER_BLIND, device="GW-1", at=T0 + 400, data=_watched_again()))
    assert await deliver_due(notifier) == 1
    again = rx.at("desk")[1]
    assert again.title == "Exit watched again (Rosewood House)"
    assert "Exit Front door is watched again: scanner sc-front is back." in again.message
    assert "watch that exit" not in again.message
