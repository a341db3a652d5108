# Wristband: one button (SOS), a strap contact, a battery gauge, an accelerometer, a buzzer
# and a BLE radio that only advertises (docs/protocol.md section 10 has the advert's bytes).
#
# - Every interval_ms (1 s) a new advert: a new counter from the band clock (lib/bandclock.py,
#   kept in flash), the status encrypted under AES-CCM (lib/advert.py). A change of status
#   (strap, battery, SOS, fall) goes out at once instead of waiting for the next second.
# - SOS (lib/sos.py): hold the button sos_hold_ms (2 s); the event id is saved to flash before
#   use; the adverts then repeat every burst_interval_ms (100 ms) for burst_ms (30 s), each
#   second's advert repeated with the same bytes; the SOS flag stays set until the event is
#   age_out_s old.
# - Fall (lib/fall.py): accelerometer samples through the detector; a suspected fall buzzes
#   for the cancel window, a press of the button in it cancels ("I'm fine"); a confirmed fall
#   is a new event id with the FALL flag, kept like SOS. The band reads the accelerometer only
#   when it asks (hal accel due()): while the detector is idle only a free fall below its own
#   threshold can start anything, so the part wakes the band on such a free fall alone
#   (free_fall(), with the samples before it still in its FIFO) and the band watches every
#   FIFO batch only until the detector is idle again. Worn and still or walking, the band
#   wakes for its adverts alone (docs/boards.md, Budgets: the energy this saves).
# - Strap open (input 1) sets STRAP_OPEN, closed sets WORN; LOW_BATTERY at or below
#   low_battery_pct; CLOCK_RESTORED while the band clock says so.
# The radio comes from the hal (Board.radio(): the virtual air on the unix port, MicroPython's
# bluetooth module on the boards, hal/machineboard.py).
# Keys: config "key" is the 32-byte device key the registry holds for every kind; the band's
# 16-byte root key is SHA-256("GE wristband root" 00 || key)[0:16], which the gateway derives
# the same way (agent/gateway/wristbands/advert.py band_root).
import hashlib
import select

import advert
import bandclock
import fall as falllib
import sos as soslib
from clock import const, ticks_add, ticks_diff, ticks_ms
from devconfig import ConfigError  # launch.py catches it as app.ConfigError

_ROOT_LABEL = b"GE wristband root\x00"
_FAST_MS = const(20)  # loop period while something is timed closely (burst, held button)
_MAX_EDGES = const(32)

DEFAULTS = {
    "k": 10,
    "epoch": 0,
    "company": advert.COMPANY_TEST,
    "interval_ms": 1000,
    "sos_hold_ms": 2000,
    "burst_ms": 30000,
    "burst_interval_ms": 100,
    "age_out_s": 900,
    "low_battery_pct": 20,
    "fall": {},
    "data_dir": "data",
}
_FALL_KEYS = ("ff_mg", "ff_ms", "impact_mg", "impact_ms", "settle_ms", "still_ms", "still_mg", "still_pct", "cancel_ms")


def band_root(key):
    # the band's 16-byte root key from its 32-byte device key (docs/protocol.md §10.1)
    return hashlib.sha256(b"GE wristband root\x00" + key).digest()[:16]


def load_config(path="config.json"):
    # config.json -> dict with defaults applied; ConfigError names the field, never the key
    import devconfig  # configuration only: launch.py drops it once the config is read

    cfg = devconfig.load(path, DEFAULTS, 32, 32)
    limits = (
        ("k", advert.K_MIN, advert.K_MAX),
        ("epoch", 0, 15),
        ("company", 0, 0xFFFF),
        ("interval_ms", 100, 10000),
        ("sos_hold_ms", 100, 10000),
        ("burst_ms", 0, 300000),
        ("burst_interval_ms", 20, 1000),
        ("age_out_s", 1, 65535),
        ("low_battery_pct", 0, 100),
    )
    devconfig.check_ints(cfg, path, limits)
    f = cfg.get("fall")
    if not isinstance(f, dict):
        raise ConfigError("%s: fall must be an object" % path)
    for k, v in f.items():
        if k not in _FALL_KEYS or not devconfig.int_ok(v, 1, 600000):
            raise ConfigError("%s: fall.%s must be one of %s, a positive integer" % (path, k, ", ".join(_FALL_KEYS)))
    return cfg


class Wristband:
    def __init__(self, cfg, board, radio=None):
        self.cfg = cfg
        self.board = board
        self.radio = radio if radio is not None else board.radio()
        self.keys = advert.BandKeys(band_root(cfg["key"]), cfg["epoch"], cfg["k"], cfg["company"])
        rtc = getattr(board, "rtc", None)
        self.clock = bandclock.BandClock(cfg["data_dir"], cfg["k"], rtc)
        self.sos = soslib.Sos(
            cfg["sos_hold_ms"], cfg["burst_ms"], cfg["burst_interval_ms"], cfg["interval_ms"], cfg["age_out_s"]
        )
        self.fall = falllib.FallDetector(**cfg["fall"])
        self.acc = board.accel() if hasattr(board, "accel") else None
        if self.acc is not None:
            self.acc.free_fall(self.fall.ff_mg, self.fall.ff_ms)
        self.fall_id = 0
        self.fall_at = None  # ticks of the confirmed fall's impact
        self.edges = []
        self.buf = bytearray(advert.ADVERT_LEN)
        self.content = None  # (flags, battery, event id) of the last advert
        self.next_adv = ticks_ms()
        self.adverts = 0
        self.poller = select.poll()
        board.button.irq(self._edge)
        if board.button.value():  # held when the app starts: no edge for it
            self.edges.append((1, ticks_ms()))
        board.register(self.poller)
        print("wristband: %s up, clock %d, event id %d" % (cfg["id"], self.clock.now(), self.clock.event_id))

    def _edge(self, pin, level, t):
        # an edge as board.service() hands it over (level and time from the interrupt)
        if len(self.edges) < _MAX_EDGES:
            self.edges.append((level, t))

    def _button(self, level, t):
        if level and self.fall.suspect():
            if self.fall.cancel() == falllib.CANCELLED:
                self.board.buzzer.off()
                print("wristband: fall cancelled by the wearer")
        if self.sos.update(level, t, self.clock.new_event) == soslib.STARTED:
            print("wristband: SOS event %d" % self.sos.event_id)

    def _motion(self, now):
        got = []
        acc = self.acc
        if acc is not None and acc.due():
            for t, x, y, z in acc.read():
                r = self.fall.feed(t, x, y, z)
                if r is not None:
                    got.append(r)
        if acc is not None:
            acc.watch(self.fall.needs_samples())
        r = self.fall.poll(now)
        if r is not None:
            got.append(r)
        for r in got:
            if r == falllib.SUSPECT:
                self.board.buzzer.on()
                print("wristband: fall suspected; press to cancel")
            elif r == falllib.FALL:
                self.board.buzzer.off()
                self.fall_id = self.clock.new_event()
                self.fall_at = self.fall.impact_at
                print("wristband: FALL event %d" % self.fall_id)
            elif r == falllib.DISMISSED:
                print("wristband: impact without a fall")

    def _status(self, now):
        # (flags, battery, event id, event age s) of the band right now
        flags = 0
        eid = 0
        age = 0
        sos_on = self.sos.active(now)
        fall_on = self.fall_at is not None and ticks_diff(now, self.fall_at) < self.cfg["age_out_s"] * 1000
        if not fall_on:
            self.fall_at = None
        if sos_on:
            flags |= advert.SOS
        if fall_on:
            flags |= advert.FALL
        # the latest event: the one that started last
        if sos_on and (not fall_on or ticks_diff(self.sos.started, self.fall_at) >= 0):
            eid, age = self.sos.event_id, self.sos.age_s(now)
        elif fall_on:
            eid, age = self.fall_id, ticks_diff(now, self.fall_at) // 1000
        flags |= advert.STRAP_OPEN if self.board.strap.value() else advert.WORN
        bat = self.board.battery() if hasattr(self.board, "battery") else advert.BATTERY_UNKNOWN
        if bat != advert.BATTERY_UNKNOWN and bat <= self.cfg["low_battery_pct"]:
            flags |= advert.LOW_BATTERY
        return flags, bat, eid, age

    def _advertise(self, now, status):
        flags, bat, eid, age = status
        c = self.clock.counter()
        if self.clock.restored(c):
            flags |= advert.CLOCK_RESTORED
        advert.encode(self.keys, c, flags, bat, eid, age, self.buf)
        self.radio.address(self.keys.addr)
        self.radio.gap_advertise(self.sos.interval(now) * 1000, self.buf)
        self.content = status[:3]
        self.next_adv = ticks_add(now, self.cfg["interval_ms"])
        self.adverts += 1

    def step(self):
        self.board.service()
        now = ticks_ms()
        edges = self.edges
        self.edges = []
        for level, t in edges:
            # the level before the edge held until it; then the new level starts
            self._button(self.sos.level(), t)
            self._button(level, t)
        self._button(self.sos.level(), now)
        self._motion(now)
        status = self._status(now)
        if status[:3] != self.content or ticks_diff(now, self.next_adv) >= 0:
            self._advertise(now, status)
        if self.edges or self.sos.waiting() or self.sos.bursting(now) or self.fall.suspect():
            timeout = _FAST_MS
        else:
            timeout = max(0, min(ticks_diff(self.next_adv, ticks_ms()), self.cfg["interval_ms"]))
        self.board.wait(self.poller, timeout)

    def run(self):
        while True:
            self.step()


def run(cfg=None):
    import hal

    if cfg is None:
        cfg = load_config()
    Wristband(cfg, hal.Board()).run()
