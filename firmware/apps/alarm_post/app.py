# Alarm post: one alarm button, an RGB LED, a buzzer and an enclosure tamper switch, talking
# to the gateway over MQTT 3.1.1 through its local broker or over a UART wired to it (config
# "transport"; docs/protocol.md, sections 2, 3, 5, 7 and 9). lib/reporter.py does what every
# reporting device does (the flash outbox, the link, receipts, heartbeats, the LED's
# delivery colour: amber, blue, green, white); this file adds the post's inputs:
# - A press is ALARM and a long press (long_press_ms) ALARM_HELD, both P0, written to the
#   outbox before anything else happens; the buzzer beeps on every press the post took.
# - Outbox full (the gateway unreachable for a long time): further presses are counted in
#   RAM and go out as one ALARM {1: presses} as soon as there is room; they keep the post in
#   amber meanwhile. Tamper changes (TAMPER, P1) keep the reserve of entries free for alarms
#   and are dropped (and counted) when only the reserve is left.
# Inputs arrive as edges with the time the pin's interrupt recorded them (the hal's edge
# rings, handed over by board.service()); the loop does the rest.
import frame
import reporter
from button import LONG, PRESS, Debouncer
from clock import const, ticks_ms
from devconfig import ConfigError  # launch.py catches it as app.ConfigError
from reporter import P0, P1, Reporter

_MAX_EDGES = const(32)


def load_config(path="config.json"):
    # config.json -> dict with defaults applied; ConfigError names the field, never the key
    cfg = reporter.load_config(
        path, {"long_press_ms": 3000, "debounce_ms": 30}, (("long_press_ms", 100, 60000), ("debounce_ms", 1, 1000))
    )
    if cfg["long_press_ms"] <= cfg["debounce_ms"]:
        raise ConfigError("%s: long_press_ms must be larger than debounce_ms" % path)
    return cfg


class AlarmPost(Reporter):
    TAG = "alarm_post"

    def __init__(self, cfg, board):
        Reporter.__init__(self, cfg, board)
        self.button = Debouncer(cfg["debounce_ms"], cfg["long_press_ms"])
        self.tamper = Debouncer(cfg["debounce_ms"], 0)  # a switch: no long press
        self.tamper_level = None  # last reported level
        self.edges = []
        self.folded = 0  # presses not written because the outbox was full
        self.dropped_tamper = 0
        board.button.irq(self._edge)
        board.tamper.irq(self._edge)
        # a button already held (or a lid already open) when the app starts has no edge
        now = ticks_ms()
        for pin in (board.button, board.tamper):
            if pin.value():
                self.edges.append((pin, 1, now))

    # inputs

    def _edge(self, pin, level, t):
        # an edge as board.service() hands it over (level and time from the interrupt)
        if len(self.edges) < _MAX_EDGES:
            self.edges.append((pin, level, t))

    def _inputs(self, now):
        edges = self.edges
        self.edges = []
        for pin, level, t in edges:
            # the level before the edge held until it; then the new level starts
            self._sample(pin, self._debouncer(pin).level(), t)
            self._sample(pin, level, t)
        # time passes at the levels the edges left
        self._sample(self.board.button, self.button.level(), now)
        self._sample(self.board.tamper, self.tamper.level(), now)

    def _debouncer(self, pin):
        return self.button if pin is self.board.button else self.tamper

    def _sample(self, pin, level, t):
        if pin is self.board.button:
            ev = self.button.update(level, t)
            if ev == PRESS:
                self._alarm(frame.T_ALARM, {})
            elif ev == LONG:
                self._alarm(frame.T_ALARM_HELD, {1: self.button.long_ms})
        elif self.tamper.update(level, t) is not None and self.tamper.pressed != self.tamper_level:
            self.tamper_level = self.tamper.pressed
            self._tamper(self.tamper_level)

    def _busy(self):
        return bool(self.edges) or self.button.waiting() or self.tamper.waiting()

    # events

    def _alarm(self, typ, data):
        if not self._room_for(P0):
            self.folded += 1
            self._say("outbox full, press %d held in RAM" % self.folded)
            self._beep()
            self._alarm_raised()
            return
        if self.folded:
            data = {1: self.folded + 1}
            self.folded = 0
        self._store(P0, typ, data)
        self._beep()

    def _tamper(self, level):
        if not self._room_for(P1):
            self.dropped_tamper += 1
            self._say("outbox reserve reached, tamper %d dropped (%d)" % (level, self.dropped_tamper))
            return
        self._store(P1, frame.T_TAMPER, {1: level})

    def _linked(self, now):
        if self.folded and self._room_for(P0):
            n = self.folded
            self.folded = 0
            self._store(P0, frame.T_ALARM, {1: n})

    def _pending_alarm(self):
        return self.folded > 0


def run(cfg=None):
    import hal

    if cfg is None:
        cfg = load_config()
    AlarmPost(cfg, hal.Board()).run()
