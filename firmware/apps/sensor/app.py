# Venue sensor: up to 8 safety channels on one board (smoke, gas, a fire door's contact, an
# extinguisher's pressure), an RGB LED and a sounder, talking to the gateway like an alarm
# post (lib/reporter.py: the flash outbox, the link, receipts, heartbeats and the LED's
# delivery colour; docs/protocol.md sections 2.1 and 7.1).
#
# Every sample_ms each channel's reading goes through its detector (lib/detector.py): a
# condition counts only when it held on every sample for confirm_ms, and clears only when the
# reading stayed on the clear side of the hysteresis band for clear_ms. So steam from a
# kitchen or a door bounced by a draught raises nothing, and one good reading does not
# silence a fire.
# - Events, all written to the outbox before anything else happens:
#     SMOKE, GAS (P0)                     {1: channel, 2: peak reading, 3: name, 4: held ms}
#     DOOR_HELD_OPEN, EXTINGUISHER (P1)   {1: channel, 2: peak reading, 3: name, 4: held ms}
#                                         (peak: the most extreme reading while confirming;
#                                         an extinguisher's lowest pressure; held: how long the
#                                         condition had held when confirmed, so the gateway
#                                         knows when a door opened, docs/wristband-alerts.md)
#     SENSOR_CLEAR (P1)                   {1: channel, 2: the type that ended, 3: name}
#     SENSOR_FAULT (P1)                   {1: channel, 2: reading, 3: name}; its end is a
#                                         SENSOR_CLEAR naming SENSOR_FAULT
# - Local warning does not wait for the network: while smoke or gas is confirmed the sounder
#   plays the evacuation pattern (ISO 8201 temporal-three: three 0.5 s tones 0.5 s apart,
#   then 1.5 s of silence) and the LED is red once the alarm is at the gateway (amber before,
#   white when a dispatcher acknowledged it). A channel fault shows magenta when nothing
#   else is shown.
# - Outbox full: a hazard that finds no room waits in RAM (in order, the LED amber) and is
#   written as soon as there is room; state changes keep the reserve free for alarms and are
#   dropped (and counted) when only the reserve is left.
# - HEARTBEAT carries the latest readings: {1: uptime_s, 2: outbox depth, 3: {channel: reading}}.
# Readings come from the hal: board.sensor(name).read() is an integer in the channel's unit,
# or None while the board has no reading yet (such samples are skipped).
import detector
import frame
import reporter
from clock import const, ticks_add, ticks_diff, ticks_ms
from devconfig import ConfigError  # launch.py catches it as app.ConfigError
from reporter import LED_BLUE, LED_GREEN, LED_MAGENTA, LED_OFF, LED_RED, P0, P1, Reporter

_MAX_CHANNELS = const(8)
_MAX_HELD = const(16)  # hazards waiting in RAM for outbox room
_T3_CYCLE_MS = const(4000)  # temporal-three: 3 x (500 on, 500 off), then 1500 off ... = 4 s
_T3_TONE_MS = const(500)

# type: (event type, priority, above, on, off, confirm_ms, clear_ms, lo, hi); units in
# docs/protocol.md section 7.1
TYPES = {
    # smoke obscuration, milli-dB/m (optical chamber)
    "smoke": (frame.T_SMOKE, P0, True, 150, 80, 4000, 30000, 0, 2000),
    # flammable gas, % of the lower explosive limit
    "gas": (frame.T_GAS, P0, True, 20, 10, 5000, 30000, 0, 100),
    # a fire door's contact, 1 = open; "confirm" is how long it may stand open
    "door": (frame.T_DOOR_HELD_OPEN, P1, True, 1, 0, 60000, 1000, 0, 1),
    # extinguisher gauge, kPa; 0 when it is not in its bracket
    "extinguisher": (frame.T_EXTINGUISHER, P1, False, 900, 1000, 10000, 10000, 0, 3000),
}


class Channel:
    def __init__(self, index, name, typ, det):
        self.index = index
        self.name = name
        self.type = typ  # key of TYPES
        self.event = TYPES[typ][0]
        self.prio = TYPES[typ][1]
        self.det = det


def _channels(path, raw):
    import devconfig  # configuration only: launch.py drops it once the config is read

    if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_CHANNELS:
        raise ConfigError("%s: channels must be a list of 1 to %d channels" % (path, _MAX_CHANNELS))
    out = []
    names = []
    for i, ch in enumerate(raw):
        where = "%s: channels[%d]" % (path, i)
        if not isinstance(ch, dict):
            raise ConfigError("%s must be an object" % where)
        name = ch.get("name")
        if not isinstance(name, str) or not devconfig.id_ok(name) or len(name) > 16:
            raise ConfigError("%s: name must be 1-16 characters from A-Z a-z 0-9 - _ ." % where)
        if name in names:
            raise ConfigError("%s: name %r used twice" % (where, name))
        typ = ch.get("type")
        if not isinstance(typ, str) or typ not in TYPES:  # a list or object is not hashable
            raise ConfigError("%s: type must be one of %s" % (where, ", ".join(sorted(TYPES))))
        t = TYPES[typ]
        p = {"on": t[3], "off": t[4], "confirm_ms": t[5], "clear_ms": t[6], "fault_ms": 10000}
        for k, v in ch.items():
            if k in p:
                if not devconfig.int_ok(v, -(1 << 30), 1 << 30):
                    raise ConfigError("%s: %s must be an integer" % (where, k))
                p[k] = v
            elif k != "name" and k != "type":
                raise ConfigError("%s: unknown setting %r" % (where, k))
        try:
            det = detector.Detector(lo=t[7], hi=t[8], above=t[2], **p)
        except ValueError as e:
            raise ConfigError("%s (%s): %s" % (where, name, e))
        out.append(Channel(i, name, typ, det))
        names.append(name)
    return out


def load_config(path="config.json"):
    # config.json -> dict with defaults applied and "channels" turned into Channel objects;
    # ConfigError names the field, never the key
    cfg = reporter.load_config(path, {"sample_ms": 500, "channels": []}, (("sample_ms", 20, 60000),))
    cfg["channels"] = _channels(path, cfg["channels"])
    return cfg


class VenueSensor(Reporter):
    TAG = "sensor"

    def __init__(self, cfg, board):
        Reporter.__init__(self, cfg, board)
        self.channels = cfg["channels"]
        self.inputs = [board.sensor(c.name) for c in self.channels]
        self.next_sample = ticks_ms()
        self.held = []  # hazards (typ, data) that found no room in the outbox
        self.dropped_states = 0
        self.sounding_since = None  # ticks when the sounder started, while a hazard is on
        self.sounder = 0

    # inputs

    def _inputs(self, now):
        if ticks_diff(now, self.next_sample) < 0:
            return
        self.next_sample = ticks_add(now, self.cfg["sample_ms"])
        for ch, inp in zip(self.channels, self.inputs):
            v = inp.read()
            if v is None:
                continue
            ev = ch.det.update(v, now)
            if ev == detector.ALARM:
                self._event(ch.prio, ch.event, {1: ch.index, 2: ch.det.peak, 3: ch.name, 4: ch.det.held_ms})
            elif ev == detector.CLEAR:
                self._event(P1, frame.T_SENSOR_CLEAR, {1: ch.index, 2: ch.event, 3: ch.name})
            elif ev == detector.FAULT:
                self._event(P1, frame.T_SENSOR_FAULT, {1: ch.index, 2: v, 3: ch.name})
            elif ev == detector.RESTORED:
                self._event(P1, frame.T_SENSOR_CLEAR, {1: ch.index, 2: frame.T_SENSOR_FAULT, 3: ch.name})
            if ev is not None:
                self._say("%s (%s) reading %d: %s" % (ch.name, ch.type, v, _EVENT_NAMES[ev - 1]))

    # events

    def _event(self, prio, typ, data):
        if prio == P0 and (self.held or not self._room_for(P0)):
            if len(self.held) < _MAX_HELD:
                self.held.append((typ, data))
            self._say("outbox full, hazard type %d held in RAM (%d)" % (typ, len(self.held)))
            self._alarm_raised()
            return
        if prio != P0 and not self._room_for(prio):
            self.dropped_states += 1
            self._say("outbox reserve reached, type %d dropped (%d)" % (typ, self.dropped_states))
            return
        self._store(prio, typ, data)

    def _linked(self, now):
        while self.held and self._room_for(P0):
            typ, data = self.held.pop(0)
            self._store(P0, typ, data)

    def _pending_alarm(self):
        return bool(self.held)

    def _heartbeat_data(self, data):
        data[3] = {c.index: c.det.value for c in self.channels if c.det.value is not None}
        return data

    # outputs

    def _show(self, now):
        colour = self._colour(now)
        hazard = any(ch.prio == P0 and ch.det.active for ch in self.channels)
        if hazard and colour in (LED_OFF, LED_GREEN, LED_BLUE):
            colour = LED_RED
        elif colour == LED_OFF and any(c.det.faulty for c in self.channels):
            colour = LED_MAGENTA
        self._set_led(colour)
        if hazard:
            if self.sounding_since is None:
                self.sounding_since = now
            if self.beep_until is not None:
                # the pattern has the buzzer to itself: beeps (a receipt 3's) are cut short
                # and the pattern sets the buzzer again
                self.beep_until = None
                self.sounder = None
            # _store() shows with a later now than the loop's: a now before the start is phase 0
            phase = max(0, ticks_diff(now, self.sounding_since)) % _T3_CYCLE_MS
            level = 1 if phase < 3 * 2 * _T3_TONE_MS and phase % (2 * _T3_TONE_MS) < _T3_TONE_MS else 0
            if level != self.sounder:
                self.sounder = level
                self.board.buzzer.value(level)
            return
        if self.sounding_since is not None:
            self.sounding_since = None
            self.sounder = 0
            self.board.buzzer.off()
        self._beeper(now)

    def _timeout(self, now):
        ms = Reporter._timeout(self, now)
        ms = min(ms, max(0, ticks_diff(self.next_sample, now)))
        if self.sounding_since is not None:
            # wake at the sounder's next edge
            phase = ticks_diff(now, self.sounding_since) % _T3_TONE_MS
            ms = min(ms, _T3_TONE_MS - phase)
        return ms


_EVENT_NAMES = ("confirmed", "cleared", "fault", "restored")  # detector.ALARM (1) .. RESTORED (4)


def run(cfg=None):
    import hal

    if cfg is None:
        cfg = load_config()
    VenueSensor(cfg, hal.Board()).run()
