# Pin maps as data: boards/<board>.json says where a product's parts are wired, so a
# technician picks a board by name (config.json "board") and never edits code. check() checks
# one board file for a port and returns it in its checked form: every key present with its
# default, pins as the port's machine.Pin takes them, and "spec": FORMAT, which is what the
# hal on the device reads (hal/__init__.py). Every error is a BoardFileError naming the file
# and the key ("boards/x.json: led.rgb[1]: ...").
# The check runs where the board file enters a device: guardian-provision runs this module
# (under CPython) when it builds a bundle for a board and writes the checked form into it
# (provisioning/boards.py), so a device holds neither this code nor its heap, and a board file
# that does not fit is named on the technician's screen before anything is flashed. It is
# plain MicroPython too (the firmware tests run it on the unix port). Keys (docs/boards.md
# has the full table):
#   board    the file's own name (= its stem)          port   "esp32" | "rp2" | "zephyr" | "unix"
#   button   {"pin", "active": 0|1, "pull": "up"|"down"|null}   (required; tamper, strap the same)
#   led      {"rgb": [r, g, b], "active", "duty"} or {"neopixel": pin, "level": 1-255}
#   buzzer   {"pin", "active", "freq"}   (freq: a PWM tone for a passive buzzer)
#   uart     {"id", "tx", "rx"}          i2c {"id", "scl", "sda", "freq"}
#   accel    {"part": "lis3dh", "addr", "int", "odr_hz", "range_g", "watermark"}   (needs i2c)
#   battery  {"adc", "ratio_x1000", "curve": [[mV, %], ...]}   (the divider: cell mV per ADC mV x 1000)
#   sensors  {name: {"adc", "scale": [[mV, value], [mV, value]]} or {"pin", "active", "pull"}}
#   wdt_ms   watchdog timeout          adc_vref_mv  full scale of an ADC without read_uv()
#   sleep    "idle" (the loop waits in poll()) or "light" (machine.lightsleep between waits)
# Pins are what the port's machine.Pin takes: a GPIO number on esp32 (0-48) and rp2 (0-29, or
# "LED" for the Pico W's LED on the radio chip), ["gpioN", pin] on zephyr.
FORMAT = 1  # "spec" of the checked form; hal/__init__.py reads only this format


class BoardFileError(ValueError):
    pass


PORTS = ("esp32", "rp2", "zephyr", "unix")
INPUTS = ("button", "tamper", "strap")
PARTS = ("lis3dh",)
ODRS = (1, 10, 25, 50, 100, 200, 400)
RANGES = (2, 4, 8, 16)
# a Li-ion/LiPo cell at light load, mV -> % (used when a battery has no "curve")
LIPO_CURVE = [
    [3300, 0],
    [3500, 5],
    [3600, 10],
    [3700, 30],
    [3750, 45],
    [3800, 55],
    [3900, 70],
    [4000, 85],
    [4100, 95],
    [4200, 100],
]
_TOP = (
    "board",
    "port",
    "spec",
    "note",
    "led",
    "buzzer",
    "uart",
    "i2c",
    "accel",
    "battery",
    "sensors",
    "wdt_ms",
    "adc_vref_mv",
    "sleep",
)


class _Check:
    def __init__(self, path, port):
        self.path = path
        self.port = port

    def fail(self, key, msg):
        raise BoardFileError("%s: %s: %s" % (self.path, key, msg))

    def obj(self, v, key, allowed):
        if not isinstance(v, dict):
            self.fail(key, "must be an object")
        for k in v:
            if k not in allowed:
                self.fail(key, "unknown key %r (allowed: %s)" % (k, ", ".join(allowed)))
        return v

    def int(self, v, key, low, high):
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            self.fail(key, "must be an integer from %d to %d" % (low, high))
        return v

    def pin(self, v, key):
        p = self.port
        if p == "zephyr":
            if (
                not isinstance(v, list)
                or len(v) != 2
                or not isinstance(v[0], str)
                or not v[0]
                or not isinstance(v[1], int)
                or isinstance(v[1], bool)
                or not 0 <= v[1] <= 31
            ):
                self.fail(key, 'must be ["gpioN", 0-31] on zephyr')
            return (v[0], v[1])
        if p == "rp2" and v == "LED":
            return v
        return self.int(v, key, 0, 48 if p == "esp32" else 29)

    def level(self, d, key, default):
        return self.int(d.get("active", default), key + ".active", 0, 1)

    def input(self, v, key):
        d = self.obj(v, key, ("pin", "active", "pull"))
        if "pin" not in d:
            self.fail(key, "needs a pin")
        pull = d.get("pull")
        if pull not in (None, "up", "down"):
            self.fail(key + ".pull", 'must be "up", "down" or null')
        return {"pin": self.pin(d["pin"], key + ".pin"), "active": self.level(d, key, 1), "pull": pull}


def check(doc, path, port, name=None):
    # the checked form of doc (parsed JSON) for `port`, pins converted; BoardFileError otherwise
    c = _Check(path, port)
    c.obj(doc, "board file", _TOP + INPUTS)
    if not isinstance(doc.get("board"), str) or (name is not None and doc["board"] != name):
        c.fail("board", "must be the file's own name %r" % (name,))
    if doc.get("port") not in PORTS:
        c.fail("port", "must be one of %s" % ", ".join(PORTS))
    if doc["port"] != port:
        c.fail("port", "this pin map is for %s, the firmware runs on %s" % (doc["port"], port))
    out = {"board": doc["board"], "port": port, "spec": FORMAT}
    if port == "unix":
        return out  # the virtual board's pins are the supervisor's
    if "button" not in doc:
        c.fail("button", "is required (the app's input and the safe-mode button)")
    for key in INPUTS:
        if key in doc:
            out[key] = c.input(doc[key], key)
    if "led" in doc:
        out["led"] = _led(c, doc["led"])
    if "buzzer" in doc:
        d = c.obj(doc["buzzer"], "buzzer", ("pin", "active", "freq"))
        b = {"pin": c.pin(d.get("pin"), "buzzer.pin"), "active": c.level(d, "buzzer", 1), "freq": None}
        if d.get("freq") is not None:
            b["freq"] = c.int(d["freq"], "buzzer.freq", 100, 20000)
        out["buzzer"] = b
    if "uart" in doc:
        d = c.obj(doc["uart"], "uart", ("id", "tx", "rx"))
        out["uart"] = {
            "id": c.int(d.get("id"), "uart.id", 0, 7),
            "tx": c.pin(d.get("tx"), "uart.tx"),
            "rx": c.pin(d.get("rx"), "uart.rx"),
        }
    if "i2c" in doc:
        d = c.obj(doc["i2c"], "i2c", ("id", "scl", "sda", "freq"))
        out["i2c"] = {
            "id": c.int(d.get("id"), "i2c.id", 0, 7),
            "scl": c.pin(d.get("scl"), "i2c.scl"),
            "sda": c.pin(d.get("sda"), "i2c.sda"),
            "freq": c.int(d.get("freq", 400000), "i2c.freq", 10000, 1000000),
        }
    if "accel" in doc:
        out["accel"] = _accel(c, doc["accel"], "i2c" in out)
    if "battery" in doc:
        d = c.obj(doc["battery"], "battery", ("adc", "ratio_x1000", "curve"))
        out["battery"] = {
            "adc": c.pin(d.get("adc"), "battery.adc"),
            "ratio_x1000": c.int(d.get("ratio_x1000", 1000), "battery.ratio_x1000", 1000, 20000),
            "curve": _curve(c, d.get("curve", LIPO_CURVE), "battery.curve", 0, 100),
        }
    if "sensors" in doc:
        out["sensors"] = _sensors(c, doc["sensors"])
    out["wdt_ms"] = c.int(doc.get("wdt_ms", 8000), "wdt_ms", 2000, 8000)
    out["sleep"] = doc.get("sleep", "idle")
    if out["sleep"] not in ("idle", "light"):
        c.fail("sleep", 'must be "idle" (poll) or "light" (machine.lightsleep between waits)')
    out["adc_vref_mv"] = c.int(doc.get("adc_vref_mv", 3300), "adc_vref_mv", 500, 5000)
    return out


def _led(c, v):
    if isinstance(v, dict) and "neopixel" in v:
        d = c.obj(v, "led", ("neopixel", "level"))
        return {
            "neopixel": c.pin(d["neopixel"], "led.neopixel"),
            "level": c.int(d.get("level", 64), "led.level", 1, 255),
        }
    d = c.obj(v, "led", ("rgb", "active", "duty"))
    rgb = d.get("rgb")
    if not isinstance(rgb, list) or len(rgb) != 3:
        c.fail("led", 'needs "rgb": [r, g, b] pins or "neopixel": pin')
    led = {
        "rgb": [c.pin(p, "led.rgb[%d]" % i) for i, p in enumerate(rgb)],
        "active": c.level(d, "led", 1),
        "duty": None,
    }
    if d.get("duty") is not None:
        led["duty"] = c.int(d["duty"], "led.duty", 1, 65535)
    return led


def _accel(c, v, have_i2c):
    d = c.obj(v, "accel", ("part", "addr", "int", "odr_hz", "range_g", "watermark"))
    if not have_i2c:
        c.fail("accel", 'needs the "i2c" bus it is wired to')
    if d.get("part") not in PARTS:
        c.fail("accel.part", "must be one of %s" % ", ".join(PARTS))
    a = {
        "part": d["part"],
        "addr": c.int(d.get("addr", 0x18), "accel.addr", 0x18, 0x19),
        "int": None,
        "odr_hz": d.get("odr_hz", 50),
        "range_g": d.get("range_g", 8),
        "watermark": c.int(d.get("watermark", 16), "accel.watermark", 1, 31),
    }
    if a["odr_hz"] not in ODRS:
        c.fail("accel.odr_hz", "must be one of %s" % ", ".join(str(x) for x in ODRS))
    if a["range_g"] not in RANGES:
        c.fail("accel.range_g", "must be one of %s" % ", ".join(str(x) for x in RANGES))
    if d.get("int") is not None:
        a["int"] = c.pin(d["int"], "accel.int")
    return a


def _curve(c, v, key, low, high):
    if not isinstance(v, list) or len(v) < 2:
        c.fail(key, "must be a list of at least two [mV, value] points")
    out = []
    for i, pt in enumerate(v):
        k = "%s[%d]" % (key, i)
        if not isinstance(pt, list) or len(pt) != 2:
            c.fail(k, "must be [mV, value]")
        mv = c.int(pt[0], k, 0, 60000)
        val = c.int(pt[1], k, low, high)
        if out and mv <= out[-1][0]:
            c.fail(k, "mV must increase along the curve")
        out.append((mv, val))
    return out


def _sensors(c, v):
    c.obj(v, "sensors", tuple(v) if isinstance(v, dict) else ())
    out = {}
    for name, s in v.items():
        key = "sensors.%s" % name
        if not 1 <= len(name) <= 16:
            c.fail(key, "a channel name is 1-16 characters")
        if isinstance(s, dict) and "adc" in s:
            d = c.obj(s, key, ("adc", "scale"))
            out[name] = {
                "adc": c.pin(d["adc"], key + ".adc"),
                "scale": _curve(c, d.get("scale"), key + ".scale", -(1 << 30), 1 << 30),
            }
        else:
            out[name] = c.input(s, key)
    return out


def load(name, port, boards="boards"):
    # boards/<name>.json checked for `port`
    if not isinstance(name, str) or not name or "/" in name or "." in name:
        raise BoardFileError("config.json: board must be a board file name (boards/<board>.json), not %r" % (name,))
    import json

    path = "%s/%s.json" % (boards, name)
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        raise BoardFileError("%s: no such board file (config.json names board %r)" % (path, name))
    except ValueError as e:
        raise BoardFileError("%s: not valid JSON: %s" % (path, e))
    return check(doc, path, port, name)
