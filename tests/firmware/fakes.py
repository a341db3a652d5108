# Small fakes of MicroPython's machine, network, bluetooth and neopixel modules for the board
# tests (hal/machineboard.py and the port modules), following the documented behaviour of the
# real ones (docs.micropython.org: machine.Pin, PWM, ADC, UART, I2C, WDT, RTC; network.WLAN;
# bluetooth.BLE; neopixel.NeoPixel), plus an LIS3DH on the fake I2C bus that follows its
# datasheet (FIFO in stream mode, FIFO_SRC_REG, burst reads of the output registers, INT1).
# Tests drive the outside world with the methods named drive_*, push, set_mv, feed_rx.
# Runs on MicroPython and CPython.
import io

try:
    import micropython

    _schedule = micropython.schedule
except (ImportError, AttributeError):
    _schedule = None


class FakeReset(Exception):
    pass


class Machine:
    # one board's machine module; esp32=False gives the rp2 flavour (ADC without read_uv)
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5
    SLEEP = 2
    DEEPSLEEP = 4

    def __init__(self, esp32=True, cause=1, uid=b"\x10\x20\x30\x40\x50\x60"):
        m = self
        self.pins = {}
        self.pwms = []
        self.uarts = []
        self.wdts = []
        self.i2c_devices = {}
        self.adc_mv = {}
        self.cause = cause
        self.uid = uid
        self.rtc_dt = (2000, 1, 1, 5, 0, 0, 0, 0)  # power-on value of an unset RTC (a Saturday)
        self.sleeps = []  # ms of each lightsleep()
        self.sleep_woken = 0
        self.on_sleep = None  # called as a light sleep begins (what happens while asleep)

        class Pin(_Pin):
            machine = m

        class PWM(_PWM):
            machine = m

        class ADC(_AdcEsp32 if esp32 else _Adc):
            machine = m

        class UART(_Uart):
            machine = m

        class I2C(_I2c):
            machine = m

        class WDT(_Wdt):
            machine = m

        class RTC(_Rtc):
            machine = m

        self.Pin = Pin
        self.PWM = PWM
        self.ADC = ADC
        self.UART = UART
        self.I2C = I2C
        self.WDT = WDT
        self.RTC = RTC

    def reset_cause(self):
        return self.cause

    def unique_id(self):
        return self.uid

    def reset(self):
        raise FakeReset()

    def lightsleep(self, ms):
        # sleeps up to ms; a pin whose irq has wake=SLEEP and reads its wake level ends it
        from clock import sleep_ms, ticks_diff, ticks_ms

        self.sleeps.append(ms)
        if self.on_sleep is not None:
            self.on_sleep()
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < ms:
            for p in self.pins.values():
                if p.wake_level is not None and p.level == p.wake_level:
                    self.sleep_woken += 1
                    return
            sleep_ms(1)


class _Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8
    WAKE_LOW = 16
    WAKE_HIGH = 32
    machine = None

    def __init__(self, id, mode=-1, pull=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.level = 1 if pull == self.PULL_UP else 0
        self.handler = None
        self.trigger = 0
        self.hard = False
        self.wake_level = None
        self.machine.pins[id] = self

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        return None

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, hard=False, wake=None):
        self.handler = handler
        self.trigger = trigger
        self.hard = hard
        self.wake_level = None
        if wake is not None and trigger & (self.WAKE_LOW | self.WAKE_HIGH):
            self.wake_level = 0 if trigger & self.WAKE_LOW else 1

    def drive(self, level):
        # the outside world sets an input; the irq runs as the port runs it: at once for a
        # hard irq, through the scheduler for a soft one (where MicroPython has one)
        level = 1 if level else 0
        if level == self.level:
            return
        self.level = level
        edge = self.IRQ_RISING if level else self.IRQ_FALLING
        wake = self.WAKE_HIGH if level else self.WAKE_LOW
        if self.handler is None or not self.trigger & (edge | wake):
            return
        if self.hard or _schedule is None:
            self.handler(self)
        else:
            _schedule(self.handler, self)


class _PWM:
    machine = None

    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin
        self.f = freq
        self.duty = duty_u16
        self.machine.pwms.append(self)

    def freq(self, f=None):
        if f is None:
            return self.f
        self.f = f
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self.duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be 0-65535")
        self.duty = d
        return None


class _Adc:
    # rp2 flavour: read_u16() only
    machine = None

    def __init__(self, pin, atten=None):
        self.id = pin.id
        self.atten = atten

    def _mv(self):
        return self.machine.adc_mv.get(self.id, 0)

    def read_u16(self):
        # 12-bit converter scaled to 16 bits (rp2): full scale 3300 mV
        raw = min(4095, self._mv() * 4095 // 3300)
        return raw << 4 | raw >> 8


class _AdcEsp32(_Adc):
    # esp32 flavour: attenuation and the calibrated read_uv()
    ATTN_11DB = 3

    def read_uv(self):
        return self._mv() * 1000


class _Uart(io.IOBase):
    machine = None

    def __init__(self, id, baudrate=9600, tx=None, rx=None, timeout=0, rxbuf=256):
        self.id = id
        self.baudrate = baudrate
        self.tx = tx
        self.rx = rx
        self.timeout = timeout
        self.rxbuf = rxbuf
        self.inbox = bytearray()
        self.sent = bytearray()
        self.open = True
        self.machine.uarts.append(self)

    def feed_rx(self, data):
        # bytes arriving on RX; what exceeds rxbuf is lost, as on the real FIFO
        room = self.rxbuf - len(self.inbox)
        self.inbox += data[:room]

    def any(self):
        return len(self.inbox)

    def readinto(self, buf, nbytes=None):
        # None when nothing arrived within the timeout (docs: UART.readinto)
        n = len(buf) if nbytes is None else nbytes
        n = min(n, len(self.inbox))
        if not n:
            return None
        buf[:n] = self.inbox[:n]
        self.inbox = self.inbox[n:]
        return n

    def write(self, data):
        self.sent += data
        return len(data)

    def deinit(self):
        self.open = False

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            return arg & 1 if self.inbox else 0
        return -1


class _I2c:
    machine = None

    def __init__(self, id, scl=None, sda=None, freq=400000):
        self.id = id
        self.freq = freq

    def _dev(self, addr):
        d = self.machine.i2c_devices.get(addr)
        if d is None:
            raise OSError(19)  # ENODEV: no acknowledge at that address
        return d

    def readfrom_mem_into(self, addr, reg, buf):
        self._dev(addr).read(reg, buf)

    def writeto_mem(self, addr, reg, buf):
        self._dev(addr).write(reg, buf)


class _Wdt:
    machine = None

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        self.machine.wdts.append(self)

    def feed(self):
        self.feeds += 1


class _Rtc:
    machine = None

    def datetime(self, dt=None):
        if dt is None:
            return self.machine.rtc_dt
        self.machine.rtc_dt = tuple(dt)
        return None


class Network:
    # network with one WLAN; `accept` says whether joins succeed
    STA_IF = 0

    def __init__(self, accept=True):
        net = self
        self.accept = accept
        self.joins = []  # (ssid, password) of each connect()
        self.wlans = []

        class WLAN(_Wlan):
            network = net

        self.WLAN = WLAN


class _Wlan:
    network = None

    def __init__(self, interface):
        self.on = False
        self.up = False
        self.network.wlans.append(self)

    def active(self, v=None):
        if v is None:
            return self.on
        self.on = bool(v)
        return None

    def connect(self, ssid, key=None):
        if not self.on:
            raise OSError("wifi not active")
        self.network.joins.append((ssid, key))
        self.up = self.network.accept

    def disconnect(self):
        self.up = False

    def isconnected(self):
        return self.up

    def drop(self):
        # the access point went away
        self.up = False


class Bluetooth:
    # bluetooth with one BLE; rotates=False is a port that ignores addr_mode (zephyr)
    def __init__(self, rotates=True):
        bt = self
        self.rotates = rotates
        self.bles = []

        class BLE(_Ble):
            bluetooth = bt

        self.BLE = BLE


class _Ble:
    bluetooth = None

    def __init__(self):
        self.on = False
        self.adverts = []  # (interval_us, bytes or None, connectable)
        self.mac = b"\xc0\x00\x00\x00\x00\x01"
        self.addr_mode = 0
        self.bluetooth.bles.append(self)

    def active(self, v=None):
        if v is None:
            return self.on
        self.on = bool(v)
        return None

    def config(self, *args, **kw):
        if args:
            if args[0] == "mac":
                return (1, self.mac)
            raise ValueError("unknown config param")
        if "addr_mode" in kw:
            self.addr_mode = kw["addr_mode"]
            if self.bluetooth.rotates:
                n = self.mac[5] + 1
                self.mac = self.mac[:5] + bytes([n & 0xFF])
        return None

    def gap_advertise(self, interval_us, adv_data=None, connectable=True):
        if not self.on:
            raise OSError(19)
        self.adverts.append((interval_us, None if adv_data is None else bytes(adv_data), connectable))


class NeoPixelModule:
    def __init__(self):
        self.strips = []
        mod = self

        class NeoPixel(_NeoPixel):
            module = mod

        self.NeoPixel = NeoPixel


class _NeoPixel:
    module = None

    def __init__(self, pin, n):
        self.pin = pin
        self.buf = [(0, 0, 0)] * n
        self.written = []  # what write() sent, one list per write
        self.module.strips.append(self)

    def __setitem__(self, i, v):
        self.buf[i] = tuple(v)

    def __getitem__(self, i):
        return self.buf[i]

    def write(self):
        self.written.append(list(self.buf))


class Lis3dh:
    # an LIS3DH on the fake bus (datasheet DocID17530: registers 0x0F, 0x20-0x33). Samples
    # pushed in milli-g are stored as the part stores them for the configured range in
    # high-resolution mode (12 bits, left-justified); INT1 goes high at the watermark (while
    # CTRL_REG3 routes it) and, latched until INT1_SRC is read, on a free fall.
    def __init__(self, machine, addr=0x18, int_pin=None):
        self.regs = bytearray(0x40)
        self.regs[0x0F] = 0x33
        self.fifo = []
        self.ovrn = False
        self.int_pin = int_pin
        self.latched = False
        self.low_run = 0  # samples in a row with every axis below the free-fall threshold
        self.reads = 0  # burst reads of the FIFO (what a board pays I2C time for)
        machine.i2c_devices[addr] = self

    def mg_per_lsb(self):
        return (1, 2, 4, 12)[self.regs[0x23] >> 4 & 3]

    def push(self, x, y, z):
        # one sample at the output data rate; stream mode drops the oldest when full
        lsb = self.mg_per_lsb()
        raw = []
        for v in (x, y, z):
            c = max(-2048, min(2047, round(v / lsb)))
            raw.append((c << 4) & 0xFFFF)
        if self.regs[0x24] & 0x40 and self.regs[0x2E] >> 6 == 2:
            if len(self.fifo) == 32:
                self.fifo.pop(0)
                self.ovrn = True
            self.fifo.append(raw)
        else:
            self.fifo = [raw]
        self._free_fall(x, y, z)
        self._int()

    def _free_fall(self, x, y, z):
        # INT1_CFG 0x95 (AOI, X/Y/Z low): every axis below INT1_THS, held longer than
        # INT1_DURATION samples (the stricter reading of the datasheet), latches IA1
        threshold = (self.regs[0x32] & 0x7F) * (16, 32, 62, 186)[self.regs[0x23] >> 4 & 3]
        if self.regs[0x30] == 0x95 and abs(x) < threshold and abs(y) < threshold and abs(z) < threshold:
            self.low_run += 1
            if self.low_run > self.regs[0x33] & 0x7F and self.regs[0x22] & 0x40:
                self.latched = True
        else:
            self.low_run = 0

    def _level(self):
        wtm = self.regs[0x2E] & 0x1F
        return self.latched or bool(self.regs[0x22] & 0x04 and len(self.fifo) > wtm)

    def _int(self):
        if self.int_pin is not None and self._level():
            self.int_pin.drive(1)

    def read(self, reg, buf):
        auto = reg & 0x80
        reg &= 0x7F
        if reg == 0x2F:
            n = len(self.fifo)
            src = min(n, 31) | (0x20 if n == 0 else 0) | (0x40 if self.ovrn else 0)
            if n > self.regs[0x2E] & 0x1F:
                src |= 0x80
            buf[0] = src
            return
        if reg == 0x31:
            buf[0] = 0x40 if self.latched else 0
            self.latched = False
            if self.int_pin is not None and not self._level():
                self.int_pin.drive(0)
            return
        if reg == 0x28 and auto:
            self.reads += 1
            # burst from OUT_X_L: samples leave the FIFO one per 6 bytes (the address rolls
            # back to 0x28 after 0x2D while the FIFO is on)
            if len(buf) % 6:
                raise OSError(5)
            for i in range(len(buf) // 6):
                s = self.fifo.pop(0) if self.fifo else [0, 0, 0]
                for k in range(3):
                    buf[6 * i + 2 * k] = s[k] & 0xFF
                    buf[6 * i + 2 * k + 1] = s[k] >> 8
            self.ovrn = False
            if self.int_pin is not None and not self._level():
                self.int_pin.drive(0)
            return
        for i in range(len(buf)):
            buf[i] = self.regs[(reg + i if auto else reg) & 0x3F]

    def write(self, reg, buf):
        reg &= 0x7F
        for i in range(len(buf)):
            self.regs[reg + i] = buf[i]
        if reg == 0x2E and buf[0] >> 6 == 0:
            self.fifo = []  # bypass mode empties the FIFO
            self.ovrn = False
        if reg == 0x22 and self.int_pin is not None:
            self.int_pin.drive(1 if self._level() else 0)  # INT1 follows what is routed to it
