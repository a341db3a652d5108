# The accelerometer as the app sees it, for a board whose board file names one (hal/machineboard.py
# accel() loads this module and the part's driver then): read() -> [(ticks_ms, x, y, z)]
# milli-g; due() when its interrupt asked for a read; watch(on): every FIFO batch wakes the
# board, or only a free fall (free_fall(mg, ms) sets which). A part without a wired INT1 is
# polled. The interrupt handler only sets flags (the driver's pending, the board's wake).


def accel(board):
    # the board's accelerometer (its driver on the board file's bus and pins), made once
    if board._accel is None:
        a = board.spec.get("accel")
        if a is None:
            raise AttributeError("hal: board %s has no accelerometer in its pin map" % board.spec["board"])
        from hal.lis3dh import Lis3dh

        dev = Lis3dh(board._i2c(board.spec["i2c"]), a["addr"], a["odr_hz"], a["range_g"], a["watermark"])
        board._accel = Accel(board, dev, a["int"])
    return board._accel


class Accel:
    def __init__(self, board, dev, int_pin):
        self.dev = dev
        self._board = board
        self.int = None
        if int_pin is not None:
            m = board.machine
            self.int = m.Pin(int_pin, m.Pin.IN)
            if board.hard_irq:
                self.int.irq(handler=self._isr, trigger=m.Pin.IRQ_RISING, hard=True)
            else:
                self.int.irq(handler=self._isr, trigger=m.Pin.IRQ_RISING)

    def _isr(self, p):
        self.dev.pending = 1
        self._board.wake.flag = 1

    def due(self):
        return self.int is None or self.dev.pending or self.int.value() == 1

    def watch(self, on):
        self.dev.watch(on)

    def free_fall(self, mg, ms):
        self.dev.free_fall(mg, ms)

    def read(self):
        return self.dev.read()
