"""What the rig tests read as evidence: a post's console, followed event by event, and the
events central verified for a device."""

from __future__ import annotations

import re

from hil_tests.plugin import Dut, Rig

Key = tuple[int, int]


def central_keys(rig: Rig, device: str, type_name: str) -> list[Key]:
    """(boot, seq) of every event of `type_name` from `device` central verified, in arrival order."""
    return [(e["boot"], e["seq"]) for e in rig.central.events(device=device, type_name=type_name)]


class PostConsole:
    """What a post printed since the test began (the plugin drained its console), read
    through the console driver; `text` keeps all of it, in order."""

    def __init__(self, dut: Dut) -> None:
        self.dut = dut
        self.text = b""

    def expect(self, pattern: bytes, timeout: float) -> re.Match[bytes]:
        m = self.dut.console.expect(pattern, timeout)
        self.text += m.string[: m.end()]  # the driver consumed this much
        return m

    def saved(self, type_code: int, timeout: float = 5) -> Key:
        """The (boot, seq) of the next event of `type_code` the post saves to its flash."""
        m = self.expect(rb"alarm_post: event (\d+)/(\d+) type %d saved" % type_code, timeout)
        return int(m.group(1)), int(m.group(2))

    def receipts(self, *keys: Key, timeout: float = 10) -> None:
        """Wait for receipts 1 and 2 of each event, and check each event's lines are in order:
        saved, stored at the gateway, delivered."""
        for boot, seq in keys:
            lines = [b"event %d/%d type" % (boot, seq), *receipt_lines((boot, seq))]
            for line in lines[1:]:
                if line not in self.text:
                    self.expect(re.escape(line), timeout)
            at = [self.text.find(line) for line in lines]
            assert -1 not in at and at == sorted(at), f"not in this order: {lines}; console: {self.text[-800:]!r}"


def receipt_lines(key: Key) -> list[bytes]:
    return [b"event %d/%d stored at the gateway" % key, b"event %d/%d delivered" % key]
