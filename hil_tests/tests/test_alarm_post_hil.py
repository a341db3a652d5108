"""Alarm posts on the rig: the same tests on a real bench (--rig bench.yaml) and on the
simulated one (--rig sim, the default, in `make test`). Everything goes through the drivers:
buttons and power through the fixture, LEDs read back through the fixture, the console for
what the device says, central's verifier for what arrives.
"""

from __future__ import annotations

from hil_tests.plugin import Rig


def _alarms(rig: Rig, device: str) -> set[tuple[int, int]]:
    return {(e["boot"], e["seq"]) for e in rig.central.events(device=device, type_name="ALARM")}


def test_press_reaches_central_and_the_led_says_so(rig: Rig) -> None:
    dut = rig.dut("AP-0001")
    before = _alarms(rig, dut.id)
    dut.click()
    dut.console.expect(rb"event \d+/\d+ type 1 saved", timeout=5)
    dut.wait_led("green", timeout=10)
    assert rig.central.wait_for(lambda: len(_alarms(rig, dut.id) - before) == 1, 10)


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
    dut.hold(3300)
    dut.console.expect(rb"type 2 saved", timeout=5)
    assert rig.central.wait_for(lambda: len(rig.central.events(device=dut.id, type_name="ALARM_HELD")) >= 1, 10)
