# The rig fixture on a Raspberry Pi Pico (MicroPython): presses DUT buttons through
# optocouplers, switches DUT power through relays, reads DUT LEDs through phototransistors,
# answering the fixture line protocol (lib/fixture_proto.py) on USB serial. Wiring: docs/hil.md.
# The host side is hil_tests/rig/drivers.py FixtureDriver; in CI the same protocol is served by
# hil_tests/sim/fixture.py.
import sys

import fixture_proto as proto
from clock import sleep_ms

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_LED_THRESHOLD = const(20000)  # ADC reading (0..65535) above which an LED counts as lit
_SETTLE_MS = const(20)  # optocoupler / relay settle time after a change

# GPIO numbers per channel (docs/hil.md): button, tamper, power relay; LED sensing goes through
# a 4051 analogue multiplexer on ADC0 (GP26), selected by GP10..GP12: input 3*ch + (0 r, 1 g, 2 b)
CHANNELS = (
    {"button": 2, "tamper": 3, "power": 4},
    {"button": 5, "tamper": 6, "power": 7},
)
_MUX_SELECT = (10, 11, 12)
_ADC_PIN = const(26)


class Fixture:
    def __init__(self, machine, channels=CHANNELS):
        self.machine = machine
        self.channels = channels
        self.out = []
        for ch in channels:
            pins = {}
            for name in ("button", "tamper", "power"):
                pins[name] = machine.Pin(ch[name], machine.Pin.OUT, value=0)
            self.out.append(pins)
        self.mux = [machine.Pin(n, machine.Pin.OUT, value=0) for n in _MUX_SELECT]
        self.adc = machine.ADC(_ADC_PIN)

    def _lit(self, ch, colour):
        sel = 3 * ch + colour
        for i, pin in enumerate(self.mux):
            pin.value((sel >> i) & 1)
        sleep_ms(1)
        return 1 if self.adc.read_u16() > _LED_THRESHOLD else 0

    def handle(self, line):
        try:
            verb, ch, arg = proto.parse(line, len(self.channels))
        except proto.ProtoError as e:
            return proto.err(str(e))
        if verb == "PING":
            return proto.ok("fixture", proto.VERSION, len(self.channels))
        pins = self.out[ch]
        if verb == "PRESS" or verb == "RELEASE":
            pins[arg].value(1 if verb == "PRESS" else 0)
        elif verb == "HOLD":
            pins["button"].value(1)
            sleep_ms(arg)
            pins["button"].value(0)
        elif verb == "POWER":
            # the relay is normally closed: energised (1) cuts the DUT's supply
            pins["power"].value(0 if arg else 1)
        elif verb == "LED":
            return proto.ok(self._lit(ch, 0), self._lit(ch, 1), self._lit(ch, 2))
        else:
            return proto.err("channel %d has no sensor input %r" % (ch, arg[0]))
        sleep_ms(_SETTLE_MS)
        return proto.ok()


def run():
    import machine

    fx = Fixture(machine)
    buf = ""
    while True:
        c = sys.stdin.read(1)
        if c == "\n":
            print(fx.handle(buf.rstrip("\r")))
            buf = ""
        elif len(buf) > proto.MAX_LINE:
            print(proto.err("line too long"))
            buf = ""
        else:
            buf += c
