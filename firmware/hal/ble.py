# BLE advertising for a board that advertises (hal/machineboard.py Board.radio() loads this
# module then), through MicroPython's bluetooth module, shaped like hal/unixradio.py's radio.
class Radio:
    # BLE advertising through MicroPython's bluetooth module, shaped like hal/unix.py's radio.
    # address(): these ports cannot take a chosen advertising address (docs/boards.md), so a
    # new address asks the stack for a fresh non-resolvable private address (addr_mode 3),
    # which changes exactly when the band's EID does, as docs/protocol.md 10.1 requires; a
    # port that ignores addr_mode (zephyr) keeps its identity address and `rotates` says so.
    def __init__(self, bluetooth):
        self.ble = bluetooth.BLE()
        self.ble.active(True)
        self.addr = None
        self.rotations = 0
        self.rotates = True
        self.sent = 0

    def address(self, addr):
        if addr == self.addr:
            return
        self.addr = addr
        before = self._mac()
        self.ble.gap_advertise(None)
        try:
            self.ble.config(addr_mode=3)
        except (OSError, ValueError):
            self.rotates = False
            return
        self.rotates = self._mac() != before
        self.rotations += 1

    def _mac(self):
        try:
            return self.ble.config("mac")
        except (OSError, ValueError):
            return None

    def gap_advertise(self, interval_us, adv_data=None, connectable=False):
        self.ble.gap_advertise(interval_us, adv_data, connectable=connectable)
        if interval_us is not None:
            self.sent += 1
