# The hardware layer for the running platform: `import hal; board = hal.Board()`.
# Every port module offers the same Board API (hal/unix.py documents it); the app above it is
# the same code everywhere.
# - The port comes from sys.platform: "linux" is the MicroPython unix port (the virtual board,
#   hal/unix.py), "esp32", "rp2" (Pico W) and "zephyr" (the nRF52840 wristband) are real boards
#   (hal/esp32.py, hal/rp2.py, hal/zephyr.py on hal/machineboard.py).
# - A real board's pin map is data: config.json's "board" names boards/<board>.json
#   (hal/boardspec.py checks it against the port). No "board" key: the unix virtual board.
# - Anything that does not fit (an unknown platform, a missing or invalid board file, a pin map
#   for another port) raises HalError with one line that names the file and the key; main.py
#   prints it and leaves the board at the REPL instead of resetting.
import sys

_PORTS = {"linux": "unix", "esp32": "esp32", "rp2": "rp2", "zephyr": "zephyr"}
CONFIG = "config.json"
BOARDS_DIR = "boards"


class HalError(Exception):
    pass


def port(platform=None):
    # the hal port of the running platform (or of `platform`), or HalError
    platform = sys.platform if platform is None else platform
    name = _PORTS.get(platform)
    if name is None:
        raise HalError("hal: no hardware layer for platform %r (known: %s)" % (platform, ", ".join(sorted(_PORTS))))
    return name


def _config(path):
    import json

    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        return {}  # no config: the unix virtual board; a real board's app reports it
    except ValueError as e:
        raise HalError("hal: %s: not valid JSON: %s" % (path, e))
    if not isinstance(cfg, dict):
        raise HalError("hal: %s: must hold a JSON object" % path)
    return cfg


def spec(config=CONFIG, boards=BOARDS_DIR):
    # (port, board spec or None, wifi (ssid, password) or None) for this device
    p = port()
    cfg = _config(config)
    name = cfg.get("board")
    wifi = cfg.get("wifi")
    if wifi is not None:
        if not isinstance(wifi, dict) or not isinstance(wifi.get("ssid"), str) or not wifi.get("ssid"):
            raise HalError("hal: %s: wifi.ssid must be a non-empty string" % config)
        if not isinstance(wifi.get("password", ""), str):
            raise HalError("hal: %s: wifi.password must be a string" % config)
        wifi = (wifi["ssid"], wifi.get("password", ""))
    if name is None:
        if p != "unix":
            raise HalError('hal: %s: "board" must name the pin map (boards/<board>.json) on %s' % (config, p))
        return p, None, wifi
    from hal import boardspec

    return p, boardspec.load(name, p, boards), wifi


def _port_module(p):
    if p == "esp32":
        from hal import esp32 as mod
    elif p == "rp2":
        from hal import rp2 as mod
    elif p == "zephyr":
        from hal import zephyr as mod
    else:
        from hal import unix as mod
    return mod


def Board(config=CONFIG, boards=BOARDS_DIR):
    # the board this firmware runs on, built from its pin map
    p, s, wifi = spec(config, boards)
    mod = _port_module(p)
    try:
        return mod.make(s, wifi)
    except ImportError as e:
        raise HalError("hal: %s: this firmware image lacks a module the %s hal needs: %s" % (config, p, e))


def safe_mode(hold_ms=2000, config=CONFIG, boards=BOARDS_DIR):
    # True when the button is held through the first hold_ms after power-up: main.py then
    # starts nothing but the REPL. Nothing else is started (no watchdog, no radio).
    # The virtual board has no power-up button check (its supervisor's inputs go to the app).
    from clock import sleep_ms, ticks_diff, ticks_ms

    if port() == "unix":
        return False
    b = Board(config, boards)
    try:
        start = ticks_ms()
        while True:
            b.service()
            if not b.button.value():
                return False
            if ticks_diff(ticks_ms(), start) >= hold_ms:
                return True
            sleep_ms(20)
    finally:
        b.close()
