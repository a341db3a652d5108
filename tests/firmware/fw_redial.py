# Reconnection timing (lib/link.py Redial) and what the reporting devices do with it
# (lib/reporter.py): jittered, capped delays; a new alarm tries the link at once, at most once
# per 0.5 s; shorter delays while an alarm waits for the gateway. All on a fake clock: the
# device's poll() advances it by the time the loop would sleep, so a minute of outage takes
# milliseconds and every figure is exact. Runs on MicroPython and CPython.
# (tests/test_alarm_post_e2e.py shows the same against a real broker that goes away.)
import json

import cbor
import cose
import frame
import link
import reporter
from apps.alarm_post import app as post_app
from apps.sensor import app as sensor_app
from fwsupport import rmtree, scratch_dir
from hal.unix import Board

KEY = bytes(range(32))
FLOOR = 250
FIRST = 1000
CAP = 4000
URGENT = 1000
GAP = 500


def test_delays_stay_between_the_floor_and_a_doubling_capped_ceiling():
    for seed in (1, 2, 777, 65535):
        r = link.Redial(seed)
        t = 1000
        for n in range(40):
            r.attempt(t)
            d = r.down(t)
            ceiling = min(CAP, FIRST << n)
            assert FLOOR <= d < ceiling, (seed, n, d)
            assert r.wait_ms(t) == d and r.wait_ms(t + d - 1) == 1 and r.wait_ms(t + d) == 0
            t += d


def test_urgent_delays_capped_at_one_second():
    r = link.Redial(99)
    delays = []
    for _ in range(200):
        delays.append(r.down(0, True))
    assert min(delays) >= FLOOR and max(delays) < URGENT
    # whatever came before: a device at the 4 s cap drops to 1 s once an alarm waits
    r = link.Redial(5)
    for _ in range(10):
        r.down(0)
    assert max(r.down(0, True) for _ in range(50)) < URGENT


def test_jitter_covers_the_range_and_differs_per_device():
    r = link.Redial(12345)
    for _ in range(5):
        r.down(0)  # at the cap
    delays = [r.down(0) for _ in range(2000)]
    assert min(delays) < FLOOR + 100 and max(delays) > CAP - 100
    mean = sum(delays) // len(delays)
    assert abs(mean - (FLOOR + CAP) // 2) < 150, mean
    a = [link.Redial(1).down(0) for _ in range(1)]
    b = [link.Redial(2).down(0) for _ in range(1)]
    assert a != b
    # seeded from os.urandom by default
    firsts = set()
    for _ in range(20):
        firsts.add(link.Redial().down(0))
    assert len(firsts) > 10, firsts


def test_xorshift_has_full_period():
    r = link.Redial(1)
    seen = 0
    while True:
        r.down(0)
        seen += 1
        assert 0 < r._x < 65536
        if r._x == 1:
            break
    assert seen == 65535


def test_a_venue_comes_back_spread_out():
    # 50 devices lose the broker at the same moment (it restarted): their first attempts
    # spread over 0.25-1 s, and after a long outage over 0.25-4 s, never a crowd
    for fails in (0, 10):
        firsts = []
        for seed in range(1, 51):
            r = link.Redial(seed * 1237)
            for _ in range(fails):
                r.down(0)
            firsts.append(r.down(0))
        ceiling = FIRST if not fails else CAP
        span = max(firsts) - min(firsts)
        assert span > (ceiling - FLOOR) * 3 // 4, (fails, span)
        buckets = {}
        for d in firsts:
            buckets[d * 10 // ceiling] = buckets.get(d * 10 // ceiling, 0) + 1
        assert max(buckets.values()) <= 12, (fails, buckets)  # no tenth of the window holds 1/4


def test_the_doubling_starts_again_only_after_a_stable_link():
    r = link.Redial(3)
    for _ in range(6):
        r.down(0)
    r.up(10000)
    assert r.down(15000) >= FLOOR and r.fails == 7  # up for 5 s: still flapping
    r.up(20000)
    r.down(30000)  # up for 10 s: a fresh start
    assert r.fails == 1
    assert r.down(30000) < 2 * FIRST


def test_wake_brings_the_attempt_forward_at_most_once_per_gap():
    r = link.Redial(8)
    assert not r.wake(0)  # never tried: already due
    r.attempt(0)
    while r.wait_ms(100) < GAP + 200:
        r.down(100)  # a long backoff
    due = r.due
    assert r.wake(100) and r.due == GAP and r.woken  # the last attempt started at 0
    assert not r.wake(200) and r.due == GAP  # a second alarm changes nothing
    r.attempt(GAP)
    assert r.woken  # this attempt was an alarm's
    r.down(GAP + 20)
    assert not r.woken
    assert r.wake(GAP + 30) and r.due == 2 * GAP
    r.attempt(2 * GAP)
    while r.wait_ms(2 * GAP + 10) < 2000:
        r.down(2 * GAP + 10)
    assert r.wake(3 * GAP + 600) and r.due == 3 * GAP + 600  # long after the gap: at once
    assert due != r.due


# --- the devices, on a fake clock -----------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 10000
        self.limit = None  # Rig.run(): the loop does not sleep past this

    def ticks_ms(self):
        return self.now


class Poller:
    # the device's poll set: sleeping advances the fake clock
    def __init__(self, clock, log):
        self.clock = clock
        self.log = log

    def register(self, obj, mask=0):
        pass

    def poll(self, ms):
        assert ms >= 0
        if self.clock.limit is not None:
            ms = min(ms, self.clock.limit - self.clock.now)
        self.log.append(ms)
        self.clock.now += ms
        return []


class Select:
    # stands in for the select module in lib/reporter.py: every new poll set is the fake one
    POLLIN = 1

    def __init__(self, poller):
        self.poller = poller

    def poll(self):
        return self.poller


class FakeLink:
    # the gateway's broker, up or down; every attempt with its time and whether an alarm
    # brought it forward, and what the device sends
    where = "fake"

    def __init__(self, clock, redial):
        self.clock = clock
        self.redial = redial
        self.gateway_up = False
        self.opens = []
        self.woken = []
        self.sent = []
        self.connected = False

    def open(self, poller):
        self.opens.append(self.clock.now)
        self.woken.append(self.redial.woken)
        if not self.gateway_up:
            raise link.LinkError("connection refused")
        self.connected = True

    def close(self):
        self.connected = False

    def room(self):
        return self.connected

    def send(self, msg):
        self.sent.append((self.clock.now, msg))

    def poll(self):
        if not self.gateway_up:
            raise link.LinkError("connection lost")


class Rig:
    def __init__(self, device, clock):
        self.clock = clock
        self.sleeps = []
        self.device = device
        device.redial = link.Redial(4242)
        self.link = FakeLink(clock, device.redial)
        device.link = self.link
        device.poller = Poller(clock, self.sleeps)

    def run(self, ms):
        end = self.clock.limit = self.clock.now + ms
        steps = 0
        while self.clock.now < end:
            self.device.step()
            steps += 1
            assert steps < 100000, "busy loop"
        self.clock.limit = None

    def next_try_far(self, ms):
        # from one attempt to the next until one fails with the next at least ms away; the
        # clock stops right after that attempt
        redial = self.device.redial
        for _ in range(200):
            self.clock.now += redial.wait_ms(self.clock.now)
            self.clock.limit = self.clock.now
            n = len(self.link.opens)
            self.device.step()
            self.clock.limit = None
            assert len(self.link.opens) == n + 1
            if redial.wait_ms(self.clock.now) >= ms:
                return
        raise AssertionError("no backoff of %d ms in 200 attempts" % ms)

    def gateway_back(self, before_press_ms):
        # the gateway returns before_press_ms before the next press, while the device waits
        # for its backoff
        self.next_try_far(before_press_ms + 100)
        self.link.gateway_up = True
        self.run(before_press_ms)
        assert not self.link.connected

    def types_sent(self, since=0):
        out = []
        for t, msg in self.link.sent:
            if t >= since:
                _, payload = cose.mac0_verify(KEY, msg, frame.AAD_FRAME)
                out.append(cbor.loads(payload)[frame.K_TYPE])
        return out


def _on_fake_clock(module, make, body):
    # the device under test reads the fake clock (reporter's and its app's ticks_ms) and
    # sleeps on the fake poll set
    clock = Clock()
    saved = (reporter.ticks_ms, reporter.select, getattr(module, "ticks_ms", None))
    try:
        reporter.ticks_ms = clock.ticks_ms
        if saved[2] is not None:
            module.ticks_ms = clock.ticks_ms
        rig = Rig(make(), clock)
        reporter.select = Select(rig.device.poller)
        body(rig)
    finally:
        reporter.ticks_ms = saved[0]
        reporter.select = saved[1]
        if saved[2] is not None:
            module.ticks_ms = saved[2]


def _post(name, **over):
    root = scratch_dir(name)
    rmtree(root)
    path = root + ".json"
    cfg = {"id": "AP-0001", "key": KEY.hex(), "broker": "127.0.0.1", "data_dir": root, "debounce_ms": 1}
    cfg.update(over)
    with open(path, "w") as f:
        f.write(json.dumps(cfg))
    cfg = post_app.load_config(path)
    return lambda: post_app.AlarmPost(cfg, Board())


def _sensor(name):
    root = scratch_dir(name)
    rmtree(root)
    path = root + ".json"
    with open(path, "w") as f:
        f.write(
            '{"id": "VS-0001", "key": "%s", "broker": "127.0.0.1", "data_dir": "%s", '
            '"channels": [{"name": "hall", "type": "smoke"}]}' % (KEY.hex(), root)
        )
    cfg = sensor_app.load_config(path)
    return lambda: sensor_app.VenueSensor(cfg, Board())


def _gaps(times):
    return [times[i + 1] - times[i] for i in range(len(times) - 1)]


def test_press_tries_the_link_at_once_whatever_the_backoff():
    def body(rig):
        post = rig.device
        rig.run(60000)  # a minute without the gateway: the backoff is at its cap
        gaps = _gaps(rig.link.opens)
        assert len(gaps) > 20 and max(gaps) <= CAP and min(gaps) >= FLOOR, gaps
        assert max(gaps[5:]) > 2000  # nothing waits long, yet the device does not hammer
        assert len(rig.sleeps) < 60000 // 200  # the loop sleeps between attempts
        rig.gateway_back(500)  # the gateway returns; 0.5 s later, still in the backoff ...
        pressed = rig.clock.now
        post._alarm(frame.T_ALARM, {})  # ... a press (the debouncer's PRESS)
        post.step()
        assert rig.link.opens[-1] == pressed and rig.link.woken[-1], "the press did not try the link at once"
        assert rig.link.connected
        assert rig.types_sent(pressed)[:2] == [frame.T_ONLINE, frame.T_ALARM]  # the outbox, in order

    _on_fake_clock(post_app, _post("redial-press"), body)


def test_held_press_tries_the_link_at_once():
    def body(rig):
        rig.run(30000)
        rig.gateway_back(500)
        pressed = rig.clock.now
        rig.device._alarm(frame.T_ALARM_HELD, {1: 3000})
        rig.device.step()
        assert rig.link.opens[-1] == pressed and rig.link.connected
        assert frame.T_ALARM_HELD in rig.types_sent(pressed)

    _on_fake_clock(post_app, _post("redial-held"), body)


def test_presses_while_down_add_at_most_two_attempts_a_second():
    def body(rig):
        post = rig.device
        rig.run(20000)
        before = len(rig.link.opens)
        start = rig.clock.now
        for _ in range(50):  # someone hammers the button: 10 presses a second for 5 s
            post._alarm(frame.T_ALARM, {})
            rig.run(100)
        opens = rig.link.opens[before - 1 :]
        woken = rig.link.woken[before - 1 :]
        assert opens[1] <= start + GAP  # the first press: at once, or when the gap is over
        gaps = _gaps(opens)
        assert min(gaps) >= FLOOR, gaps
        for i, gap in enumerate(gaps):
            if woken[i + 1]:
                assert gap >= GAP, (i, gaps)
        assert any(woken) and len(opens) - 1 <= 5000 // FLOOR
        assert len(post.outbox) == 51  # every press kept (and ONLINE)

    _on_fake_clock(post_app, _post("redial-hammer", outbox=64), body)


def test_an_alarm_waiting_keeps_the_attempts_within_a_second():
    def body(rig):
        post = rig.device
        rig.run(30000)
        post._alarm(frame.T_ALARM, {})
        post.step()
        start = len(rig.link.opens)
        rig.run(30000)
        gaps = _gaps(rig.link.opens[start - 1 :])
        assert max(gaps) <= URGENT and min(gaps) >= FLOOR, gaps
        # the gateway comes back: the alarm goes out within a second, however long it was away
        rig.link.gateway_up = True
        back = rig.clock.now
        rig.run(URGENT)
        assert frame.T_ALARM in rig.types_sent(back)
        # once it is stored at the gateway (receipt 1) a lost link goes back to the long cap
        for _, b, s, _ in post.outbox.items():
            post.outbox.mark(b, s, reporter.ST_STORED)
        rig.link.gateway_up = False
        start = len(rig.link.opens)
        rig.run(60000)
        assert max(_gaps(rig.link.opens[start:])) > 2000

    _on_fake_clock(post_app, _post("redial-urgent"), body)


def test_a_press_held_in_ram_tries_the_link_too():
    def body(rig):
        post = rig.device
        while not post.outbox.full():
            post._alarm(frame.T_ALARM, {})
            rig.run(GAP)
        rig.run(20000)
        rig.gateway_back(GAP + 50)
        pressed = rig.clock.now
        post._alarm(frame.T_ALARM, {})  # no room: folded in RAM, still a new alarm
        assert post.folded == 1
        post.step()
        assert rig.link.opens[-1] == pressed and rig.link.connected

    _on_fake_clock(post_app, _post("redial-full", outbox=8), body)


def test_smoke_tries_the_link_at_once():
    def body(rig):
        sensor = rig.device
        rig.run(60000)
        rig.gateway_back(500)
        at = rig.clock.now
        sensor._event(reporter.P0, frame.T_SMOKE, {1: 0, 2: 400, 3: "hall"})
        sensor.step()
        assert rig.link.opens[-1] == at and rig.link.connected
        assert frame.T_SMOKE in rig.types_sent(at)

    _on_fake_clock(sensor_app, _sensor("redial-smoke"), body)


def test_a_state_change_waits_for_the_backoff():
    # only alarms jump the queue: a tamper change (P1) waits like everything else
    def body(rig):
        rig.run(30000)
        rig.gateway_back(500)
        n = len(rig.link.opens)
        rig.device._tamper(1)
        rig.device.step()
        assert len(rig.link.opens) == n and not rig.link.connected

    _on_fake_clock(post_app, _post("redial-tamper"), body)


def test_no_allocation_on_the_loop_path():
    # MicroPython: with the heap locked any allocation raises MemoryError. What the device's
    # loop calls on every turn while the link is down (wait_ms), and what a failure or an
    # alarm calls (down, wake, attempt), allocates nothing.
    try:
        import micropython
    except ImportError:
        return  # CPython has no heap lock; the same calls run in the tests above
    r = link.Redial(77)
    r.attempt(100)
    micropython.heap_lock()
    try:
        for t in range(1000, 200000, 997):
            r.wait_ms(t)
            r.attempt(t)
            r.down(t, t & 1)
            r.wake(t + 3)
            r.up(t + 5)
    finally:
        micropython.heap_unlock()


def test_the_gateways_online_sends_the_outbox_at_once():
    # The local broker came back without the agent's session: the press went out and the
    # broker dropped it. When the agent is subscribed again it says `online`, and the post
    # sends its outbox again at once, as after a reconnect (resend_s is a minute here: only
    # `online` can do it); what the gateway has is answered with the receipt it earned.
    def body(rig):
        post = rig.device
        rig.link.gateway_up = True
        rig.run(1000)
        assert rig.link.connected
        post._alarm(frame.T_ALARM, {})
        rig.run(2000)
        assert rig.types_sent().count(frame.T_ALARM) == 1
        for _, b, s, _ in post.outbox.items():  # ONLINE reached the gateway, the alarm did not
            if b == 1 and s == 1:
                post.outbox.mark(b, s, reporter.ST_STORED)
        heard = rig.clock.now
        post._gateway_online(b"online")  # as the link's poll() hands it over
        # at most once a second, whoever publishes it; anything else on the topic is ignored
        post._gateway_online(b"online")
        post._gateway_online(b"offline")
        rig.clock.limit = heard  # one round of the loop, no sleep
        post.step()
        rig.clock.limit = None
        assert rig.types_sent(heard) == [frame.T_ONLINE, frame.T_ALARM]  # in (boot, seq) order
        rig.clock.now = heard + 999
        post._gateway_online(b"online")
        rig.run(1)
        assert rig.types_sent(heard + 1) == []
        post._gateway_online(b"online")  # a second after the last one
        rig.run(1)
        assert rig.types_sent(heard + 1) == [frame.T_ONLINE, frame.T_ALARM]
        post._gateway_online(b"offline")  # not `online`: nothing
        rig.clock.now += 2000
        later = rig.clock.now
        post._gateway_online(b"offline")
        rig.run(1)
        assert rig.types_sent(later) == []

    _on_fake_clock(post_app, _post("redial-online", resend_s=60, recheck_s=3600), body)
