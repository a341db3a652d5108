"""Alarm posts on the rig: the same tests on a real bench (--rig bench.yaml) and on the
simulated one (--rig sim, the default, in `make test`). Everything goes through the drivers:
buttons and power through the fixture, LEDs read back through the fixture, the console for
what the device says, central's verifier for what arrives.

Each press is followed to the end: the (boot, seq) the post saved it under, its receipts 1
and 2 in order, exactly that event at central and nothing else from the post of that type,
and the LED's colour for a delivered alarm.
"""

from __future__ import annotations

from hil_tests.plugin import Rig
from hil_tests.tests.evidence import Key, PostConsole, central_keys

LONG_PRESS_MS = 3000  # the alarm post's default long_press_ms (firmware/apps/alarm_post/app.py)


def test_press_reaches_central_and_the_led_says_so(rig: Rig) -> None:
    dut = rig.dut("AP-0001")
    before = len(central_keys(rig, dut.id, "ALARM"))
    console = PostConsole(dut)
    dut.click()
    alarm = console.saved(1)
    console.receipts(alarm)
    # receipt 2 came after central's PUBACK: the event is there, exactly once, and no other
    assert rig.central.wait_for(lambda: central_keys(rig, dut.id, "ALARM")[before:] == [alarm], 10), (
        central_keys(rig, dut.id, "ALARM")[before:],
        alarm,
    )
    dut.wait_led("green", timeout=10)  # delivered


def test_power_cycle_comes_back_online(rig: Rig) -> None:
    dut = rig.dut("AP-0002")
    dut.power(False)
    assert dut.led() == "off"
    dut.power(True)
    m = dut.console.expect(rb"alarm_post: AP-0002 boot (\d+) outbox", timeout=15)
    boot = int(m.group(1))
    dut.console.expect(rb"alarm_post: connected", timeout=15)
    assert rig.central.wait_for(
        lambda: any(e["boot"] == boot for e in rig.central.events(device=dut.id, type_name="ONLINE")), 15
    )


def test_long_press_sends_alarm_then_alarm_held(rig: Rig) -> None:
    dut = rig.dut("AP-0001")
    before = {t: len(central_keys(rig, dut.id, t)) for t in ("ALARM", "ALARM_HELD")}
    console = PostConsole(dut)
    # the press is an ALARM at once; held past long_press_ms it is also an ALARM_HELD, next
    # in the same boot (the console is read meanwhile, as a terminal would)
    dut.press()
    try:
        alarm = console.saved(1)
        held = console.saved(2, timeout=LONG_PRESS_MS / 1000 + 5)
    finally:
        dut.release()
    assert held[0] == alarm[0] and held[1] > alarm[1], (alarm, held)
    console.receipts(alarm, held)

    def at_central() -> dict[str, list[Key]]:
        return {t: central_keys(rig, dut.id, t)[n:] for t, n in before.items()}

    expected = {"ALARM": [alarm], "ALARM_HELD": [held]}
    assert rig.central.wait_for(lambda: at_central() == expected, 10), (at_central(), expected)
    (event,) = [e for e in rig.central.events(device=dut.id, type_name="ALARM_HELD") if (e["boot"], e["seq"]) == held]
    assert event["priority"] == 0 and event["data"] == {"1": LONG_PRESS_MS}, event
    dut.wait_led("green", timeout=10)  # both delivered
