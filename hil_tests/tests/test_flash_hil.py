"""Flashing on the rig: a post flashed with the station's bundle through the provisioning code
comes back with the same identity and its alarms still reach central. On a bench this needs the
bench file's `flasher` section (docs/hil.md); without one the test is skipped."""

from __future__ import annotations

from hil_tests.plugin import Rig
from hil_tests.tests.evidence import PostConsole, central_keys


def _boots(rig: Rig, device: str, type_name: str) -> set[int]:
    return {e["boot"] for e in rig.central.events(device=device, type_name=type_name)}


def test_flashed_post_comes_back_with_its_identity(rig: Rig) -> None:
    dut = rig.dut("AP-0002")
    online = _boots(rig, dut.id, "ONLINE")
    result = dut.flash()
    assert result.device == dut.id
    assert result.bundle == dut.flasher().bundle.bundle_id  # what its self-test read back
    # the post restarted into its app with the same id and key: central verifies it online
    assert rig.central.wait_for(lambda: bool(_boots(rig, dut.id, "ONLINE") - online), 15)
    before = len(central_keys(rig, dut.id, "ALARM"))
    console = PostConsole(dut)
    dut.click()
    alarm = console.saved(1)
    console.receipts(alarm)
    assert rig.central.wait_for(lambda: central_keys(rig, dut.id, "ALARM")[before:] == [alarm], 10)
