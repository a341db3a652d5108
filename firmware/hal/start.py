# What the hal does once, at start-up (hal/__init__.py loads this module for it and drops it
# again before the port's module is loaded, so none of this code is in the heap while the
# board is built or the app runs): which port this is (sys.platform), what config.json says
# about the board ("board", "wifi"), the board file in its checked form, and the power-up
# safe-mode check.
import sys

from hal import HalError

_PORTS = {"linux": "unix", "esp32": "esp32", "rp2": "rp2", "zephyr": "zephyr"}
_SPEC = 1  # the checked form's format (hal/boardspec.py FORMAT)


def port(platform=None):
    # the hal port of the running platform (or of `platform`), or HalError
    platform = sys.platform if platform is None else platform
    name = _PORTS.get(platform)
    if name is None:
        raise HalError("hal: no hardware layer for platform %r (known: %s)" % (platform, ", ".join(sorted(_PORTS))))
    return name


def _json(path):
    # the JSON object in the file at path, None when there is no such file
    import json

    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        return None
    except ValueError as e:
        raise HalError("hal: %s: not valid JSON: %s" % (path, e))
    if not isinstance(doc, dict):
        raise HalError("hal: %s: must hold a JSON object" % path)
    return doc


def spec(config, boards):
    # (port, board spec or None, wifi (ssid, password) or None) for this device
    p = port()
    cfg = _json(config) or {}  # no config: the unix virtual board; a real board's app reports it
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
    return p, _board_file(name, p, boards), wifi


def _board_file(name, p, boards):
    # boards/<name>.json in its checked form for port p
    if not isinstance(name, str) or not name or "/" in name or "." in name:
        raise HalError("hal: config.json: board must be a board file name (boards/<board>.json), not %r" % (name,))
    path = "%s/%s.json" % (boards, name)
    doc = _json(path)
    if doc is None:
        raise HalError("hal: %s: no such board file (config.json names board %r)" % (path, name))
    if doc.get("board") != name:
        raise HalError("hal: %s: board: must be the file's own name %r" % (path, name))
    if doc.get("port") != p:
        raise HalError("hal: %s: port: this pin map is for %s, the firmware runs on %s" % (path, doc.get("port"), p))
    if doc.get("spec") != _SPEC:
        raise HalError(
            "hal: %s: not a checked board file (spec %d): flash it with guardian-provision --board %s"
            % (path, _SPEC, name)
        )
    return doc


def safe_mode(hold_ms, config, boards):
    # True when the button is held through the first hold_ms after power-up: main.py then
    # starts nothing but the REPL. Nothing else is started (no watchdog, no radio).
    # The virtual board has no power-up button check (its supervisor's inputs go to the app).
    from clock import sleep_ms, ticks_diff, ticks_ms

    if port() == "unix":
        return False
    import hal

    b = hal.build(spec(config, boards), config, boards)
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
