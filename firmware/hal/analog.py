# ADC inputs for a board that measures (a battery, a sensor channel: hal/machineboard.py loads
# this module then): millivolts from read_uv() where the port calibrates, read_u16() otherwise,
# and piecewise-linear scales (battery curves, sensor transducers); a sensor channel on a pin
# reads its level.
from clock import const

from hal import HalError

_ADC_SAMPLES = const(4)


class Adc:
    # an ADC input in millivolts: read_uv() where the port calibrates, read_u16() otherwise
    def __init__(self, machine, pin, vref_mv):
        ADC = machine.ADC
        try:
            self.adc = ADC(machine.Pin(pin), atten=ADC.ATTN_11DB)  # esp32: the 0-3.1 V range
        except (AttributeError, TypeError):
            self.adc = ADC(machine.Pin(pin))
        self.vref = vref_mv

    def mv(self):
        a = self.adc
        total = 0
        for _ in range(_ADC_SAMPLES):
            if hasattr(a, "read_uv"):
                total += a.read_uv() // 1000
            else:
                total += a.read_u16() * self.vref // 65535
        return total // _ADC_SAMPLES


def interpolate(curve, x):
    # piecewise-linear y at x on [(x, y), ...] (x increasing), clamped at both ends
    if x <= curve[0][0]:
        return curve[0][1]
    for i in range(1, len(curve)):
        x1, y1 = curve[i]
        if x <= x1:
            x0, y0 = curve[i - 1]
            return y0 + (y1 - y0) * (x - x0) // (x1 - x0)
    return curve[-1][1]


class Sensor:
    def __init__(self, read):
        self.read = read  # -> integer reading in the channel's unit


def battery(board):
    # the cell's charge in % from its voltage: the divider and the curve of the board file
    b = board.spec["battery"]
    if board._bat is None:
        board._bat = Adc(board.machine, b["adc"], board.spec["adc_vref_mv"])
    return interpolate(b["curve"], board._bat.mv() * b["ratio_x1000"] // 1000)


def sensor(board, name):
    # the channel `name` of the board file's "sensors": an ADC through its scale, or a pin
    s = board.spec.get("sensors", {}).get(name)
    if s is None:
        raise HalError("hal: board %s: no sensor channel %r in its pin map" % (board.spec["board"], name))
    if "adc" in s:
        adc = Adc(board.machine, s["adc"], board.spec["adc_vref_mv"])
        scale = s["scale"]
        return Sensor(lambda: interpolate(scale, adc.mv()))
    pin = board._sensor_inputs.get(name)
    if pin is None:
        pin = board._sensor_inputs[name] = board._input(name, s)
    return Sensor(pin.value)
