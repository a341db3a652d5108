# The Board API (as hal/unix.py defines it) on MicroPython's machine module, for the real
# ports: hal/esp32.py, hal/rp2.py and hal/zephyr.py add what differs per port. The modules a
# board uses (machine, network, bluetooth, neopixel) are constructor arguments, so the tests
# run this code on the unix port and CPython with fakes (tests/firmware/fakes/).
#
# Inputs (button, tamper, strap, digital sensor channels): the pin interrupt (a hard IRQ
# where the port has one) stores the level and ticks_ms() in a preallocated ring and sets the
# wake flag (_Wake, below): nothing is allocated, so a press made while the loop sleeps in
# poll() wakes it, and a press and release made while the loop is busy keep their own times.
# Board.service() drains the rings in the loop: handler(pin, level, ticks) per edge, in order.
# A ring that fills (32 edges before the loop came round) counts what it drops in `lost`; the
# level itself is always read live.
# Outputs: the RGB LED through three pins, three PWM channels (a duty for brightness:
# hal/pwm.py) or one neopixel (hal/pixel.py); the buzzer through a pin or a PWM tone
# (hal/pwm.py). The PWM and neopixel code loads only on a board whose board file asks for it.
# Parts a board may lack live in modules of their own, loaded when a board uses them, so its
# heap holds only its own parts' code: Wi-Fi from config.json "wifi" (hal/wifi.py: joins and
# retries with a doubling backoff; online() says whether the app may open its link; the
# credentials are never printed), the BLE radio (hal/ble.py), the sensor channels and the
# battery with their ADC scales (hal/analog.py), the RTC's calendar (hal/civil.py) and the
# accelerometer (hal/accel.py and the part's driver): the Board method hands over to its
# module. A bundle carries such a module only for an app that asks for the part
# (provisioning/closure.py).
# Watchdog: started at the first service() (the app's loop is running) and fed by every
# service() after it; a loop that stops coming round resets the board. Safe mode and the
# REPL before the app never start it.
import io
import select

from clock import const, sleep_ms, ticks_ms

from hal import HalError

_MP_STREAM_POLL = const(3)
_POLLIN = const(1)
_ERROR = const(-1)  # any other request (the unix port asks for a file descriptor: none)
_RING = const(32)  # edges kept per input until the loop drains them (a power of two)
_MASK = const(31)
_BUZZ_DUTY = const(32768)
_LIGHT_MIN_MS = const(20)  # shorter waits are not worth a light sleep's wake-up
RTC_FLOOR = const(1704067200)  # 2024-01-01: an RTC below this has not been set
_BATTERY_UNKNOWN = const(255)
# reset causes in the first heartbeat (docs/protocol.md section 2.1, HEARTBEAT key 4)
_RESET_UNKNOWN = const(0)
_RESET_POWER_ON = const(1)
_RESET_HARD = const(2)
_RESET_WATCHDOG = const(3)
_RESET_DEEPSLEEP = const(4)
_RESET_SOFT = const(5)
_RESET_NAMES = (
    ("PWRON_RESET", _RESET_POWER_ON),
    ("HARD_RESET", _RESET_HARD),
    ("WDT_RESET", _RESET_WATCHDOG),
    ("DEEPSLEEP_RESET", _RESET_DEEPSLEEP),
    ("SOFT_RESET", _RESET_SOFT),
)


class _Wake(io.IOBase):
    # The wake flag: joins the app's select.poll set like a socket and is readable while flag
    # is set. Pin and accelerometer interrupt handlers set flag (one attribute store: no
    # allocation, safe in a hard IRQ); service() clears it before it drains what the handlers
    # recorded, so an edge after the clear wakes the next poll again.
    # Why it works: a pin interrupt does not end select.poll() by itself on a board. poll()
    # asks every registered stream for readiness (the stream protocol's ioctl, MP_STREAM_POLL)
    # between waits for the port's next event, and the scheduled pin handler runs in that
    # wait, so the next round sees the flag (extmod/modselect.c). On the unix port an object
    # without a file descriptor is asked every millisecond
    # (MICROPY_PY_SELECT_IOCTL_CALL_PERIOD_MS). CPython's select.poll takes only file
    # descriptors: there this object cannot join a poll set.
    def __init__(self):
        self.flag = 0

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:
            return arg & _POLLIN if self.flag else 0
        return _ERROR


class _Input:
    def __init__(self, machine, name, spec, wake, hard):
        self.name = name
        pull = spec["pull"]
        Pin = machine.Pin
        self.pin = Pin(spec["pin"], Pin.IN, Pin.PULL_UP if pull == "up" else Pin.PULL_DOWN if pull == "down" else None)
        self._inv = 1 - spec["active"]
        self._wake = wake
        self._lv = bytearray(_RING)  # levels (0/1), a byte each; ticks need a full int
        self._t = [0] * _RING
        self._head = 0
        self._tail = 0
        self.lost = 0
        self._lost_seen = 0
        self._handler = None
        trig = Pin.IRQ_RISING | Pin.IRQ_FALLING
        if hard:
            self.pin.irq(handler=self._isr, trigger=trig, hard=True)
        else:
            self.pin.irq(handler=self._isr, trigger=trig)

    def _isr(self, p):
        # interrupt context: small ints and attribute stores only
        h = self._head
        n = (h + 1) & _MASK
        if n == self._tail:
            self.lost += 1
        else:
            self._lv[h] = p.value()
            self._t[h] = ticks_ms()
            self._head = n
        self._wake.flag = 1

    def value(self):
        return self.pin.value() ^ self._inv

    def irq(self, handler=None):
        # handler(pin, level, ticks_ms) from Board.service(), once per edge, in order
        self._handler = handler

    def _drain(self):
        h = self._handler
        while self._tail != self._head:
            i = self._tail
            level = self._lv[i] ^ self._inv
            t = self._t[i]
            self._tail = (i + 1) & _MASK
            if h is not None:
                h(self, level, t)
        if self.lost != self._lost_seen:
            # edges were dropped: the live level, now, puts the app back in step
            self._lost_seen = self.lost
            if h is not None:
                h(self, self.value(), ticks_ms())


class _Output:
    def __init__(self, machine, pin, active):
        self.pin = machine.Pin(pin, machine.Pin.OUT)
        self._inv = 1 - active
        self._v = 0
        self.pin.value(self._inv)

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        self.pin.value(self._v ^ self._inv)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class MachineBoard:
    HARD_IRQ = True  # Pin.irq(hard=True) exists on this port

    def __init__(self, spec, machine, network=None, bluetooth=None, neopixel=None, wifi=None):
        self.spec = spec
        self.machine = machine
        self.bluetooth = bluetooth
        self.hard_irq = self.HARD_IRQ
        self.wake = _Wake()
        self._inputs = []
        self.button = self._part("button")
        self.tamper = self._part("tamper")
        self.strap = self._part("strap")
        self._sensor_inputs = {}
        self._pixel = None
        self._leds = None
        led = spec.get("led")
        if led is not None and "neopixel" in led:
            if neopixel is None:
                raise HalError("hal: board %s: led.neopixel needs the neopixel module" % spec["board"])
            from hal.pixel import Pixel

            self._pixel = Pixel(neopixel, machine, led["neopixel"], led["level"])
        elif led is not None:
            if led["duty"] is not None:
                from hal.pwm import PwmOutput

                self._leds = [PwmOutput(machine, p, led["active"], 1000, led["duty"]) for p in led["rgb"]]
            else:
                self._leds = [_Output(machine, p, led["active"]) for p in led["rgb"]]
            self.led_r, self.led_g, self.led_b = self._leds
        bz = spec.get("buzzer")
        if bz is None:
            self.buzzer = _Absent("buzzer")
        elif bz["freq"]:
            from hal.pwm import PwmOutput

            self.buzzer = PwmOutput(machine, bz["pin"], bz["active"], bz["freq"], _BUZZ_DUTY)
        else:
            self.buzzer = _Output(machine, bz["pin"], bz["active"])
        self._colour = (0, 0, 0)
        self._radio = None
        self._accel = None
        self._bat = None
        self._wdt = None
        self._no_wdt = False
        self.wifi = None  # hal/wifi.py, for a config.json with "wifi": loaded only then
        if wifi is not None:
            if network is None:
                raise HalError("hal: board %s: config.json has wifi but the port has no network module" % spec["board"])
            from hal.wifi import Wifi

            self.wifi = Wifi(network, wifi)
        self._light = False  # light sleep between waits (a port that supports it sets it)
        self.light_sleeps = 0

    def _part(self, name):
        s = self.spec.get(name)
        return self._input(name, s) if s is not None else _Absent(name)

    def _input(self, name, s):
        pin = _Input(self.machine, name, s, self.wake, self.hard_irq)
        self._inputs.append(pin)
        return pin

    # outputs

    def rgb(self, r, g, b):
        c = (1 if r else 0, 1 if g else 0, 1 if b else 0)
        if c == self._colour:
            return
        self._colour = c
        if self._pixel is not None:
            self._pixel.rgb(c[0], c[1], c[2])
        elif self._leds is not None:
            for pin, v in zip(self._leds, c):
                pin.value(v)

    def colour(self):
        return self._colour

    # the poll set and the loop

    def register(self, poller):
        poller.register(self.wake, select.POLLIN)

    def service(self):
        self.wake.flag = 0
        for pin in self._inputs:
            pin._drain()
        self._feed()
        if self.wifi is not None:
            self.wifi.step(ticks_ms())
        return False

    def wait(self, poller, ms):
        # the loop's sleep: until something in the poll set is ready (the wake flag included)
        # or ms pass; a light sleep instead where the board allows it and nothing is ready
        if self._light and ms >= _LIGHT_MIN_MS and not self.wake.flag and not poller.poll(0) and self._sleep(ms):
            self.light_sleeps += 1
            return
        poller.poll(ms)

    def _sleep(self, ms):
        # a port's light sleep; False when it cannot sleep now
        self.machine.lightsleep(ms)
        return True

    def close(self):
        for pin in self._inputs:
            pin.pin.irq(handler=None)
        if self._accel is not None and self._accel.int is not None:
            self._accel.int.irq(handler=None)

    def _feed(self):
        if self._no_wdt:
            return
        w = self._wdt
        if w is None:
            WDT = getattr(self.machine, "WDT", None)
            if WDT is None:
                print("hal: this port has no machine.WDT: the board runs without a watchdog")
                self._no_wdt = True
                return
            w = self._wdt = WDT(timeout=self.spec.get("wdt_ms", 8000))
        w.feed()

    def online(self):
        # True while the app may open its link: always without Wi-Fi (a UART, or none)
        return self.wifi is None or self.wifi.online()

    # parts

    def uid(self):
        return bytes(self.machine.unique_id())

    def uart(self, baudrate=115200):
        u = self.spec.get("uart")
        if u is None:
            raise OSError("hal: board %s has no uart in its pin map" % self.spec["board"])
        m = self.machine
        # timeout=0: readinto() returns what is there (None when nothing) and never blocks
        return m.UART(u["id"], baudrate=baudrate, tx=m.Pin(u["tx"]), rx=m.Pin(u["rx"]), timeout=0, rxbuf=1024)

    # parts with their code in a module of their own, loaded on the first call (see the top)

    def radio(self):
        from hal.ble import radio  # BLE advertising (the band)

        return radio(self)

    def accel(self):
        from hal.accel import accel  # the board file's accelerometer (the band)

        return accel(self)

    def _i2c(self, i):
        m = self.machine
        return m.I2C(i["id"], scl=m.Pin(i["scl"]), sda=m.Pin(i["sda"]), freq=i["freq"])

    def battery(self):
        # the cell's charge in %, _BATTERY_UNKNOWN without a battery input
        if self.spec.get("battery") is None:
            return _BATTERY_UNKNOWN
        from hal.analog import battery  # the battery's ADC and curve

        return battery(self)

    def sensor(self, name):
        from hal.analog import sensor  # the sensor channels (ADC or pin)

        return sensor(self, name)

    # clock, reset

    def rtc(self):
        # unix seconds from the RTC, None until it has been set
        from hal.civil import rtc  # the RTC's calendar

        return rtc(self)

    def set_rtc(self, unix):
        from hal.civil import set_rtc

        set_rtc(self, unix)

    def reset_cause(self):
        m = self.machine
        if not hasattr(m, "reset_cause"):
            return _RESET_UNKNOWN
        cause = m.reset_cause()
        for name, code in _RESET_NAMES:
            if getattr(m, name, None) == cause:
                return code
        return _RESET_UNKNOWN

    def reset(self):
        self.machine.reset()

    def sleep_ms(self, ms):
        sleep_ms(ms)


class _Absent:
    # a part the board file leaves out: reads 0, takes writes, has no interrupt
    def __init__(self, name):
        self.name = name

    def value(self, v=None):
        return 0 if v is None else None

    def on(self):
        pass

    def off(self):
        pass

    def irq(self, handler=None):
        pass
