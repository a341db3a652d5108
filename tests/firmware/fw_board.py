# The real boards' hardware layer (hal/machineboard.py, hal/esp32.py, hal/rp2.py,
# hal/zephyr.py) on the fakes of tests/firmware/fakes.py: every Board method, pin maps checked
# with named errors, and the hal's choice of port. Runs on MicroPython and CPython.
import json

import fakes
from clock import sleep_ms, ticks_add, ticks_diff
from fwsupport import raises, rmtree, scratch_dir
from hal import HalError, boardspec, civil, esp32, rp2, zephyr
from hal.start import port
from hal.start import spec as hal_spec

POST = {
    "board": "t-post",
    "port": "esp32",
    "button": {"pin": 9, "active": 0, "pull": "up"},
    "tamper": {"pin": 4, "active": 1, "pull": "up"},
    "led": {"rgb": [1, 2, 3], "active": 0},
    "buzzer": {"pin": 10, "active": 1, "freq": 2700},
    "uart": {"id": 1, "tx": 21, "rx": 20},
    "battery": {"adc": 5, "ratio_x1000": 2000},
    "sensors": {"smoke": {"adc": 6, "scale": [[400, 0], [2400, 2000]]}, "door": {"pin": 7, "active": 1}},
    "wdt_ms": 6000,
}


_ZEPHYR_PINS = {
    "button": {"pin": ["gpio0", 11], "active": 0, "pull": "up"},
    "tamper": {"pin": ["gpio0", 4], "active": 1, "pull": "up"},
    "led": {"rgb": [["gpio0", 1], ["gpio0", 2], ["gpio1", 3]], "active": 0},
    "buzzer": {"pin": ["gpio0", 10], "active": 1, "freq": 2700},
    "uart": {"id": 1, "tx": ["gpio0", 21], "rx": ["gpio0", 20]},
    "battery": {"adc": ["gpio0", 5], "ratio_x1000": 2000},
    "sensors": {"smoke": {"adc": ["gpio0", 6], "scale": [[400, 0], [2400, 2000]]}, "door": {"pin": ["gpio0", 7]}},
}


def _spec(over=None, port_name="esp32", drop=()):
    doc = dict(POST)
    doc["port"] = port_name
    for k in drop:
        doc.pop(k, None)
    doc.update(over or {})
    return boardspec.check(doc, "boards/t-post.json", port_name, "t-post")


def _board(over=None, cls=esp32.Board, port_name="esp32", esp=True, wifi=None, drop=(), **kw):
    m = fakes.Machine(esp32=esp, **kw)
    net = fakes.Network()
    bt = fakes.Bluetooth()
    npx = fakes.NeoPixelModule()
    b = cls(_spec(over, port_name, drop), m, net, bt, npx, wifi)
    return b, m, net, bt, npx


def _edges(pin):
    got = []
    pin.irq(lambda p, level, t: got.append((level, t)))
    return got


# outputs


def test_rgb_pins_follow_the_colour_active_low():
    b, m, _, _, _ = _board()
    assert [m.pins[p].level for p in (1, 2, 3)] == [1, 1, 1]  # off = high on an active-low LED
    b.rgb(1, 1, 0)  # amber
    assert [m.pins[p].level for p in (1, 2, 3)] == [0, 0, 1]
    assert b.colour() == (1, 1, 0)
    b.rgb(0, 0, 1)
    assert [m.pins[p].level for p in (1, 2, 3)] == [1, 1, 0]
    assert (b.led_r.value(), b.led_g.value(), b.led_b.value()) == (0, 0, 1)


def test_pwm_led_dims_and_the_buzzer_sounds_its_tone():
    b, m, _, _, _ = _board({"led": {"rgb": [1, 2, 3], "active": 1, "duty": 20000}})
    leds = [p for p in m.pwms if p.pin.id in (1, 2, 3)]
    buzz = next(p for p in m.pwms if p.pin.id == 10)
    assert [p.duty for p in leds] == [0, 0, 0] and buzz.duty == 0 and buzz.f == 2700
    b.rgb(0, 1, 0)
    assert [p.duty for p in leds] == [0, 20000, 0]
    b.buzzer.on()
    assert buzz.duty == 32768 and b.buzzer.value() == 1
    b.buzzer.off()
    assert buzz.duty == 0 and b.buzzer.value() == 0


def test_neopixel_shows_the_colour_at_its_level():
    b, _, _, _, npx = _board({"led": {"neopixel": 8, "level": 48}})
    strip = npx.strips[0]
    assert strip.pin.id == 8 and strip.written[-1] == [(0, 0, 0)]
    b.rgb(1, 0, 1)
    assert strip.written[-1] == [(48, 0, 48)]
    n = len(strip.written)
    b.rgb(1, 0, 1)  # same colour: nothing written
    assert len(strip.written) == n


# inputs


def test_edges_reach_the_handler_with_the_ticks_of_their_interrupt():
    b, m, _, _, _ = _board()
    got = _edges(b.button)
    btn = m.pins[9]
    assert btn.hard and b.button.value() == 0  # pulled up, active low: released
    btn.drive(0)  # pressed
    sleep_ms(60)
    btn.drive(1)
    assert got == [] and b.wake.flag == 1  # nothing runs before the loop drains
    b.service()
    assert [lv for lv, _ in got] == [1, 0]
    assert 50 <= ticks_diff(got[1][1], got[0][1]) < 200
    assert b.wake.flag == 0


def test_a_full_ring_counts_what_it_drops_and_resyncs_on_the_live_level():
    b, m, _, _, _ = _board()
    got = _edges(b.button)
    btn = m.pins[9]
    for i in range(40):
        btn.drive(i % 2)  # 0 = pressed
    b.service()
    assert b.button.lost == 40 - 31
    assert len(got) == 31 + 1  # what fit, then the live level
    assert got[-1][0] == b.button.value() == 0


def test_absent_parts_read_zero_and_take_writes():
    b, _, _, _, _ = _board(drop=("tamper", "buzzer"))
    assert b.tamper.value() == 0 and b.strap.value() == 0
    b.buzzer.on()
    assert b.buzzer.value() == 0


# UART, ADC, sensors


def test_uart_is_set_up_to_never_block_a_read():
    b, _m, _, _, _ = _board()
    u = b.uart(9600)
    assert (u.id, u.baudrate, u.timeout, u.tx.id, u.rx.id) == (1, 9600, 0, 21, 20)
    buf = bytearray(8)
    assert u.readinto(buf) is None  # nothing there: at once, no wait
    u.feed_rx(b"\x00abc")
    assert u.readinto(buf) == 4 and bytes(buf[:4]) == b"\x00abc"
    no_uart = _board(drop=("uart",))[0]
    assert "no uart" in str(raises(OSError, no_uart.uart))


def test_battery_from_the_divided_cell_voltage_on_the_lipo_curve():
    b, m, _, _, _ = _board()
    for adc_mv, pct in ((1850, 30), (2100, 100), (2200, 100), (1650, 0), (1000, 0), (1875, 45), (1862, 37)):
        m.adc_mv[5] = adc_mv
        assert b.battery() == pct, (adc_mv, b.battery(), pct)
    assert _board(drop=("battery",))[0].battery() == 255


def test_rp2_adc_scales_read_u16_by_the_reference():
    b, m, _, _, _ = _board(cls=rp2.Board, port_name="rp2", esp=False, over={"adc_vref_mv": 3300})
    m.adc_mv[5] = 1850
    assert b.battery() == 29  # 12-bit steps: 1850 mV reads 1849 mV, cell 3698 mV
    m.adc_mv[6] = 1400
    assert 999 <= b.sensor("smoke").read() <= 1000


def test_sensor_channels_scale_adc_millivolts_and_read_contacts():
    b, m, _, _, _ = _board()
    smoke = b.sensor("smoke")
    for mv, v in ((400, 0), (1400, 1000), (2400, 2000), (3000, 2000), (100, 0)):
        m.adc_mv[6] = mv
        assert smoke.read() == v
    door = b.sensor("door")
    assert door.read() == 0
    m.pins[7].drive(1)
    assert door.read() == 1
    assert "no sensor channel 'gas'" in str(raises(HalError, b.sensor, "gas"))


# clock, watchdog, reset


def test_rtc_is_none_until_set_and_converts_the_calendar():
    b, m, _, _, _ = _board()
    assert b.rtc() is None  # 2000-01-01 after power-on: not set
    b.set_rtc(1735689600)  # 2025-01-01 00:00:00, a Wednesday
    assert m.rtc_dt == (2025, 1, 1, 2, 0, 0, 0, 0)
    assert b.rtc() == 1735689600
    m.rtc_dt = (2024, 2, 29, 3, 23, 59, 58, 0)
    assert b.rtc() == 1709251198
    for t in (0, 951782400, 1709251198, 4102444799, 1735689600 + 86399):
        y, mo, d, h, mi, s, _ = civil.civil(t)
        assert civil.unix_time(y, mo, d, h, mi, s) == t


def test_zephyr_rtc_converts_the_2000_epoch():
    s = _spec(
        {"button": {"pin": ["gpio0", 11], "active": 0, "pull": "up"}},
        "zephyr",
        drop=("tamper", "led", "buzzer", "uart", "battery", "sensors"),
    )
    m = fakes.Machine()
    clock = [789004800]  # the port's time.time() on 2025-01-01, counted from 2000
    b = zephyr.Board(s, m, clock=(lambda: clock[0], zephyr.port_epoch_offset(lambda t: (2000, 1, 1))))
    assert b.rtc() == 1735689600
    clock[0] = 3600  # 2000-01-01 01:00: never set
    assert b.rtc() is None
    assert zephyr.port_epoch_offset(lambda t: (1970, 1, 1)) == 0
    assert not b.hard_irq and m.pins[("gpio0", 11)].hard is False
    assert "no settable RTC" in str(raises(OSError, b.set_rtc, 1735689600))


def test_watchdog_starts_with_the_loop_and_is_fed_every_turn():
    b, m, _, _, _ = _board()
    assert m.wdts == []  # built, not started: safe mode and the REPL never start it
    for _ in range(3):
        b.service()
    assert len(m.wdts) == 1 and m.wdts[0].timeout == 6000 and m.wdts[0].feeds == 3


def test_a_port_without_a_watchdog_runs_without_one():
    b, m, _, _, _ = _board()
    m.WDT = None
    b.service()
    b.service()
    assert b._no_wdt and b._wdt is None


def test_reset_cause_maps_to_the_protocol_codes():
    for cause, code in ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (99, 0)):
        assert _board(cause=cause)[0].reset_cause() == code
    b, _m, _, _, _ = _board()
    raises(fakes.FakeReset, b.reset)
    assert b.uid() == b"\x10\x20\x30\x40\x50\x60"


# Wi-Fi


def test_wifi_joins_and_retries_with_doubling_backoff():
    b, _m, net, _, _ = _board(wifi=("venue-net", "s3cret-pass"))
    net.accept = False
    assert not b.online()
    wifi = b.wifi
    t0 = wifi.next

    def at(ms):
        return ticks_add(t0, ms)

    wifi.step(at(0))
    assert net.joins == [("venue-net", "s3cret-pass")]
    wifi.step(at(14999))  # still joining
    assert len(net.joins) == 1
    waits = []
    t = at(15000)
    for _ in range(8):
        wifi.step(t)  # the join timed out: the next try is scheduled
        nxt = wifi.next
        waits.append(ticks_diff(nxt, t))
        wifi.step(ticks_add(nxt, -1))  # not yet
        n = len(net.joins)
        wifi.step(nxt)
        assert len(net.joins) == n + 1
        t = ticks_add(nxt, 15000)
    base = 1000
    for w in waits:
        assert base * 3 // 4 <= w <= base * 5 // 4, waits
        base = min(base * 2, 60000)
    net.accept = True  # the access point is back
    wifi.step(t)  # the last join timed out
    t = wifi.next
    wifi.step(t)  # this one succeeds
    wifi.step(ticks_add(t, 10))
    assert b.online() and wifi.backoff == 1000
    n = len(net.joins)
    net.wlans[0].drop()  # the access point went away: a new join at once
    assert not b.online()
    wifi.step(ticks_add(t, 100))
    assert len(net.joins) == n + 1 and b.online()


def test_no_wifi_configured_is_always_online_and_never_touches_the_radio():
    b, _m, net, _, _ = _board()
    b.service()
    assert b.online() and net.wlans == []


def test_wifi_settings_are_checked_without_showing_them():
    root = scratch_dir("wifi-cfg")
    rmtree(root)
    root = scratch_dir("wifi-cfg")
    cfg = root + "/config.json"
    for wifi, msg in (({"ssid": ""}, "wifi.ssid"), ({"ssid": "x", "password": 5}, "wifi.password"), ("x", "wifi.ssid")):
        with open(cfg, "w") as f:
            f.write(json.dumps({"wifi": wifi}))
        e = str(raises(HalError, hal_spec, cfg, root))
        assert msg in e and "5" not in e.replace(cfg, "")
    with open(cfg, "w") as f:
        f.write(json.dumps({"wifi": {"ssid": "venue", "password": "hunter22"}}))
    assert hal_spec(cfg, root) == ("unix", None, ("venue", "hunter22"))


# radio


def test_radio_asks_for_a_fresh_private_address_when_the_window_changes():
    b, _, _, bt, _ = _board()
    r = b.radio()
    ble = bt.bles[0]
    assert ble.on
    r.address(b"\x01" * 6)
    r.gap_advertise(1000000, b"\x1e\xff" + bytes(29))
    mac1 = ble.mac
    r.address(b"\x01" * 6)  # same window: no change
    assert ble.mac == mac1 and r.rotations == 1
    r.address(b"\x02" * 6)
    assert ble.mac != mac1 and ble.addr_mode == 3 and r.rotates and r.rotations == 2
    assert ble.adverts[-1] == (None, None, True) or ble.adverts[-1][0] is None  # stopped to change it
    r.gap_advertise(1000000, b"\x1e\xff" + bytes(29))
    assert ble.adverts[-1] == (1000000, b"\x1e\xff" + bytes(29), False)


def test_radio_on_a_port_that_keeps_its_identity_address_says_so():
    b, _, _, bt, _ = _board()
    bt.rotates = False
    r = b.radio()
    r.address(b"\x01" * 6)
    assert not r.rotates


# light sleep


class _Idle:
    # a poll set with nothing ready
    def __init__(self):
        self.polls = []

    def poll(self, ms):
        self.polls.append(ms)
        return []


def test_light_sleep_between_adverts_and_a_press_ends_it():
    b, m, _, _, _ = _board({"sleep": "light"})
    p = _Idle()
    b.wait(p, 400)
    assert m.sleeps == [400] and p.polls == [0] and b.light_sleeps == 1
    b.wait(p, 5)  # too short to be worth it: an ordinary poll
    assert m.sleeps == [400] and p.polls[-1] == 5
    got = _edges(b.button)
    m.pins[9].drive(0)  # pressed before the wait: no sleep (a level wake would fire at once)
    b.wait(p, 400)
    assert m.sleeps == [400]
    m.pins[9].drive(1)
    b.service()
    del got[:]

    def press_while_asleep():
        assert m.pins[9].wake_level == 0  # the board armed the pressed level as a wake source
        m.pins[9].level = 0  # a level, no edge interrupt: the chip is asleep

    m.on_sleep = press_while_asleep
    b.wait(p, 400)
    assert m.sleeps[-1] == 400 and m.sleep_woken == 1
    assert m.pins[9].wake_level is None and m.pins[9].hard  # the edge interrupt is back
    b.service()
    assert [lv for lv, _ in got] == [1]  # the press that woke it is recorded


def test_idle_boards_never_light_sleep():
    b, m, _, _, _ = _board()
    b.wait(_Idle(), 400)
    assert m.sleeps == []


# pin maps


def test_board_files_in_the_tree_are_valid_for_their_port():
    import os

    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    root = here + "/../../firmware/boards"
    names = [n[:-5] for n in os.listdir(root) if n.endswith(".json")]
    assert len(names) >= 4
    for name in names:
        with open(root + "/" + name + ".json") as f:
            doc = json.load(f)
        s = boardspec.load(name, doc["port"], root)
        assert s["board"] == name


def test_pin_maps_that_do_not_fit_are_named_by_file_and_key():
    cases = (
        ({"port": "rp2"}, "esp32", "port: this pin map is for rp2"),
        ({"port": "pyboard"}, "esp32", "port: must be one of"),
        ({"board": "other"}, "esp32", "board: must be the file's own name"),
        ({"button": {"pin": 60}}, "esp32", "button.pin: must be an integer from 0 to 48"),
        ({"button": {"pin": 9, "pull": "sideways"}}, "esp32", "button.pull"),
        ({"button": {"pin": 9, "level": 1}}, "esp32", "button: unknown key 'level'"),
        ({"led": {"rgb": [1, 2]}}, "esp32", "led: needs"),
        ({"led": {"rgb": [1, 2, "x"]}}, "esp32", "led.rgb[2]"),
        ({"led": {"rgb": [1, 2, 3], "duty": 0}}, "esp32", "led.duty"),
        ({"accel": {"part": "lis3dh"}}, "esp32", 'accel: needs the "i2c" bus'),
        ({"battery": {"adc": 5, "curve": [[3300, 0], [3200, 50]]}}, "esp32", "battery.curve[1]: mV must increase"),
        ({"sensors": {"smoke": {"adc": 6}}}, "esp32", "sensors.smoke.scale"),
        ({"wdt_ms": 100}, "esp32", "wdt_ms"),
        ({"sleep": "deep"}, "esp32", "sleep:"),
        ({"frobnicate": 1}, "esp32", "board file: unknown key 'frobnicate'"),
        ({"button": {"pin": 9}}, "zephyr", 'button.pin: must be ["gpioN", 0-31]'),
        ({"button": {"pin": 30}}, "rp2", "button.pin: must be an integer from 0 to 29"),
    )
    for over, p, msg in cases:
        doc = dict(POST)
        doc["port"] = p
        doc.update(over)
        e = str(raises(boardspec.BoardFileError, boardspec.check, doc, "boards/t-post.json", p, "t-post"))
        assert e.startswith("boards/t-post.json: ") and msg in e, (over, e)
        assert "\n" not in e
    doc = dict(POST)
    del doc["button"]
    e = str(raises(boardspec.BoardFileError, boardspec.check, doc, "b.json", "esp32", "t-post"))
    assert "button: is required" in e


def test_missing_or_broken_board_files_and_unknown_platforms_stop_with_one_line():
    root = scratch_dir("boards-t")
    rmtree(root)
    root = scratch_dir("boards-t")
    e = str(raises(boardspec.BoardFileError, boardspec.load, "nope", "esp32", root))
    assert e == "%s/nope.json: no such board file (config.json names board 'nope')" % root
    with open(root + "/bad.json", "w") as f:
        f.write('{"board": ')
    assert "bad.json: not valid JSON" in str(raises(boardspec.BoardFileError, boardspec.load, "bad", "esp32", root))
    assert "must be a board file name" in str(raises(boardspec.BoardFileError, boardspec.load, "../x", "esp32", root))
    e = str(raises(HalError, port, "pyboard"))
    assert e.startswith("hal: no hardware layer for platform 'pyboard'") and "\n" not in e
    assert port("esp32") == "esp32" and port("rp2") == "rp2" and port("zephyr") == "zephyr"
    cfg = root + "/config.json"
    with open(cfg, "w") as f:
        f.write(json.dumps({"board": "nope"}))
    e = str(raises(HalError, hal_spec, cfg, root))
    assert e == "hal: %s/nope.json: no such board file (config.json names board 'nope')" % root
    # the device reads only the checked form of its own port's board file
    for name, doc, msg in (
        ("bad", None, "bad.json: not valid JSON"),
        ("t-post", dict(POST, board="other"), "board: must be the file's own name 't-post'"),
        ("t-post", POST, "t-post.json: port: this pin map is for esp32, the firmware runs on unix"),
        ("t-post", dict(POST, port="unix"), "not a checked board file (spec 1): flash it with guardian-provision"),
    ):
        if doc is not None:
            with open(root + "/" + name + ".json", "w") as f:
                f.write(json.dumps(doc))
        with open(cfg, "w") as f:
            f.write(json.dumps({"board": name}))
        e = str(raises(HalError, hal_spec, cfg, root))
        assert e.startswith("hal: ") and msg in e and "\n" not in e, e
    with open(root + "/t-post.json", "w") as f:
        f.write(json.dumps(boardspec.check(dict(POST, port="unix"), "t-post.json", "unix", "t-post")))
    assert hal_spec(cfg, root) == ("unix", {"board": "t-post", "port": "unix", "spec": 1}, None)


def test_the_checked_form_is_json_and_builds_the_same_board():
    # what guardian-provision writes (JSON of the checked form) gives the board the checker's
    # own output gives, on every port (zephyr's pins come back from JSON lists as tuples)
    for p, over in (("esp32", {}), ("rp2", {}), ("zephyr", _ZEPHYR_PINS)):
        doc = dict(POST, port=p, **over)
        form = boardspec.check(doc, "b.json", p, "t-post")
        again = json.loads(json.dumps(form))
        assert again["spec"] == boardspec.FORMAT
        assert boardspec.check(again, "b.json", p, "t-post") == form  # the checked form checks again
        cls = {"esp32": esp32.Board, "rp2": rp2.Board, "zephyr": zephyr.Board}[p]
        m1, m2 = fakes.Machine(esp32=p == "esp32"), fakes.Machine(esp32=p == "esp32")
        b1 = cls(form, m1, fakes.Network(), fakes.Bluetooth(), fakes.NeoPixelModule())
        b2 = cls(again, m2, fakes.Network(), fakes.Bluetooth(), fakes.NeoPixelModule())
        for b in (b1, b2):  # the parts made on first use
            b.uart()
            b.battery()
            b.sensor("smoke").read()
            b.sensor("door").read()
        assert sorted(m1.pins) == sorted(m2.pins) and len(m1.pins) == 11, (p, sorted(m1.pins))
        b1.close()
        b2.close()


# the zephyr port's wait


class _Polls:
    # a poll set holding the board's wake flag; `during(n)` runs at the n-th look (0-based)
    def __init__(self, board, during=None):
        self.board = board
        self.during = during
        self.looks = 0

    def poll(self, ms):
        assert ms == 0  # the board never blocks in poll() on this port
        if self.during is not None:
            self.during(self.looks)
        self.looks += 1
        return [(self.board.wake, 1)] if self.board.wake.flag else []


def _zephyr_board():
    s = _spec(_ZEPHYR_PINS, "zephyr", drop=("led", "uart", "battery", "sensors"))
    m = fakes.Machine()
    return zephyr.Board(s, m), m


def test_zephyr_waits_in_naps_not_in_a_millisecond_poll_loop():
    from clock import ticks_ms

    b, _ = _zephyr_board()
    p = _Polls(b)
    t0 = ticks_ms()
    b.wait(p, 450)
    assert ticks_diff(ticks_ms(), t0) >= 450
    assert b.naps == 3 and p.looks == 4  # 200 + 200 + 50 ms, a look before each and one after


def test_zephyr_a_press_during_a_nap_ends_the_wait_at_the_next_look():
    from clock import ticks_ms

    b, m = _zephyr_board()
    got = _edges(b.button)

    def press(look):
        if look == 1:  # after the first nap the wearer presses (pin 11, active low); the
            m.pins[("gpio0", 11)].drive(0)  # scheduled handler may run only after this look

    p = _Polls(b, press)
    t0 = ticks_ms()
    b.wait(p, 2000)
    took = ticks_diff(ticks_ms(), t0)
    assert 190 <= took < 700 and b.naps in (1, 2), (took, b.naps)  # within a nap, not 2 s
    b.service()
    assert [lv for lv, _ in got] == [1]


# safe mode: the button held at power-up starts nothing but the REPL


def _safe_mode(held_for_ms, hold_ms=200):
    # hal/start.py's power-up check on an esp32 board of fakes: the button pressed at power-up
    # (held_for_ms None: never pressed) and let go after held_for_ms
    import hal
    from clock import ticks_ms
    from hal import start

    seen = {}

    def build(found, config, boards):
        b, m, _, _, _ = _board()
        if held_for_ms is not None:
            m.pins[9].drive(0)  # active low: pressed
        t0 = ticks_ms()
        service, close = b.service, b.close

        def serviced():
            if held_for_ms is not None and ticks_diff(ticks_ms(), t0) >= held_for_ms:
                m.pins[9].drive(1)
            return service()

        def closed():
            seen["closed"] = True
            return close()

        b.service, b.close = serviced, closed
        return b

    saved = (start.port, start.spec, hal.build)
    start.port = lambda platform=None: "esp32"
    start.spec = lambda config, boards: ("esp32", None, None)
    hal.build = build
    try:
        t0 = ticks_ms()
        got = start.safe_mode(hold_ms, "config.json", "boards")
        return got, ticks_diff(ticks_ms(), t0), seen.get("closed", False)
    finally:
        start.port, start.spec, hal.build = saved


def test_safe_mode_only_for_a_button_held_through_the_whole_hold():
    got, ms, closed = _safe_mode(None)
    assert got is False and ms < 100 and closed, (got, ms)  # not pressed: the app starts at once
    got, ms, closed = _safe_mode(1000)
    assert got is True and 200 <= ms < 400 and closed, (got, ms)  # held through: the REPL only
    got, ms, closed = _safe_mode(80)
    assert got is False and ms < 200 and closed, (got, ms)  # let go before the hold ends: the app


def test_the_virtual_board_has_no_safe_mode_check():
    from hal import start

    assert port() == "unix" and start.safe_mode(10, "nonexistent.json", "boards") is False
