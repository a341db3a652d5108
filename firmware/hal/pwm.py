# A PWM output at a fixed frequency, on = `duty` (an LED's brightness, a buzzer's tone), for a
# board whose board file gives led.duty or buzzer.freq: hal/machineboard.py loads this module
# then, and only such a board's bundle carries it (provisioning/boards.py, its parts).
from hal.machineboard import _Output


class PwmOutput(_Output):
    def __init__(self, machine, pin, active, freq, duty):
        self._inv = 1 - active
        self._duty = duty
        self._v = 0
        self.pwm = machine.PWM(machine.Pin(pin, machine.Pin.OUT), freq=freq, duty_u16=65535 if self._inv else 0)

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        d = self._duty if self._v else 0
        self.pwm.duty_u16(65535 - d if self._inv else d)
        return None
