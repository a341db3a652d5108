# The hardware layer for the running platform: `import hal; board = hal.Board()`.
# Every port module offers the same Board API (hal/unix.py documents it); the app above it is
# the same code everywhere.
# - The port comes from sys.platform: "linux" is the MicroPython unix port (the virtual board,
#   hal/unix.py), "esp32", "rp2" (Pico W) and "zephyr" (the nRF52840 wristband) are real boards
#   (hal/esp32.py, hal/rp2.py, hal/zephyr.py on hal/machineboard.py).
# - A real board's pin map is data: config.json's "board" names boards/<board>.json, in the
#   checked form guardian-provision writes (hal/boardspec.py checks the board file for its port
#   on the technician's machine, so a device holds neither that code nor its heap). Here the
#   file is only read: its name, its port and its format must be this device's. No "board"
#   key: the unix virtual board.
# - Anything that does not fit (an unknown platform, a missing, unreadable or unchecked board
#   file, a pin map for another port, a part the port cannot build) raises HalError with one
#   line that names the file; launch.py prints it and leaves the board at the REPL instead of
#   resetting.
# - All of that runs once (hal/start.py), and its code leaves the heap when it is done: about
#   3 KB of heap on the 64-bit unix port that the app has for itself.
CONFIG = "config.json"
BOARDS_DIR = "boards"


class HalError(Exception):
    pass


def Board(config=CONFIG, boards=BOARDS_DIR):
    # the board this firmware runs on, built from its pin map (hal/start.py reads them)
    return build(_start("spec", config, boards), config, boards)


def _start(fn, *args):
    # hal/start.py's fn(*args) in a frame of its own, so nothing refers to hal/start.py once it
    # returns; then the start-up code leaves the heap: out of sys.modules and this package, and
    # collected at once, so the port module's code loads into the space it held instead of
    # beyond it (measured on the unix port: without the collection one build of the band passed
    # its cycle at 62 KB and failed at 63 and 64 KB; with it every heap from 62 KB up passes)
    import gc
    import sys

    from hal import start

    try:
        return getattr(start, fn)(*args)
    finally:
        sys.modules.pop("hal.start", None)
        globals().pop("start", None)
        gc.collect()


def build(found, config=CONFIG, boards=BOARDS_DIR):
    # the port's Board from start.spec()'s (port, checked board file, wifi)
    p, s, wifi = found
    try:
        if p == "esp32":
            from hal import esp32 as mod
        elif p == "rp2":
            from hal import rp2 as mod
        elif p == "zephyr":
            from hal import zephyr as mod
        else:
            from hal import unix as mod
        return mod.make(s, wifi)
    except ImportError as e:
        raise HalError("hal: %s: this firmware image lacks a module the %s hal needs: %s" % (config, p, e))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError) as e:
        # a checked board file the port still cannot build (a pin this chip lacks, a file
        # edited on the board): one line naming the file, not a traceback
        if s is None:
            raise
        raise HalError("hal: %s/%s.json: the %s port cannot build this board: %r" % (boards, s["board"], p, e))


def safe_mode(hold_ms=2000, config=CONFIG, boards=BOARDS_DIR):
    # True when the button is held through the first hold_ms after power-up (hal/start.py)
    return _start("safe_mode", hold_ms, config, boards)
