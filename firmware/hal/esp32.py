# ESP32, ESP32-C3 and ESP32-S3 (MicroPython's esp32 port): the Board API of
# hal/machineboard.py plus what this port has.
# - Pin.irq(hard=True) for the inputs' edge rings; machine.WDT (cannot be stopped once
#   started); machine.RTC's calendar for rtc(); ADC with atten=ATTN_11DB and read_uv()
#   (factory-calibrated) for the battery and sensor channels.
# - Wi-Fi: network.WLAN(STA_IF); BLE: bluetooth.BLE() on NimBLE, where addr_mode=3 asks
#   for a fresh non-resolvable private address (a chosen address cannot be set).
# - Light sleep between waits when the board file asks for it ("sleep": "light", a band):
#   machine.lightsleep(ms), woken early by the button's level (Pin.irq(wake=SLEEP)).
#   The BLE controller does not advertise while the chip sleeps in MicroPython's build
#   (no Bluetooth modem-sleep), so the band sends the advert it was given when it wakes.
# make() builds the board from the real modules; tests pass fakes to Board().
from hal.machineboard import MachineBoard, _Input


class Board(MachineBoard):
    def __init__(self, spec, machine, network=None, bluetooth=None, neopixel=None, wifi=None):
        MachineBoard.__init__(self, spec, machine, network, bluetooth, neopixel, wifi)
        self._light = spec.get("sleep") == "light"

    def _sleep(self, ms):
        # GPIO edges do not wake a light sleep, levels do: while asleep the button's
        # interrupt waits for its pressed level (Pin.irq(wake=SLEEP)), then the edge
        # interrupts come back and a press that woke the chip is recorded with the wake time
        b = self.button
        if not isinstance(b, _Input) or b.value():
            return False  # pressed already: a level wake would fire at once
        m = self.machine
        Pin = m.Pin
        b.pin.irq(handler=b._isr, trigger=Pin.WAKE_LOW if b._inv else Pin.WAKE_HIGH, wake=m.SLEEP)
        try:
            m.lightsleep(ms)
        finally:
            b.pin.irq(handler=b._isr, trigger=Pin.IRQ_RISING | Pin.IRQ_FALLING, hard=True)
        if b.value():
            b._isr(b.pin)
        return True


def make(spec, wifi=None):
    import bluetooth
    import machine
    import network

    try:
        import neopixel
    except ImportError:
        neopixel = None
    return Board(spec, machine, network, bluetooth, neopixel, wifi)
