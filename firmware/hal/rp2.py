# Raspberry Pi Pico W (MicroPython's rp2 port): the Board API of hal/machineboard.py.
# - Pin.irq(hard=True) for the inputs' edge rings; machine.WDT (at most 8388 ms, cannot be
#   stopped); machine.RTC's calendar for rtc() (the rp2 port's epoch is 1970, and the RTC
#   does not keep time across a power cut: rtc() is None until something sets it).
# - ADC through read_u16() scaled by the board file's adc_vref_mv (3.3 V on the Pico W: the
#   port has no calibrated read_uv()); the Pico W measures VSYS on ADC3 through a 3:1 divider
#   (GPIO29, shared with the radio's SPI clock: read it only while the radio is idle).
# - Wi-Fi: network.WLAN(STA_IF) on the CYW43439; the on-board LED is Pin("LED") on that chip.
#   No BLE advertising in this product (the alarm post talks MQTT or UART).
# make() builds the board from the real modules; tests pass fakes to Board().
from hal.machineboard import MachineBoard


class Board(MachineBoard):
    HARD_IRQ = True


def make(spec, wifi=None):
    import machine
    import network

    try:
        import neopixel
    except ImportError:
        neopixel = None
    return Board(spec, machine, network, None, neopixel, wifi)
