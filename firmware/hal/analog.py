# ADC inputs for a board that measures (a battery, a sensor channel: hal/machineboard.py loads
# this module then): millivolts from read_uv() where the port calibrates, read_u16() otherwise,
# and piecewise-linear scales (battery curves, sensor transducers).
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


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
