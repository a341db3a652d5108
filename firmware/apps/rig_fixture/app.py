# The rig fixture on a Raspberry Pi Pico (MicroPython): presses DUT buttons through
# optocouplers, switches DUT power through relays, reads DUT LEDs through phototransistors,
# feeds a venue sensor's inputs (a PWM output behind an RC filter in place of an analogue
# sensor, an optocoupler in place of a contact), answering the fixture line protocol
# (lib/fixture_proto.py) on USB serial. Wiring: docs/hil.md.
# The host side is hil_tests/rig/drivers.py FixtureDriver; in CI the same protocol is served by
# hil_tests/sim/fixture.py.
import sys

import fixture_proto as proto
from clock import const, sleep_ms

_LED_THRESHOLD = const(20000)  # ADC reading (0..65535) above which an LED counts as lit
_SETTLE_MS = const(20)  # optocoupler / relay settle time after a change

_PWM_HZ = const(20000)  # far above the RC filter's corner (10 kOhm, 10 uF: 1.6 Hz)

# GPIO numbers per channel (docs/hil.md): button, tamper, power relay; LED sensing goes through
# a 4051 analogue multiplexer on ADC0 (GP26), selected by GP10..GP12: input 3*ch + (0 r, 1 g, 2 b).
# "sensors": name -> ("dac", gpio, full_scale): SET drives the PWM duty value/full_scale of
# 3.3 V (the DUT's sensor input scales its ADC reading back with the same full scale), or
# ("contact", gpio): SET 1 closes the optocoupler, 0 opens it.
CHANNELS = (
    {"button": 2, "tamper": 3, "power": 4, "sensors": {"smoke": ("dac", 8, 2000), "door": ("contact", 14)}},
    {"button": 5, "tamper": 6, "power": 7, "sensors": {"gas": ("dac", 9, 100), "door": ("contact", 15)}},
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
            sensors = {}
            for name, spec in ch.get("sensors", {}).items():
                pin = machine.Pin(spec[1], machine.Pin.OUT, value=0)
                if spec[0] == "dac":
                    pwm = machine.PWM(pin)
                    pwm.freq(_PWM_HZ)
                    pwm.duty_u16(0)
                    sensors[name] = (pwm, spec[2])
                else:
                    sensors[name] = (pin, None)
            pins["sensors"] = sensors
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
            name, value = arg
            out = pins["sensors"].get(name)
            if out is None:
                return proto.err("channel %d has no sensor input %r" % (ch, name))
            dev, full = out
            if full is None:
                if value not in (0, 1):
                    return proto.err("%s is a contact: 0 or 1" % name)
                dev.value(value)
            else:
                if not 0 <= value <= full:
                    return proto.err("%s takes 0..%d" % (name, full))
                dev.duty_u16(value * 65535 // full)
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
