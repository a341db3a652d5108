# One WS2812 pixel as the RGB LED, for a board whose board file gives led.neopixel:
# hal/machineboard.py loads this module then, and only such a board's bundle carries it
# (provisioning/boards.py, its parts).
class Pixel:
    def __init__(self, neopixel, machine, pin, level):
        self.np = neopixel.NeoPixel(machine.Pin(pin, machine.Pin.OUT), 1)
        self.level = level
        self.rgb(0, 0, 0)

    def rgb(self, r, g, b):
        lv = self.level
        self.np[0] = (lv if r else 0, lv if g else 0, lv if b else 0)
        self.np.write()
