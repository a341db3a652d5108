# The rig fixture app's command handling with the Pico's GPIO replaced by recording pins (the
# one part that cannot exist here). Runs on MicroPython and CPython.
import clock
from apps.rig_fixture import app


class _Machine:
    # the Pico's machine module as far as the fixture uses it: recording pins, an ADC whose
    # reading depends on which multiplexer input is selected
    def __init__(self):
        self.pins = {}
        self.lit = set()  # multiplexer inputs whose phototransistor sees light
        machine = self

        class Pin:
            OUT = 1

            def __init__(self, n, mode, value=0):
                self.v = value
                self.history = [value]
                machine.pins[n] = self

            def value(self, v=None):
                if v is None:
                    return self.v
                self.v = v
                self.history.append(v)
                return None

        class ADC:
            def __init__(self, n):
                pass

            def read_u16(self):
                sel = 0
                for i, p in enumerate((10, 11, 12)):
                    sel |= machine.pins[p].v << i
                return 60000 if sel in machine.lit else 300

        class PWM:
            def __init__(self, pin):
                self.pin = pin
                self.hz = 0
                self.duty = None
                pin.pwm = self

            def freq(self, hz):
                self.hz = hz

            def duty_u16(self, d):
                self.duty = d

        self.Pin = Pin
        self.ADC = ADC
        self.PWM = PWM


def _fixture():
    m = _Machine()
    return app.Fixture(m), m


def test_ping_and_bad_lines():
    fx, _ = _fixture()
    assert fx.handle("PING") == "OK fixture 1 2"
    assert fx.handle("PRESS 2").startswith("ERR channel must be 0..1")
    assert fx.handle("FLY 0").startswith("ERR unknown command")
    assert fx.handle("").startswith("ERR empty")
    assert fx.handle("x" * 100).startswith("ERR line longer")
    assert fx.handle("HOLD 0 abc").startswith("ERR ms must be an integer")


def test_press_release_hold_drive_the_optocouplers():
    fx, m = _fixture()
    assert fx.handle("PRESS 1") == "OK"
    assert m.pins[5].v == 1 and m.pins[2].v == 0
    assert fx.handle("RELEASE 1") == "OK" and m.pins[5].v == 0
    assert fx.handle("PRESS 0 tamper") == "OK" and m.pins[3].v == 1
    t0 = clock.ticks_ms()
    assert fx.handle("HOLD 0 50") == "OK"
    assert clock.ticks_diff(clock.ticks_ms(), t0) >= 50
    assert m.pins[2].history[-2:] == [1, 0]


def test_power_relay_is_normally_closed():
    fx, m = _fixture()
    assert fx.handle("POWER 1 OFF") == "OK" and m.pins[7].v == 1
    assert fx.handle("POWER 1 on") == "OK" and m.pins[7].v == 0


def test_led_read_through_the_multiplexer():
    fx, m = _fixture()
    m.lit = {3 * 1 + 0, 3 * 1 + 1}  # channel 1: red and green lit -> amber
    assert fx.handle("LED 1") == "OK 1 1 0"
    assert fx.handle("LED 0") == "OK 0 0 0"
    assert fx.handle("SET 0 accel 5").startswith("ERR channel 0 has no sensor input")


def test_set_drives_the_sensor_dac_and_contact():
    fx, m = _fixture()
    smoke = m.pins[8].pwm
    assert smoke.hz == 20000 and smoke.duty == 0
    assert fx.handle("SET 0 smoke 1000") == "OK" and smoke.duty == 32767
    assert fx.handle("SET 0 smoke 2000") == "OK" and smoke.duty == 65535
    assert fx.handle("SET 0 smoke 2001").startswith("ERR smoke takes 0..2000")
    assert fx.handle("SET 0 smoke -1").startswith("ERR smoke takes 0..2000") and smoke.duty == 65535
    assert fx.handle("SET 1 gas 25") == "OK" and m.pins[9].pwm.duty == 25 * 65535 // 100
    assert fx.handle("SET 1 smoke 5").startswith("ERR channel 1 has no sensor input")
    assert fx.handle("SET 0 door 1") == "OK" and m.pins[14].v == 1
    assert fx.handle("SET 0 door 0") == "OK" and m.pins[14].v == 0
    assert fx.handle("SET 0 door 2").startswith("ERR door is a contact")
