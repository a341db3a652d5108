# Run by MicroPython (the unix port) from a bundle directory: the heap a board's hardware
# layer holds once the app has its board, for the firmware_heap benchmark's real-board
# estimate (tests/bench/bench_firmware.py). Prints one JSON line:
#   {"modules": bytes of the hal's code (import hal, the port module, what it imports),
#    "objects": bytes of the Board and the parts the app uses (with the modules of the parts
#    that load on first use: Wi-Fi, the radio, the ADC)}
# A real port's Board is built from the bundle's board file on the fakes of
# tests/firmware/fakes.py (on the module path), so "objects" includes the fakes' own objects
# (Python objects, larger than the real machine module's): an upper bound. The unix port's
# virtual board needs no fakes.
# usage: micropython mp_hal_heap.py <kind> <port> [<board file>]
import gc
import json
import sys


def _live():
    gc.collect()
    gc.collect()
    return gc.mem_alloc()


def main(kind, port, board_file=None):
    fk = m = net = bt = npx = None
    if port != "unix":
        import fakes

        fk = fakes
        m = fakes.Machine(esp32=port == "esp32")
        net = fakes.Network() if port != "zephyr" else None
        bt = fakes.Bluetooth()
        npx = fakes.NeoPixelModule()
    a = _live()
    import hal

    mod = __import__("hal." + port, None, None, ("make",))
    if kind == "wristband" and port != "unix":
        import hal.lis3dh  # noqa: F401 - the board's accelerometer driver, loaded by accel()
    b = _live()
    if port == "unix":
        board = mod.make(None, None)
    else:
        with open(board_file) as f:
            spec = json.load(f)
        if kind == "wristband":
            fk.Lis3dh(m, spec["accel"]["addr"])
        wifi = ("venue", "passphrase") if kind != "wristband" else None
        board = mod.Board(spec, m, net, bt, npx, wifi)
    if kind == "wristband":
        board.radio()
        board.accel()
    if kind == "sensor":
        for name in (spec.get("sensors") or {}) if port != "unix" else ("smoke",):
            board.sensor(name).read()
    board.battery()
    board.service()
    c = _live()
    print(json.dumps({"modules": b - a, "objects": c - b}))


main(*sys.argv[1:])
