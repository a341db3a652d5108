# ST LIS3DH accelerometer over I2C (datasheet DocID17530 rev 2, register map section 8;
# application note AN3308 for the FIFO and the free-fall interrupt). Written here because
# micropython-lib has no LIS3DH driver with the FIFO, and a band must not wake at 50 Hz.
# - High-resolution mode (12 bits), block data update, the range and rate the board file
#   gives (default +-8 g: a fall's impact reaches 3-4 g; 50 Hz, what lib/fall.py is tuned on).
# - The 32-sample FIFO in stream mode: the part keeps the last 640 ms (at 50 Hz) on its own.
# - INT1, latched, is the wake source: a free-fall event (AOI of X, Y, Z low, AN3308 section
#   6.3) always, and the FIFO watermark only while watch(True). A band therefore sleeps
#   through ordinary wear and is woken by a free fall, with the fall's first samples still in
#   the FIFO; it then watches (one read per watermark/ODR seconds) until the fall detector is
#   idle again. free_fall(mg, ms) sets the event from the detector's own figures so that it
#   fires for every free fall the detector would count (and possibly a few it would not).
# - Timestamps: samples leave the FIFO oldest first, one sample period apart; the newest one
#   is stamped with the time of the read, and a batch that continues the previous one keeps
#   the exact spacing from it (no jitter from when the loop came round). After an overrun
#   (samples were overwritten: the normal case after a time unwatched) the batch is stamped
#   from the read time again; `overruns` counts those that happened while watching.
# read() allocates its result (the loop's context, not an IRQ); irq() only sets a flag.
from clock import const, ticks_add, ticks_diff, ticks_ms

_WHO_AM_I = const(0x0F)
_CHIP_ID = const(0x33)
_CTRL_REG1 = const(0x20)
_CTRL_REG3 = const(0x22)
_CTRL_REG4 = const(0x23)
_CTRL_REG5 = const(0x24)
_OUT_X_L = const(0x28)
_FIFO_CTRL_REG = const(0x2E)
_FIFO_SRC_REG = const(0x2F)
_INT1_CFG = const(0x30)
_INT1_SRC = const(0x31)
_INT1_THS = const(0x32)
_INT1_DURATION = const(0x33)
_AUTO_INC = const(0x80)  # sub-address MSB: multi-byte read
_FIFO_DEPTH = const(32)
_SRC_OVRN = const(0x40)
_SRC_FSS = const(0x1F)
_STREAM = const(0x80)  # _FIFO_CTRL_REG FM = 10: stream mode
_FIFO_EN = const(0x40)
_LIR_INT1 = const(0x08)
_BDU_HR = const(0x88)  # _CTRL_REG4: block data update, high resolution
_XYZ_EN = const(0x07)
_I1_IA1 = const(0x40)
_I1_WTM = const(0x04)
_FREE_FALL = const(0x95)  # _INT1_CFG: AOI, ZLIE, YLIE, XLIE
_FREE_FALL_MG = const(350)  # AN3308: every axis below ~350 mg, until free_fall() sets the detector's
_FREE_FALL_SAMPLES = const(3)
_THS_MAX = const(127)

_ODR = {1: 1, 10: 2, 25: 3, 50: 4, 100: 5, 200: 6, 400: 7}  # Hz -> _CTRL_REG1 ODR code
_FS = {2: 0, 4: 1, 8: 2, 16: 3}  # g -> _CTRL_REG4 FS code
MG_PER_LSB = {2: 1, 4: 2, 8: 4, 16: 12}  # high-resolution mode, 12-bit values
_THS_MG = {2: 16, 4: 32, 8: 62, 16: 186}  # _INT1_THS LSB


class AccelError(Exception):
    pass


class Lis3dh:
    def __init__(self, i2c, addr=0x18, odr_hz=50, range_g=8, watermark=16, ticks=ticks_ms):
        if odr_hz not in _ODR or range_g not in _FS or not 1 <= watermark < _FIFO_DEPTH:
            raise AccelError(
                "lis3dh: unsupported rate %r Hz, range %r g or watermark %r" % (odr_hz, range_g, watermark)
            )
        self.i2c = i2c
        self.addr = addr
        self.period_ms = 1000 // odr_hz
        self.mg = MG_PER_LSB[range_g]
        self._ths_mg = _THS_MG[range_g]
        self._watch = 1  # the watermark on INT1 (set-up below); the app turns it off when idle
        self._ticks = ticks
        self._buf = bytearray(6 * _FIFO_DEPTH)
        self._mv = memoryview(self._buf)
        self._one = bytearray(1)
        self.pending = 0  # INT1 fired since the last read (set by irq())
        self.overruns = 0
        self._last = None  # ticks of the newest sample read so far
        try:
            who = self._get(_WHO_AM_I)
        except OSError as e:
            raise AccelError("lis3dh: no answer at I2C address 0x%02x: %s" % (addr, e))
        if who != _CHIP_ID:
            raise AccelError("lis3dh: _WHO_AM_I at 0x%02x reads 0x%02x, not 0x%02x" % (addr, who, _CHIP_ID))
        self._set(_CTRL_REG1, _ODR[odr_hz] << 4 | _XYZ_EN)
        self._set(_CTRL_REG4, _BDU_HR | _FS[range_g] << 4)
        self._set(_CTRL_REG5, _FIFO_EN | _LIR_INT1)
        self._set(_FIFO_CTRL_REG, 0)  # bypass first: empties the FIFO
        self._set(_FIFO_CTRL_REG, _STREAM | watermark)
        self._set(_INT1_THS, _FREE_FALL_MG // _THS_MG[range_g])
        self._set(_INT1_DURATION, _FREE_FALL_SAMPLES)
        self._set(_INT1_CFG, _FREE_FALL)
        self._set(_CTRL_REG3, _I1_IA1 | _I1_WTM)

    def _get(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._one)
        return self._one[0]

    def _set(self, reg, v):
        self._one[0] = v
        self.i2c.writeto_mem(self.addr, reg, self._one)

    def irq(self, pin=None):
        # INT1 handler: a flag only
        self.pending = 1

    def watch(self, on):
        # the watermark on INT1 too (every batch wakes the board) or the free fall only
        on = 1 if on else 0
        if on != self._watch:
            self._watch = on
            self._set(_CTRL_REG3, _I1_IA1 | _I1_WTM if on else _I1_IA1)

    def free_fall(self, mg, ms):
        # the free-fall event for a detector that counts |a| < mg held ms long: every axis
        # below mg (rounded up to the register's step: |a| < mg implies it) for one sample
        # fewer than ms holds (rounded down), so it fires for each such free fall
        self._set(_INT1_THS, min(_THS_MAX, -(-mg // self._ths_mg)))
        self._set(_INT1_DURATION, max(0, ms // self.period_ms - 1))

    def read(self):
        # the samples in the FIFO, oldest first: [(ticks_ms, x, y, z)] in milli-g
        src = self._get(_FIFO_SRC_REG)
        if self.pending:
            self.pending = 0
            self._get(_INT1_SRC)  # releases the latched interrupt
        n = src & _SRC_FSS
        over = src & _SRC_OVRN
        if over:
            n = _FIFO_DEPTH
            self.overruns += self._watch
        if not n:
            return []
        self.i2c.readfrom_mem_into(self.addr, _OUT_X_L | _AUTO_INC, self._mv[: 6 * n])
        now = self._ticks()
        p = self.period_ms
        first = ticks_add(now, -(n - 1) * p)
        last = self._last
        if last is not None and not over:
            # a batch that continues the last one keeps its spacing, unless the loop was
            # away so long that the two do not touch (then the read time is the anchor)
            gap = ticks_diff(first, ticks_add(last, p))
            if -p <= gap <= p:
                first = ticks_add(last, p)
        b = self._buf
        mg = self.mg
        out = []
        for i in range(n):
            j = 6 * i
            out.append((ticks_add(first, i * p), _s12(b, j) * mg, _s12(b, j + 2) * mg, _s12(b, j + 4) * mg))
        self._last = ticks_add(first, (n - 1) * p)
        return out


def _s12(b, j):
    # a left-justified 16-bit little-endian two's complement value, 12 bits significant
    v = b[j] | b[j + 1] << 8
    if v & 0x8000:
        v -= 0x10000
    return v >> 4
