# What every reporting device (alarm post, venue sensor) does with its events, whatever its
# inputs: the flash outbox, the link to the gateway, receipts, heartbeats and the delivery
# colour of its LED (docs/protocol.md sections 2, 3, 5, 7 and 9; lib/link.py says how the links
# are made).
# An app subclasses Reporter and adds its inputs (_inputs), what it shows (_show) and when
# it needs the loop to come round soon (_busy).
#
# Invariant 1 on the device: an event is written to the flash outbox before anything else
# happens (before the LED changes, before any byte goes out) and stays there until the
# gateway's receipt 2 says central has it.
# - LED colour for alarms (P0): amber = an alarm is saved on the device and being sent;
#   blue = the gateway stored it (receipt 1); green = central has it (receipt 2), shown for
#   green_s seconds; then off.
# - Receipt 3 (a dispatcher at central acknowledged the alarm, "help is coming"): white for
#   ack_s seconds and two short beeps, for an alarm still in the outbox or one of the last
#   few delivered (kept in RAM); only an alarm not yet at the gateway (amber) shows over it.
# - Sending: outbox entries go out in (boot, seq) order on every (re)connection, and again
#   when a receipt is overdue (receipt 1 after resend_s, receipt 2 after recheck_s). Resends
#   are the same bytes; the gateway stores an event once and answers a resend with the
#   receipt for the event's current state. Older boots go first: the gateway takes a late
#   frame only from the (bounded) gaps of its replay record, so in order never needs them.
# - Power cut: the boot counter goes up, seq starts again at 1, the outbox is still there
#   and is sent before anything of the new boot.
# - ONLINE (seq 1 of each boot) goes through the outbox when there is room outside the
#   reserve (the last entries, kept for alarms).
# - Heartbeats (P2) are not persisted: they are sent only while connected and are skipped
#   while an unconfirmed event of this boot would fall out of the gateway's 64-event replay
#   window behind them.
# - Reconnecting (lib/link.py Redial): jittered delays capped at a few seconds, at most 1 s
#   while an alarm waits for the gateway, and a new alarm (press, held press, smoke, gas; also
#   one held in RAM because the outbox is full) tries the link at once whatever the backoff,
#   at most one such attempt per 0.5 s.
# - The gateway's `online` (ge/gateway/status, each time the agent's subscription is in place):
#   the outbox is sent again at once, as after a reconnect, not after resend_s. A local broker
#   that restarted without the agent's session drops what devices publish before the agent is
#   back (the device got the broker's PUBACK, so nothing else tells it); an entry the gateway
#   has is answered with the receipt it earned. At most once per second, whoever publishes it.
# The loop never blocks longer than one connection attempt: inputs arrive through pin irq
# handlers or samples taken in the loop, and everything else runs in the loop.
# It sleeps in board.wait(): a pin interrupt ends that sleep.
# On a board with Wi-Fi the link is opened only while board.online() says the network is up.
# The first heartbeat of a boot carries the reset cause (key 4, docs/protocol.md 2.1).
import select

import clock
import cose
import frame
import store
from clock import const, ticks_add, ticks_diff, ticks_ms
from link import LinkError, Redial

# LED colours: red, green and blue bits (4, 2, 1)
LED_OFF = const(0)
LED_BLUE = const(1)
LED_GREEN = const(2)
LED_RED = const(4)
LED_MAGENTA = const(5)
LED_AMBER = const(6)
LED_WHITE = const(7)
ST_SENT = const(0)  # outbox state: written, no receipt yet
ST_STORED = const(1)  # receipt 1 seen
P0 = const(0)
P1 = const(1)
RESERVE = const(4)  # outbox entries only alarms may use
_WINDOW_GUARD = const(48)  # below the gateway's 64-event replay window
_BEEP_MS = const(120)
_RECENT = const(8)  # delivered alarms a receipt 3 may still name
_ONLINE_GAP_MS = const(1000)  # the gateway's `online` makes a resend at most this often


def load_config(path, defaults, limits=()):
    # config.json -> dict: the link settings (lib/devconfig.py load_link) and the app's
    # `defaults` applied, the link and the app's `limits` checked; ConfigError names the
    # field, never the key
    import devconfig  # configuration only: launch.py drops it once the config is read

    return devconfig.load_link(path, defaults, tuple(limits) + (("outbox", RESERVE + 1, 1000),))


class Reporter:
    TAG = "device"  # console prefix

    def __init__(self, cfg, board):
        self.cfg = cfg
        self.board = board
        self.id = cfg["id"]
        self.key = cose.MacKey(cfg["key"])
        root = cfg["data_dir"]
        self.boot = store.BootCounter(root).next()
        self.outbox = store.Outbox(root, cfg["outbox"])
        # seq 1 of every boot is ONLINE: central learns of every restart (a power cut
        # matters), so it goes through the outbox like the alarms when there is room
        # (without room it is sent once, unasked for receipts, when the link comes up)
        self.seq = 1
        self.online = None
        room = self._room_for(P1)
        msg = frame.build(
            self.key,
            self.id,
            self.boot,
            1,
            frame.T_ONLINE,
            clock.uptime_ms(),
            {1: len(self.outbox)},
            frame.FLAG_RECEIPTS if room else 0,
        )
        if room:
            self.outbox.put(self.boot, 1, P1, msg)
        else:
            self.online = msg
        self.client = None  # the link while it is up
        # each link's code loads only here, for the link config.json names (lib/link.py)
        try:
            if cfg["transport"] == "uart":
                from uartlink import UartLink

                self.link = UartLink(lambda: board.uart(cfg["baud"]), self._receipt, "uart")
            else:
                from mqttlink import MqttLink

                self.link = MqttLink(
                    self.id,
                    cfg["broker"],
                    cfg["port"],
                    cfg["keepalive_s"],
                    self._receipt,
                    password=cfg.get("password"),
                    tls_ca=cfg.get("tls_ca"),
                    on_gateway=self._gateway_online,
                )
        except ImportError as e:
            raise LinkError("this firmware has no %s link: %s" % (cfg["transport"], e))
        self.poller = select.poll()
        self.redial = Redial()
        self.next_heartbeat = ticks_add(ticks_ms(), cfg["heartbeat_s"] * 1000)
        self.last_sent = {}  # (boot, seq) -> ticks of the last send on this connection
        self.delivered_at = None
        self.beep_until = None
        self.beeps_left = 0  # buzzer phases still to come after the current one
        self.recent = []  # (boot, seq) of the last _RECENT alarms delivered
        self.acked = None  # (boot, seq) of the last alarm acknowledged by a dispatcher
        self.acked_at = None
        self.bad_receipts = 0
        self.online_at = ticks_add(ticks_ms(), -_ONLINE_GAP_MS)  # the last gateway `online` acted on
        self.stray_receipts = 0
        self.dropped_events = 0  # P1/P2 events the gateway evicted (receipt 4)
        self.led = None
        self.reset_cause = board.reset_cause()  # for the first heartbeat
        board.register(self.poller)
        self._say(
            "%s boot %d outbox %d (bad %d torn %d)"
            % (self.id, self.boot, len(self.outbox), self.outbox.bad, self.outbox.torn)
        )

    # what an app adds

    def _inputs(self, now):
        pass

    def _busy(self):
        # True while the app needs the loop to come round within 10 ms
        return False

    def _heartbeat_data(self, data):
        return data

    def _show(self, now):
        self._set_led(self._colour(now))
        self._beeper(now)

    # the console: "<TAG>: <what>"

    def _say(self, msg):
        print("%s: %s" % (self.TAG, msg))

    def _said(self, boot, seq, what):
        self._say("event %d/%d %s" % (boot, seq, what))

    # events

    def _next_seq(self):
        self.seq += 1
        return self.seq

    def _room_for(self, prio):
        # alarms may use the whole outbox, everything else leaves the reserve free
        if prio == P0:
            return not self.outbox.full()
        return len(self.outbox) < self.outbox.capacity - RESERVE

    def _store(self, prio, typ, data):
        seq = self._next_seq()
        msg = frame.build(self.key, self.id, self.boot, seq, typ, clock.uptime_ms(), data, frame.FLAG_RECEIPTS)
        # flash first: from here on the event survives a power cut
        self.outbox.put(self.boot, seq, prio, msg)
        self._said(self.boot, seq, "type %d saved" % typ)
        # the LED says "saved, sending" before anything goes out, however fast the receipts come
        self._show(ticks_ms())
        self._send(self.boot, seq, msg)
        if prio == P0:
            self._alarm_raised()

    def _alarm_raised(self):
        # a new alarm (stored, or held in RAM for want of room): no waiting for the backoff
        if self.client is None and self.redial.wake(ticks_ms()):
            self._say("new alarm: link attempt now")

    def _beep(self, n=1):
        # n beeps of _BEEP_MS with _BEEP_MS pauses; _beeper() runs the phases
        self.board.buzzer.on()
        self.beeps_left = 2 * n - 2
        self.beep_until = ticks_add(ticks_ms(), _BEEP_MS)

    # link

    def _connect(self, now):
        link = self.link
        self.redial.attempt(now)
        try:
            # receipts that were missed while away are asked for again by the resends below
            link.open(self.poller)
        except (LinkError, OSError) as e:
            delay = self.redial.down(ticks_ms(), self._alarm_waiting())
            self._say("no link: %s; next try in %d ms" % (e, delay))
            return
        self.client = link
        self.redial.up(ticks_ms())
        self.last_sent = {}
        self._say("connected to " + link.where)
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
        delay = self.redial.down(ticks_ms(), self._alarm_waiting())
        self._say("link lost: %s; next try in %d ms" % (why, delay))

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
            wait = self.cfg["resend_s"] if st == ST_SENT else self.cfg["recheck_s"]
            if all_due or last is None or ticks_diff(now, last) >= wait * 1000:
                if not self._room():
                    return
                self._send(b, s)
                if self.client is None:
                    return

    def _gateway_online(self, msg):
        # the gateway's `online` (inside the link's poll()): the outbox is due again, as after
        # a reconnect, in the _resend() that follows the poll
        now = ticks_ms()
        if msg == b"online" and ticks_diff(now, self.online_at) >= _ONLINE_GAP_MS:
            self.online_at = now
            self.last_sent = {}
            self._say("gateway online, resending")

    def _receipt(self, msg):
        # one receipt from the gateway, from either link (inside the link's poll())
        try:
            boot, seq, kind = frame.parse_receipt(self.key, msg)
        except frame.FrameError as e:
            self.bad_receipts += 1
            self._say("receipt ignored (%d so far): %s" % (self.bad_receipts, e))
            return
        prio = self.outbox.prio(boot, seq)
        if prio is not None and kind == frame.R_DROPPED and prio != P0:
            # the gateway's buffer was full and it evicted this state/telemetry event;
            # alarms are never evicted, so a "dropped" for one is not believed
            self._forget(boot, seq)
            self.dropped_events += 1
            self._said(boot, seq, "dropped by the gateway")
            return
        if kind == frame.R_ACKNOWLEDGED:
            self._acknowledged(boot, seq)
            return
        if prio is None or kind not in (frame.R_STORED, frame.R_DELIVERED):
            self.stray_receipts += 1
            return
        if kind == frame.R_STORED:
            if self.outbox.mark(boot, seq, ST_STORED):
                self._said(boot, seq, "stored at the gateway")
                self.last_sent[(boot, seq)] = ticks_ms()
        else:
            self._forget(boot, seq)
            if prio == P0:
                self.delivered_at = ticks_ms()  # green is for alarms only
                self.recent.append((boot, seq))
                if len(self.recent) > _RECENT:
                    self.recent.pop(0)
            self._said(boot, seq, "delivered")

    def _forget(self, boot, seq):
        # the gateway answered for good: the event leaves the outbox
        self.outbox.remove(boot, seq)
        self.last_sent.pop((boot, seq), None)

    def _acknowledged(self, boot, seq):
        # receipt 3: believed for an alarm the device holds or delivered recently
        if self.outbox.prio(boot, seq) != P0 and (boot, seq) not in self.recent:
            self.stray_receipts += 1
            return
        self.acked_at = ticks_ms()
        if self.acked != (boot, seq):
            self.acked = (boot, seq)
            self._beep(2)
        self._said(boot, seq, "acknowledged: help is coming")

    def _heartbeat(self, now):
        if ticks_diff(now, self.next_heartbeat) < 0:
            return
        self.next_heartbeat = ticks_add(now, self.cfg["heartbeat_s"] * 1000)
        if self.client is None or not self._room():
            return
        for _, b, s, st in self.outbox.items():
            if b == self.boot and st == ST_SENT and self.seq - s >= _WINDOW_GUARD:
                return
        seq = self._next_seq()
        data = self._heartbeat_data({1: clock.uptime_ms() // 1000, 2: len(self.outbox)})
        if self.reset_cause is not None:
            data[4] = self.reset_cause
        if self._publish(frame.build(self.key, self.id, self.boot, seq, frame.T_HEARTBEAT, clock.uptime_ms(), data)):
            self.reset_cause = None  # only the first heartbeat of a boot carries it

    def _link(self, now):
        try:
            self.client.poll()
        except (LinkError, OSError) as e:
            self._drop(e)
            return
        self._linked(now)
        self._resend(now)
        self._heartbeat(now)

    def _linked(self, now):
        # the link is up and polled: an app sends what it held back (the alarm post's
        # presses counted while the outbox was full)
        pass

    # outputs

    def _pending_alarm(self):
        # True when an alarm exists that is not in the outbox yet (held in RAM)
        return False

    def _alarm_waiting(self):
        # an alarm the gateway does not have yet (the LED is amber): in RAM, or in the outbox
        # without receipt 1
        return self._pending_alarm() or self.outbox.least(P0) == ST_SENT

    def _colour(self, now):
        # the delivery colour of the alarms, as at the top of this file
        st = self.outbox.least(P0)
        colour = LED_OFF if st is None else LED_BLUE
        if st == ST_SENT or self._pending_alarm():
            colour = LED_AMBER
        if self.acked_at is not None:
            if ticks_diff(now, self.acked_at) >= self.cfg["ack_s"] * 1000:
                self.acked_at = None
            elif colour != LED_AMBER:
                colour = LED_WHITE
        if colour == LED_OFF and self.delivered_at is not None:
            if ticks_diff(now, self.delivered_at) < self.cfg["green_s"] * 1000:
                colour = LED_GREEN
            else:
                self.delivered_at = None
        return colour

    def _set_led(self, colour):
        if colour != self.led:
            self.led = colour
            self.board.rgb(colour & 4, colour & 2, colour & 1)

    def _beeper(self, now):
        if self.beep_until is not None and ticks_diff(now, self.beep_until) >= 0:
            if self.beeps_left:
                self.beeps_left -= 1
                self.board.buzzer.value(0 if self.board.buzzer.value() else 1)
                self.beep_until = ticks_add(now, _BEEP_MS)
            else:
                self.board.buzzer.off()
                self.beep_until = None

    def _timeout(self, now):
        if self._busy() or self.beep_until is not None:
            return 10
        ms = 1000
        if self.client is None:
            ms = min(ms, self.redial.wait_ms(now))
        return ms

    def step(self):
        # the board first: its edges carry times up to now, and its watchdog is fed here
        self.board.service()
        now = ticks_ms()
        clock.uptime_ms()
        self._inputs(now)
        if self.client is None and self.board.online() and not self.redial.wait_ms(ticks_ms()):
            # read again: an alarm among the inputs may have brought the attempt forward
            self._connect(ticks_ms())
        if self.client is not None:
            self._link(now)
        self._show(now)
        self.board.wait(self.poller, self._timeout(ticks_ms()))

    def run(self):
        while True:
            self.step()
