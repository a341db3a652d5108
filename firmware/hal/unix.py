# Hardware layer for the MicroPython unix port: a virtual board. The supervisor
# (hil_tests/sim/board.py, protocol in its docstring) drives the input pins and watches the
# output pins over an AF_UNIX stream socket named by $GE_VBOARD_CTRL, one ASCII line per
# message: it sends "in <pin> <0|1> [<ms>]" (<ms>: when the level changed, on its clock),
# we send "out <pin> <0|1>" (several pin-level pairs on one line when they change together,
# see Board.rgb()).
# Without a supervisor (no $GE_VBOARD_CTRL, or the socket died) inputs read 0 and outputs are
# kept locally; service() retries the connection at most once a second.
# The UART to the gateway (Board.uart(), hal/unixuart.py) is a pty whose path the supervisor
# passes in $GE_VBOARD_UART; the supervisor bridges it to a host-side pty the gateway opens.
# A wristband's parts: the strap contact is the input pin "strap" (1 = open); the supervisor
# also sends "pos <x> <y>" (where the band is, metres), "bat <percent>" and accelerometer
# samples "acc <x> <y> <z>" (milli-g at 50 Hz, stamped with ticks_ms() on arrival; the
# accelerometer keeps the last 32 and asks for a read as the LIS3DH's FIFO and free-fall
# interrupt do, Board.accel()). Board.radio() is the BLE radio (hal/unixradio.py): adverts go
# to the virtual air at $GE_VBOARD_AIR ("host:port", hil_tests/sim/air.py) every interval.
# The UART and the radio are modules of their own, loaded by the boards that use them, so the
# virtual board's heap holds no more of its hal than the app uses.
# A venue sensor's readings: the supervisor sends "val <name> <integer>" (the channel's unit,
# docs/protocol.md 7.1); Board.sensor(name).read() is the latest, None before the first. A
# reading persists when the supervisor goes away, as a sensor's last conversion would.
import os
import select
import socket
import struct
import sys
import time

from clock import const, ticks_add, ticks_diff, ticks_ms

_RETRY_MS = const(1000)
_SYNC_MS = const(500)
_MAX_LINE = const(128)
_EAGAIN = const(11)
_AF_UNIX_FAMILY = const(1)
_ACC_FIFO = const(32)  # accelerometer samples kept until the app reads them (the LIS3DH's FIFO)
_ACC_PERIOD_MS = const(20)  # the supervisor's samples come at 50 Hz


class _In:
    def __init__(self, name):
        self.name = name
        self._v = 0
        self._irq = None

    def value(self):
        return self._v

    def irq(self, handler=None):
        # handler(pin, level, ticks_ms) runs inside Board.service() for every level change,
        # in order, with the time the change was made (as on the real boards' edge rings,
        # hal/machineboard.py): a press and release read together keep their spacing.
        self._irq = handler

    def _set(self, v, t=None):
        if v == self._v:
            return False
        self._v = v
        if self._irq is not None:
            self._irq(self, v, ticks_ms() if t is None else t)
        return True


class _Out:
    def __init__(self, board, name):
        self.name = name
        self._board = board
        self._v = 0

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            self._board._report(self)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class _Accel:
    # The part as hal/machineboard.py's accelerometer shows it (a FIFO of the last 32 samples,
    # an interrupt that asks for a read): due() after a free fall (every axis below the
    # threshold for longer than the duration, as the LIS3DH's free-fall event), and for
    # every sample while watch(True). Unread samples beyond 32 are overwritten.
    def __init__(self, board):
        self._board = board

    def due(self):
        return self._board._acc_due

    def watch(self, on):
        b = self._board
        b._acc_watch = bool(on)
        if on and b._acc:
            b._acc_due = True

    def free_fall(self, mg, ms):
        self._board._ff = (mg, max(0, ms // _ACC_PERIOD_MS - 1))

    def read(self):
        # the samples since the last read: [(ticks_ms, x, y, z)], milli-g
        b = self._board
        out = b._acc
        b._acc = []
        b._acc_due = False
        return out


class _Sensor:
    def __init__(self, board, name):
        self._board = board
        self.name = name

    def read(self):
        return self._board._vals.get(self.name)


def make(spec=None, wifi=None):
    # the virtual board: its pins are the supervisor's, Wi-Fi is the host's
    return Board()


class Board:
    def __init__(self):
        self.button = _In("button")
        self.tamper = _In("tamper")
        self.strap = _In("strap")  # a wristband's strap contact; not in the sync set below
        self._pos = (0.0, 0.0)
        self._bat = 255  # battery %, 255 unknown
        self._acc = []
        self._acc_due = False
        self._acc_watch = True
        self._ff = (350, 2)  # free-fall threshold (mg) and duration (samples): see _Accel
        self._low = 0  # samples in a row below it
        self._vals = {}  # venue sensor readings by channel name
        self._radio = None
        self.led_r = _Out(self, "led_r")
        self.led_g = _Out(self, "led_g")
        self.led_b = _Out(self, "led_b")
        self.buzzer = _Out(self, "buzzer")
        self._ins = (self.button, self.tamper)
        self._outs = (self.led_r, self.led_g, self.led_b, self.buzzer)
        self._path = os.getenv("GE_VBOARD_CTRL")
        self._sock = None
        self._poller = None
        self._rx = b""
        self._offset = None  # our ticks minus the supervisor's ms: the smallest seen (see _apply)
        self._burst = []  # stamped input changes of the read being parsed
        self._uid = None
        self._next_try = ticks_ms()
        self.malformed = 0
        if self._path:
            self._connect()

    def rgb(self, r, g, b):
        # the LED colour in one step: the supervisor gets the pin changes in one message
        changed = []
        for pin, v in ((self.led_r, r), (self.led_g, g), (self.led_b, b)):
            v = 1 if v else 0
            if v != pin._v:
                pin._v = v
                changed.append(pin)
        if changed:
            # one line: the supervisor sees the colour change as one step
            self._send(b"out" + b"".join(b" %s %d" % (p.name.encode(), p._v) for p in changed) + b"\n")

    def uid(self):
        if self._uid is None:
            hexed = os.getenv("GE_VBOARD_UID")
            if hexed:
                self._uid = bytes.fromhex(hexed)
            else:
                # no supervisor: derive a stable id from where the flash directory is
                import hashlib

                h = hashlib.sha256(b"ge-vboard-dir:" + os.getcwd().encode())
                self._uid = h.digest()[:8]
        return self._uid

    def connected(self):
        return self._sock is not None

    def online(self):
        # the network needs no joining here (Wi-Fi is the host's)
        return True

    def wait(self, poller, ms):
        # the loop's sleep: every input reaches the app through the control socket in poller
        poller.poll(ms)

    def colour(self):
        return (self.led_r._v, self.led_g._v, self.led_b._v)

    def reset_cause(self):
        # the ROM's reason for this start (hil_tests/sim/romboot.py): power-on or a soft reset;
        # codes as hal/machineboard.py _RESET_*
        return {"power": 1, "soft": 5, "raw": 5}.get(os.getenv("GE_VBOARD_RESET") or "", 0)

    def radio(self):
        # the BLE radio (hal/unixradio.py: loaded only by a board that advertises)
        if self._radio is None:
            from hal.unixradio import Radio

            self._radio = Radio(self)
        return self._radio

    def accel(self):
        return _Accel(self)

    def battery(self):
        return self._bat

    def sensor(self, name):
        # a venue sensor channel's input: read() -> latest integer reading or None
        return _Sensor(self, name)

    def rtc(self):
        # the host's clock is a running RTC: unix seconds
        return int(time.time())

    def uart(self, baudrate=115200):
        # the UART wired to the gateway (hal/unixuart.py: loaded only by a board that uses one)
        from hal.unixuart import open_uart

        return open_uart(baudrate)

    def register(self, poller):
        # the control socket joins the app's poll set; service() keeps it registered
        # across reconnects
        self._poller = poller
        if self._sock is not None:
            poller.register(self._sock, select.POLLIN)

    def service(self):
        if self._radio is not None:
            self._radio._tick()
        changed = False
        if self._sock is None:
            if not self._path or ticks_diff(ticks_ms(), self._next_try) < 0:
                return False
            return self._connect()
        while self._sock is not None:
            try:
                data = self._sock.recv(256)
            except OSError as e:
                if e.args[0] == _EAGAIN:
                    break
                data = b""
            if not data:
                changed = self._drop() or changed
                break
            changed = self._feed(data) or changed
        return changed

    def close(self):
        self._drop()
        self._path = None

    def _connect(self):
        self._next_try = ticks_add(ticks_ms(), _RETRY_MS)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if sys.implementation.name == "micropython":
                # the unix port takes a raw struct sockaddr_un
                s.connect(struct.pack("H", _AF_UNIX_FAMILY) + self._path.encode() + b"\0")
            else:
                s.connect(self._path)
        except OSError:
            s.close()
            return False
        self._sock = s
        self._rx = b""
        # the supervisor sends every input level first: read them before the app looks
        changed = self._sync(s)
        if self._sock is None:
            return changed
        s.setblocking(False)
        if self._poller is not None:
            self._poller.register(s, select.POLLIN)
        for pin in self._outs:
            self._report(pin)
        return changed

    def _sync(self, s):
        p = select.poll()
        p.register(s, select.POLLIN)
        seen = {}
        changed = False
        start = ticks_ms()
        while len(seen) < len(self._ins):
            left = _SYNC_MS - ticks_diff(ticks_ms(), start)
            if left <= 0 or not p.poll(left):
                break
            try:
                data = s.recv(256)
            except OSError:
                data = b""
            if not data:
                return self._drop() or changed
            changed = self._feed(data, seen) or changed
        return changed

    def _drop(self):
        s = self._sock
        if s is None:
            return False
        self._sock = None
        self._rx = b""
        self._next_try = ticks_add(ticks_ms(), _RETRY_MS)
        if self._poller is not None:
            try:
                self._poller.unregister(s)
            except (KeyError, OSError, ValueError):
                pass
        s.close()
        changed = False
        for pin in self._ins:
            changed = pin._set(0) or changed
        return changed

    def _feed(self, data, seen=None):
        # Input changes stamped by the supervisor ("in <pin> <level> <ms>") reach the pin
        # handlers with the time they were made on our clock (_stamped), however late the
        # lines are read: a real pin's irq runs at the edge, but here the lines wait in the
        # socket while the app is busy (a flash write), and a press and release read together
        # would otherwise look 0 ms long, a bounce. All of them apply at once: nothing waits
        # in the hal for a later poll() to pick it up.
        changed = False
        self._rx += data
        while True:
            i = self._rx.find(b"\n")
            if i < 0:
                break
            line = self._rx[:i]
            self._rx = self._rx[i + 1 :]
            changed = self._line(line, seen) or changed
        if len(self._rx) > _MAX_LINE:
            self._bad(self._rx[:_MAX_LINE])
            self._rx = b""
        return self._apply() or changed

    def _line(self, line, seen):
        parts = line.split(b" ")
        if parts[0] in (b"pos", b"bat", b"acc", b"val"):
            return self._value(parts, line)
        if len(parts) in (3, 4) and parts[0] == b"in" and parts[2] in (b"0", b"1"):
            for pin in self._ins + (self.strap,):
                if pin.name.encode() == parts[1]:
                    if seen is not None and pin is not self.strap:
                        seen[pin.name] = 1
                    level = 1 if parts[2] == b"1" else 0
                    if len(parts) == 3 or seen is not None:
                        return pin._set(level)
                    try:
                        ms = int(parts[3].decode())
                    except (ValueError, UnicodeError):
                        break
                    return self._stamped(pin, level, ms)
        self._bad(line)
        return False

    def _stamped(self, pin, level, ms):
        # collected while a read is parsed; _apply() stamps and applies them all
        self._burst.append((pin, level, ms))
        return False

    def _apply(self):
        # The supervisor's clock maps onto ours by an offset: a change read now was made at
        # most now, so now - ms bounds the offset from above, and the smallest such bound (the
        # newest change of the soonest read) is the best estimate. Every change is stamped
        # ms + offset: never in the future, and spaced exactly as it was made.
        burst = self._burst
        if not burst:
            return False
        self._burst = []
        now = ticks_ms()
        for _, _, ms in burst:
            d = ticks_diff(now, ms)
            if self._offset is None or d < self._offset:
                self._offset = d
        changed = False
        for pin, level, ms in burst:
            changed = pin._set(level, ticks_add(ms, self._offset)) or changed
        return changed

    def _value(self, parts, line):
        try:
            if parts[0] == b"pos" and len(parts) == 3:
                self._pos = (float(parts[1].decode()), float(parts[2].decode()))
                return False
            if parts[0] == b"bat" and len(parts) == 2:
                v = int(parts[1].decode())
                if 0 <= v <= 100 or v == 255:
                    self._bat = v
                    return True
            elif parts[0] == b"val" and len(parts) == 3 and 1 <= len(parts[1]) <= 16:
                self._vals[parts[1].decode()] = int(parts[2].decode())
                return True
            elif parts[0] == b"acc" and len(parts) == 4:
                s = (ticks_ms(), int(parts[1].decode()), int(parts[2].decode()), int(parts[3].decode()))
                self._sample(s)
                return True
        except (ValueError, UnicodeError):
            pass
        self._bad(line)
        return False

    def _sample(self, s):
        acc = self._acc
        acc.append(s)
        if len(acc) > _ACC_FIFO:
            acc.pop(0)
        mg, n = self._ff
        if abs(s[1]) < mg and abs(s[2]) < mg and abs(s[3]) < mg:
            self._low += 1
        else:
            self._low = 0
        if self._acc_watch or self._low > n:
            self._acc_due = True

    def _bad(self, line):
        self.malformed += 1
        print("hal: malformed control line %r (%d so far)" % (line[:40], self.malformed))

    def _report(self, pin):
        self._send(b"out %s %d\n" % (pin.name.encode(), pin._v))

    def _send(self, msg):
        s = self._sock
        if s is None:
            return
        try:
            n = s.send(msg)
        except OSError:
            n = 0
        if n != len(msg):
            # the supervisor is gone or not reading: drop and resync on reconnect
            self._drop()
