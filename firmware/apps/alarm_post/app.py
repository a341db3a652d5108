# Alarm post: one alarm button, an RGB LED, a buzzer and an enclosure tamper switch, talking
# to the gateway over MQTT 3.1.1 through its local broker or over a UART wired to it (config
# "transport"; docs/protocol.md, sections 2, 3, 5 and 9; lib/link.py has both links).
#
# Invariant 1 on the device: a press is written to the flash outbox before anything else
# happens (before the LED changes, before any byte goes out) and stays there until the
# gateway's receipt 2 says central has it. Everything below follows from the outbox:
# - LED: amber = an alarm is saved on the post and being sent; blue = the gateway stored it
#   (receipt 1); green = central has it (receipt 2), shown for green_s seconds; then off.
# - Receipt 3 (a dispatcher at central acknowledged the alarm, "help is coming"): white for
#   ack_s seconds and two short beeps, for an alarm still in the outbox or one of the last
#   few delivered (kept in RAM); only an alarm not yet at the gateway (amber) shows over it.
# - Sending: outbox entries go out in (boot, seq) order on every (re)connection, and again
#   when a receipt is overdue (receipt 1 after resend_s, receipt 2 after recheck_s). Resends
#   are the same bytes; the gateway stores an event once and answers a resend with the
#   receipt for the event's current state. Older boots go first because the gateway's
#   replay window only moves forward: an event of boot n sent after one of boot n+1 would
#   be rejected as a replay.
# - Power cut: the boot counter goes up, seq starts again at 1, the outbox is still there
#   and is sent before anything of the new boot.
# - Outbox full (the gateway unreachable for a long time): further presses are counted in
#   RAM and go out as one ALARM {1: presses} as soon as there is room; alarms already in the
#   outbox keep the post in amber meanwhile. Tamper changes keep a reserve of entries free
#   for alarms and are dropped (and counted) when only the reserve is left.
# - ONLINE (seq 1 of each boot) and tamper changes (P1) go through the outbox too.
# - Heartbeats (P2) are not persisted: they are sent only while connected and are skipped
#   while an unconfirmed event of this boot would fall out of the gateway's 64-event replay
#   window behind them.
# The loop never blocks longer than one connection attempt: inputs arrive through pin irq
# handlers that only queue the edge with its time, and everything else runs in the loop.
import os
import select

import clock
import cose
import devconfig
import frame
import store
from button import LONG, PRESS, Debouncer
from clock import ticks_add, ticks_diff, ticks_ms
from link import LinkError, MqttLink, UartLink

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_LED_OFF = (0, 0, 0)
_LED_AMBER = (1, 1, 0)
_LED_BLUE = (0, 0, 1)
_LED_GREEN = (0, 1, 0)
_LED_WHITE = (1, 1, 1)
_ST_SENT = const(0)  # outbox state: written, no receipt yet
_ST_STORED = const(1)  # receipt 1 seen
_P0 = const(0)
_P1 = const(1)
_RESERVE = const(4)  # outbox entries only alarms may use
_MAX_EDGES = const(32)
_WINDOW_GUARD = const(48)  # below the gateway's 64-event replay window
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)
_BEEP_MS = const(120)
_RECENT = const(8)  # delivered alarms a receipt 3 may still name

DEFAULTS = {
    "transport": "mqtt",  # or "uart"
    "baud": 115200,  # UART line speed
    "port": 1883,
    "heartbeat_s": 60,
    "keepalive_s": 30,
    "resend_s": 5,
    "recheck_s": 60,
    "green_s": 30,
    "ack_s": 120,
    "outbox": 32,
    "long_press_ms": 3000,
    "debounce_ms": 30,
    "data_dir": "data",
}


ConfigError = devconfig.ConfigError  # main.py catches it as app.ConfigError


def load_config(path="config.json"):
    # config.json -> dict with defaults applied; ConfigError names the field, never the key
    cfg = devconfig.load(path, DEFAULTS, 16, 64)
    if cfg.get("transport") not in ("mqtt", "uart"):
        raise ConfigError('%s: transport must be "mqtt" or "uart"' % path)
    if cfg["transport"] == "mqtt" and (not isinstance(cfg.get("broker"), str) or not cfg["broker"]):
        raise ConfigError("%s: broker must be a host name or address" % path)
    limits = (
        ("port", 1, 65535),
        ("heartbeat_s", 1, 86400),
        ("keepalive_s", 0, 65535),
        ("resend_s", 1, 3600),
        ("recheck_s", 1, 86400),
        ("green_s", 0, 86400),
        ("ack_s", 0, 86400),
        ("outbox", _RESERVE + 1, 1000),
        ("long_press_ms", 100, 60000),
        ("debounce_ms", 1, 1000),
        ("baud", 300, 4000000),
    )
    devconfig.check_ints(cfg, path, limits)
    if cfg["long_press_ms"] <= cfg["debounce_ms"]:
        raise ConfigError("%s: long_press_ms must be larger than debounce_ms" % path)
    return cfg


def _jitter(ms):
    # ms +- 25 %, from the OS random source (boards have os.urandom too)
    r = os.urandom(2)
    return ms * 3 // 4 + (r[0] << 8 | r[1]) * (ms // 2) // 65536


class AlarmPost:
    def __init__(self, cfg, board):
        self.cfg = cfg
        self.board = board
        self.id = cfg["id"]
        self.key = cose.MacKey(cfg["key"])
        self.down = "ge/dev/%s/down" % self.id
        root = cfg["data_dir"]
        self.boot = store.BootCounter(root).next()
        self.outbox = store.Outbox(root, cfg["outbox"])
        # seq 1 of every boot is ONLINE: central learns of every restart (a power cut at a
        # post matters), so it goes through the outbox like the alarms when there is room
        self.seq = 1
        self.online = None
        data = {1: len(self.outbox)}
        if len(self.outbox) < self.outbox.capacity - _RESERVE:
            msg = frame.build(
                self.key, self.id, self.boot, 1, frame.T_ONLINE, clock.uptime_ms(), data, frame.FLAG_RECEIPTS
            )
            self.outbox.put(self.boot, 1, _P1, msg)
        else:
            self.online = frame.build(self.key, self.id, self.boot, 1, frame.T_ONLINE, clock.uptime_ms(), data)
        self.button = Debouncer(cfg["debounce_ms"], cfg["long_press_ms"])
        self.tamper = Debouncer(cfg["debounce_ms"], 0)  # a switch: no long press
        self.tamper_level = None  # last reported level
        self.edges = []
        self.client = None  # the link while it is up
        if cfg["transport"] == "uart":
            self.link = UartLink(lambda: board.uart(cfg["baud"]), self._receipt, "uart")
        else:
            self.link = MqttLink(self.id, cfg["broker"], cfg["port"], cfg["keepalive_s"], self._receipt)
        self.poller = select.poll()
        self.backoff = _BACKOFF_MIN_MS
        now = ticks_ms()
        self.next_connect = now
        self.next_heartbeat = ticks_add(now, cfg["heartbeat_s"] * 1000)
        self.last_sent = {}  # (boot, seq) -> ticks of the last send on this connection
        self.delivered_at = None
        self.beep_until = None
        self.beeps_left = 0  # buzzer phases still to come after the current one
        self.recent = []  # (boot, seq) of the last _RECENT alarms delivered
        self.acked = None  # (boot, seq) of the last alarm acknowledged by a dispatcher
        self.acked_at = None
        self.folded = 0  # presses not written because the outbox was full
        self.dropped_tamper = 0
        self.bad_receipts = 0
        self.stray_receipts = 0
        self.dropped_events = 0  # P1/P2 events the gateway evicted (receipt 4)
        self.led = None
        board.button.irq(self._edge)
        board.tamper.irq(self._edge)
        board.register(self.poller)
        print(
            "alarm_post: %s boot %d outbox %d (bad %d torn %d)"
            % (self.id, self.boot, len(self.outbox), self.outbox.bad, self.outbox.torn)
        )

    # inputs

    def _edge(self, pin):
        # pin irq: queue the edge only; the loop does the work
        if len(self.edges) < _MAX_EDGES:
            self.edges.append((pin, pin.value(), ticks_ms()))

    def _inputs(self, now):
        edges = self.edges
        self.edges = []
        for pin, level, t in edges:
            self._sample(pin, level, t)
        self._sample(self.board.button, self.board.button.value(), now)
        self._sample(self.board.tamper, self.board.tamper.value(), now)

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

    # events

    def _next_seq(self):
        self.seq += 1
        return self.seq

    def _alarm(self, typ, data):
        if self.outbox.full():
            self.folded += 1
            print("alarm_post: outbox full, press %d held in RAM" % self.folded)
            self._beep()
            return
        if self.folded:
            data = {1: self.folded + 1}
            self.folded = 0
        self._store(_P0, typ, data)
        self._beep()

    def _tamper(self, level):
        if len(self.outbox) >= self.outbox.capacity - _RESERVE:
            self.dropped_tamper += 1
            print("alarm_post: outbox reserve reached, tamper %d dropped (%d)" % (level, self.dropped_tamper))
            return
        self._store(_P1, frame.T_TAMPER, {1: level})

    def _store(self, prio, typ, data):
        seq = self._next_seq()
        msg = frame.build(self.key, self.id, self.boot, seq, typ, clock.uptime_ms(), data, frame.FLAG_RECEIPTS)
        # flash first: from here on the event survives a power cut
        self.outbox.put(self.boot, seq, prio, msg)
        print("alarm_post: event %d/%d type %d saved" % (self.boot, seq, typ))
        # the LED says "saved, sending" before anything goes out, however fast the receipts come
        self._show(ticks_ms())
        self._send(self.boot, seq, msg)

    def _flush_folded(self):
        if self.folded and not self.outbox.full():
            n = self.folded
            self.folded = 0
            self._store(_P0, frame.T_ALARM, {1: n})

    def _beep(self, n=1):
        # n beeps of _BEEP_MS with _BEEP_MS pauses; _show() runs the phases
        self.board.buzzer.on()
        self.beeps_left = 2 * n - 2
        self.beep_until = ticks_add(ticks_ms(), _BEEP_MS)

    # link

    def _connect(self, now):
        link = self.link
        try:
            # receipts that were missed while away are asked for again by the resends below
            link.open(self.poller)
        except (LinkError, OSError) as e:
            self.next_connect = ticks_add(now, _jitter(self.backoff))
            print("alarm_post: no link: %s; next try in %d ms" % (e, ticks_diff(self.next_connect, now)))
            self.backoff = min(self.backoff * 2, _BACKOFF_MAX_MS)
            return
        self.client = link
        self.backoff = _BACKOFF_MIN_MS
        self.last_sent = {}
        print("alarm_post: connected to %s" % link.where)
        self._resend(ticks_ms(), True)
        if self.online is not None and self._publish(self.online):
            self.online = None

    def _drop(self, why):
        c = self.client
        self.client = None
        if c is None:
            return
        c.close()
        # a new poll set: the old one may still hold the link's closed socket or port
        self.poller = select.poll()
        self.board.register(self.poller)
        now = ticks_ms()
        self.next_connect = ticks_add(now, _jitter(self.backoff))
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_MS)
        print("alarm_post: link lost: %s" % why)

    def _room(self):
        c = self.client
        return c is not None and c.room()

    def _publish(self, msg):
        if not self._room():
            return False
        try:
            self.client.send(msg)
        except (LinkError, OSError) as e:
            self._drop(e)
            return False
        return True

    def _send(self, boot, seq, msg=None):
        if msg is None:
            msg = self.outbox.frame(boot, seq)
        if self._publish(msg):
            self.last_sent[(boot, seq)] = ticks_ms()

    def _resend(self, now, all_due=False):
        if self.client is None:
            return
        # (boot, seq) order, whatever the priority: see the top of this file
        keys = [(b, s, st) for _, b, s, st in self.outbox.items()]
        keys.sort()
        for b, s, st in keys:
            last = self.last_sent.get((b, s))
            wait = self.cfg["resend_s"] if st == _ST_SENT else self.cfg["recheck_s"]
            if all_due or last is None or ticks_diff(now, last) >= wait * 1000:
                if not self._room():
                    return
                self._send(b, s)
                if self.client is None:
                    return

    def _message(self, topic, msg):
        # a message as the MQTT client hands it over; only receipts are expected
        if topic == self.down.encode():
            self._receipt(msg)

    def _receipt(self, msg):
        # one receipt from the gateway, from either link (inside the link's poll())
        try:
            boot, seq, kind = frame.parse_receipt(self.key, msg)
        except frame.FrameError as e:
            self.bad_receipts += 1
            print("alarm_post: receipt ignored (%d so far): %s" % (self.bad_receipts, e))
            return
        state = self.outbox.state(boot, seq)
        if state is not None and kind == frame.R_DROPPED and self._prio(boot, seq) != _P0:
            # the gateway's buffer was full and it evicted this state/telemetry event;
            # alarms are never evicted, so a "dropped" for one is not believed
            self.outbox.remove(boot, seq)
            self.last_sent.pop((boot, seq), None)
            self.dropped_events += 1
            print("alarm_post: event %d/%d dropped by the gateway" % (boot, seq))
            return
        if kind == frame.R_ACKNOWLEDGED:
            self._acknowledged(boot, seq)
            return
        if state is None or kind not in (frame.R_STORED, frame.R_DELIVERED):
            self.stray_receipts += 1
            return
        if kind == frame.R_STORED:
            if self.outbox.mark(boot, seq, _ST_STORED):
                print("alarm_post: event %d/%d stored at the gateway" % (boot, seq))
                self.last_sent[(boot, seq)] = ticks_ms()
        else:
            alarm = self._prio(boot, seq) == _P0
            self.outbox.remove(boot, seq)
            self.last_sent.pop((boot, seq), None)
            if alarm:
                self.delivered_at = ticks_ms()  # green is for alarms only
                self.recent.append((boot, seq))
                if len(self.recent) > _RECENT:
                    self.recent.pop(0)
            print("alarm_post: event %d/%d delivered" % (boot, seq))

    def _acknowledged(self, boot, seq):
        # receipt 3: believed for an alarm the post holds or delivered recently
        if self._prio(boot, seq) != _P0 and (boot, seq) not in self.recent:
            self.stray_receipts += 1
            return
        self.acked_at = ticks_ms()
        if self.acked != (boot, seq):
            self.acked = (boot, seq)
            self._beep(2)
        print("alarm_post: event %d/%d acknowledged: help is coming" % (boot, seq))

    def _prio(self, boot, seq):
        for prio, b, s, _ in self.outbox.items():
            if b == boot and s == seq:
                return prio
        return None

    def _heartbeat(self, now):
        if ticks_diff(now, self.next_heartbeat) < 0:
            return
        self.next_heartbeat = ticks_add(now, self.cfg["heartbeat_s"] * 1000)
        if self.client is None or not self._room():
            return
        for _, b, s, st in self.outbox.items():
            if b == self.boot and st == _ST_SENT and self.seq - s >= _WINDOW_GUARD:
                return
        seq = self._next_seq()
        data = {1: clock.uptime_ms() // 1000, 2: len(self.outbox)}
        self._publish(frame.build(self.key, self.id, self.boot, seq, frame.T_HEARTBEAT, clock.uptime_ms(), data))

    def _link(self, now):
        try:
            self.client.poll()
        except (LinkError, OSError) as e:
            self._drop(e)
            return
        self._flush_folded()
        self._resend(now)
        self._heartbeat(now)

    # outputs

    def _show(self, now):
        colour = _LED_OFF
        for prio, _, _, st in self.outbox.items():
            if prio != _P0:
                continue
            if st == _ST_SENT:
                colour = _LED_AMBER
                break
            colour = _LED_BLUE
        if self.folded:
            colour = _LED_AMBER
        if self.acked_at is not None:
            if ticks_diff(now, self.acked_at) >= self.cfg["ack_s"] * 1000:
                self.acked_at = None
            elif colour != _LED_AMBER:
                colour = _LED_WHITE
        if colour == _LED_OFF and self.delivered_at is not None:
            if ticks_diff(now, self.delivered_at) < self.cfg["green_s"] * 1000:
                colour = _LED_GREEN
            else:
                self.delivered_at = None
        if colour != self.led:
            self.led = colour
            self.board.rgb(colour[0], colour[1], colour[2])
        if self.beep_until is not None and ticks_diff(now, self.beep_until) >= 0:
            if self.beeps_left:
                self.beeps_left -= 1
                self.board.buzzer.value(0 if self.board.buzzer.value() else 1)
                self.beep_until = ticks_add(now, _BEEP_MS)
            else:
                self.board.buzzer.off()
                self.beep_until = None

    def _timeout(self, now):
        if self.edges or self.button.waiting() or self.tamper.waiting() or self.beep_until is not None:
            return 10
        ms = 1000
        if self.client is None:
            ms = min(ms, max(0, ticks_diff(self.next_connect, now)))
        return ms

    def step(self):
        now = ticks_ms()
        clock.uptime_ms()
        self.board.service()
        self._inputs(now)
        if self.client is None and ticks_diff(now, self.next_connect) >= 0:
            self._connect(now)
        if self.client is not None:
            self._link(now)
        self._show(now)
        self.poller.poll(self._timeout(ticks_ms()))

    def run(self):
        while True:
            self.step()


def run(cfg=None):
    import hal

    if cfg is None:
        cfg = load_config()
    AlarmPost(cfg, hal.Board()).run()
