# The venue sensor app without a network (its broker refuses connections), held to what the
# top of apps/sensor/app.py promises: config checks, confirmation (steam raises nothing, smoke
# raises one SMOKE), every event with its data, faults, the LED, the temporal-three sounder,
# a full outbox, channels without a reading, a power cycle and the heartbeat's readings.
# Runs on MicroPython and CPython with the unix hal and no supervisor: readings are set on
# the board (board._vals) as the supervisor's "val" lines set them; receipts are handed in as
# the MQTT client hands them over.
import json

import cbor
import cose
import frame
from apps.sensor import app
from clock import ticks_add, ticks_diff, ticks_ms
from fwsupport import raises, rmtree, scratch_dir
from hal.unix import Board

KEY = bytes(range(32))

# wire values (docs/protocol.md "Event types"), written out so the format is pinned
_SMOKE = 7
_GAS = 8
_ONLINE = 65
_DOOR_HELD_OPEN = 70
_EXTINGUISHER = 71
_SENSOR_CLEAR = 72
_SENSOR_FAULT = 73
_FLAG_RECEIPTS = 1

_OFF = (0, 0, 0)
_RED = (1, 0, 0)
_AMBER = (1, 1, 0)
_GREEN = (0, 1, 0)
_WHITE = (1, 1, 1)
_MAGENTA = (1, 0, 1)


def _config(name, **over):
    cfg = {"kind": "sensor", "id": "VS-0001", "key": KEY.hex(), "broker": "127.0.0.1", "port": 1, "sample_ms": 20}
    cfg.update(over)
    path = scratch_dir("cfg") + "/" + name
    with open(path, "w") as f:
        f.write(json.dumps(cfg))
    return path


def _ch(name, typ, **tune):
    # a channel with fast timings so the tests take tens of ms per event
    c = {"name": name, "type": typ, "confirm_ms": 60, "clear_ms": 60, "fault_ms": 60}
    c.update(tune)
    return c


def _sensor(name, channels, **over):
    root = scratch_dir(name)
    rmtree(root)
    cfg = app.load_config(_config(name + ".json", channels=channels, data_dir=root, **over))
    return app.VenueSensor(cfg, Board())


def _steps(s, until, ms=2000):
    start = ticks_ms()
    while not until():
        if ticks_diff(ticks_ms(), start) > ms:
            raise AssertionError("condition not reached within %d ms" % ms)
        s.step()


def _run(s, ms):
    # steps the app for ms: for what must NOT happen within that time
    start = ticks_ms()
    while ticks_diff(ticks_ms(), start) < ms:
        s.step()


def _samples(s, n):
    # steps until the app has taken n more samples
    for _ in range(n):
        due = s.next_sample
        _steps(s, lambda due=due: s.next_sample != due)


def _set(s, name, v):
    s.board._vals[name] = v


def _led(s):
    b = s.board
    return (b.led_r.value(), b.led_g.value(), b.led_b.value())


def _receipt(boot, seq, kind):
    payload = cbor.dumps({1: boot, 2: seq, 3: kind})
    return cose.mac0_encode(KEY, b"GW-1", payload, frame.AAD_RECEIPT)


def _give(s, boot, seq, kind):
    s.link._message(s.link.down, _receipt(boot, seq, kind))


def _payload(s, boot, seq):
    _, payload = cose.mac0_verify(KEY, s.outbox.frame(boot, seq), frame.AAD_FRAME)
    return cbor.loads(payload)


def _entries(s, held=False):
    # the outbox in (boot, seq) order without ONLINE: [(seq, prio, type, data)]; data without
    # key 4 (how long the condition held: it depends on the loop's pace, see the held tests)
    out = []
    for p, b, seq, _ in sorted(s.outbox.items(), key=lambda e: (e[1], e[2])):
        body = _payload(s, b, seq)
        if body[frame.K_TYPE] != _ONLINE:
            data = body[frame.K_DATA]
            if not held:
                data.pop(4, None)
            out.append((seq, p, body[frame.K_TYPE], data))
    return out


def _data(s, seq):
    data = _payload(s, 1, seq)[frame.K_DATA]
    data.pop(4, None)
    return data


def _events(s):
    return [(p, t, d) for _, p, t, d in _entries(s)]


def _count(s):
    # outbox entries other than ONLINE
    return len(_entries(s))


def _seq_of(s, typ, ch):
    for seq, _, t, d in _entries(s):
        if t == typ and d[1] == ch:
            return seq
    raise AssertionError("no event of type %d for channel %d in the outbox" % (typ, ch))


def _settle(s):
    # steps until every channel with a reading has been sampled once
    _steps(s, lambda: all(c.det.value is not None for c in s.channels if c.name in s.board._vals))


def test_config_errors_name_the_channel_and_never_show_the_key():
    smoke = {"name": "kitchen", "type": "smoke"}
    cases = (
        ({}, "channels must be a list of 1 to 8 channels"),
        ({"channels": []}, "channels must be a list of 1 to 8 channels"),
        ({"channels": [{"name": "s%d" % i, "type": "smoke"} for i in range(9)]}, "channels must be a list of 1 to 8"),
        ({"channels": smoke}, "channels must be a list"),
        ({"channels": ["kitchen"]}, "channels[0] must be an object"),
        ({"channels": [{"type": "smoke"}]}, "channels[0]: name must be"),
        ({"channels": [smoke, {"name": "hall way", "type": "gas"}]}, "channels[1]: name must be"),
        ({"channels": [{"name": 5, "type": "gas"}]}, "channels[0]: name must be"),
        ({"channels": [{"name": "", "type": "gas"}]}, "channels[0]: name must be"),
        ({"channels": [{"name": "a" * 17, "type": "gas"}]}, "channels[0]: name must be"),
        ({"channels": [smoke, {"name": "kitchen", "type": "gas"}]}, "channels[1]: name 'kitchen' used twice"),
        ({"channels": [{"name": "k", "type": "heat"}]}, "channels[0]: type must be one of door, extinguisher, gas"),
        ({"channels": [{"name": "k"}]}, "channels[0]: type must be one of"),
        ({"channels": [{"name": "k", "type": ["smoke"]}]}, "channels[0]: type must be one of"),
        ({"channels": [{"name": "k", "type": "smoke", "confirm": 10}]}, "channels[0]: unknown setting 'confirm'"),
        ({"channels": [{"name": "k", "type": "smoke", "key": KEY.hex()}]}, "channels[0]: unknown setting"),
        ({"channels": [smoke, {"name": "d", "type": "door", "confirm_ms": "60"}]}, "channels[1]: confirm_ms must be"),
        ({"channels": [{"name": "k", "type": "smoke", "on": 150.5}]}, "channels[0]: on must be an integer"),
        ({"channels": [{"name": "k", "type": "smoke", "off": True}]}, "channels[0]: off must be an integer"),
        ({"channels": [{"name": "k", "type": "smoke", "clear_ms": 1 << 40}]}, "channels[0]: clear_ms must be"),
        # tuning the detector rejects: the message names the channel by place and name
        ({"channels": [smoke, {"name": "fryer", "type": "smoke", "on": 100, "off": 200}]}, "channels[1] (fryer)"),
        ({"channels": [{"name": "ext", "type": "extinguisher", "off": 800}]}, "channels[0] (ext)"),
        ({"channels": [{"name": "k", "type": "smoke", "on": 5000}]}, "channels[0] (k)"),
        ({"channels": [{"name": "k", "type": "gas", "confirm_ms": -1}]}, "channels[0] (k)"),
        ({"channels": [{"name": "k", "type": "gas", "fault_ms": -5}]}, "channels[0] (k)"),
        ({"channels": [smoke], "sample_ms": 19}, "sample_ms must be an integer from 20 to 60000"),
        ({"channels": [smoke], "sample_ms": 60001}, "sample_ms must be an integer from 20 to 60000"),
        ({"channels": [smoke], "sample_ms": "500"}, "sample_ms must be an integer from 20 to 60000"),
    )
    for over, want in cases:
        msg = str(raises(app.ConfigError, app.load_config, _config("case.json", **over)))
        assert want in msg, (over, msg)
        assert KEY.hex() not in msg, msg
    # what the detector said comes along
    ch = [{"name": "fryer", "type": "smoke", "on": 100, "off": 200}]
    assert "off must be below on" in str(raises(app.ConfigError, app.load_config, _config("c.json", channels=ch)))
    ch = [{"name": "ext", "type": "extinguisher", "off": 800}]
    assert "off must be above on" in str(raises(app.ConfigError, app.load_config, _config("c.json", channels=ch)))


def test_good_config_gives_channels():
    channels = [
        {"name": "kitchen", "type": "smoke"},
        {"name": "cellar", "type": "gas", "on": 30, "off": 15},
        {"name": "exit-1", "type": "door", "confirm_ms": 5000},
        {"name": "ext.A", "type": "extinguisher", "clear_ms": 0, "fault_ms": 0},
    ]
    cfg = app.load_config(_config("good.json", channels=channels))
    assert cfg["sample_ms"] == 20 and cfg["key"] == KEY
    chans = cfg["channels"]
    assert [type(c) for c in chans] == [app.Channel] * 4
    assert [(c.index, c.name, c.type) for c in chans] == [
        (0, "kitchen", "smoke"),
        (1, "cellar", "gas"),
        (2, "exit-1", "door"),
        (3, "ext.A", "extinguisher"),
    ]
    assert [(c.event, c.prio) for c in chans] == [(_SMOKE, 0), (_GAS, 0), (_DOOR_HELD_OPEN, 1), (_EXTINGUISHER, 1)]
    d = chans[0].det  # untuned: the type's defaults
    assert (d.on, d.off, d.confirm_ms, d.clear_ms, d.fault_ms, d.above) == (150, 80, 4000, 30000, 10000, True)
    assert (chans[1].det.on, chans[1].det.off) == (30, 15)
    assert chans[2].det.confirm_ms == 5000
    d = chans[3].det
    assert (d.above, d.clear_ms, d.fault_ms) == (False, 0, 0)
    assert app.load_config(_config("default.json", channels=channels[:1], sample_ms=500))["sample_ms"] == 500


def test_steam_shorter_than_confirm_writes_nothing():
    s = _sensor("steam", [_ch("kitchen", "smoke", confirm_ms=100)])
    det = s.channels[0].det
    _set(s, "kitchen", 20)
    _settle(s)
    for _ in range(3):
        _set(s, "kitchen", 600)  # a burst of two samples, about 20 ms
        _steps(s, det.waiting)
        _samples(s, 1)
        _set(s, "kitchen", 20)
        _steps(s, lambda: not det.waiting())
    _run(s, 200)  # twice confirm_ms of clean air
    assert s.outbox.items() == [(1, 1, 1, 0)]  # only ONLINE
    assert not det.active and s.board.buzzer.value() == 0 and _led(s) == _OFF


def test_sustained_smoke_writes_one_smoke_alarm_with_its_peak():
    s = _sensor("smoke", [_ch("cellar", "gas"), _ch("kitchen", "smoke", confirm_ms=100)])
    det = s.channels[1].det
    _set(s, "cellar", 0)
    _set(s, "kitchen", 20)
    _settle(s)
    _set(s, "kitchen", 300)
    _steps(s, det.waiting)
    _set(s, "kitchen", 700)
    _steps(s, lambda: det.value == 700)
    assert not det.active  # the peak came inside the confirmation
    _set(s, "kitchen", 500)
    _steps(s, lambda: len(s.outbox) == 2)
    _run(s, 200)  # the smoke stays: still one alarm
    assert _events(s) == [(0, _SMOKE, {1: 1, 2: 700, 3: "kitchen"})]
    body = _payload(s, 1, 2)
    assert body[frame.K_FLAGS] == _FLAG_RECEIPTS and body[frame.K_BOOT] == 1 and body[frame.K_SEQ] == 2


def test_each_alarm_says_how_long_its_condition_held():
    # key 4: from the first sample of the run to the confirming one; at least confirm_ms,
    # at most a sample more (the gateway dates a door's opening with it)
    s = _sensor("held", [_ch("exit", "door", confirm_ms=1000), _ch("kitchen", "smoke", confirm_ms=0)])
    _set(s, "exit", 0)
    _set(s, "kitchen", 20)
    _settle(s)
    _set(s, "exit", 1)
    _steps(s, lambda: _count(s) == 1, ms=3000)
    ((_, _, typ, data),) = _entries(s, held=True)
    assert typ == _DOOR_HELD_OPEN and 1000 <= data[4] <= 1500, data  # a sample later under load
    _set(s, "kitchen", 600)
    _steps(s, lambda: _count(s) == 2)
    assert _entries(s, held=True)[1][3][4] == 0  # confirmed on its first sample


def test_gas_is_a_p0_alarm():
    s = _sensor("gas", [_ch("cellar", "gas")])
    _set(s, "cellar", 3)
    _settle(s)
    _set(s, "cellar", 25)
    _steps(s, lambda: len(s.outbox) == 2)
    assert _events(s) == [(0, _GAS, {1: 0, 2: 25, 3: "cellar"})]
    assert _payload(s, 1, 2)[frame.K_FLAGS] == _FLAG_RECEIPTS
    assert s.board.buzzer.value() == 1  # a hazard: the sounder starts at once


def test_door_held_open_then_closed():
    s = _sensor("door", [_ch("kitchen", "smoke"), _ch("exit", "door", confirm_ms=100)])
    _set(s, "kitchen", 20)
    _set(s, "exit", 0)
    _settle(s)
    _set(s, "exit", 1)
    _steps(s, lambda: _count(s) == 1)
    assert _events(s) == [(1, _DOOR_HELD_OPEN, {1: 1, 2: 1, 3: "exit"})]
    s.step()
    assert _led(s) == _OFF and s.board.buzzer.value() == 0  # a state, not a hazard
    _set(s, "exit", 0)
    _steps(s, lambda: _count(s) == 2)
    assert _events(s)[1] == (1, _SENSOR_CLEAR, {1: 1, 2: _DOOR_HELD_OPEN, 3: "exit"})


def test_extinguisher_low_or_removed_and_its_hysteresis():
    s = _sensor("ext", [_ch("ext-a", "extinguisher"), _ch("ext-b", "extinguisher")])
    _set(s, "ext-a", 1200)
    _set(s, "ext-b", 1200)
    _settle(s)
    _set(s, "ext-a", 500)  # pressure low
    _steps(s, lambda: _count(s) == 1)
    _set(s, "ext-b", 0)  # taken out of its bracket
    _steps(s, lambda: _count(s) == 2)
    assert _events(s) == [
        (1, _EXTINGUISHER, {1: 0, 2: 500, 3: "ext-a"}),
        (1, _EXTINGUISHER, {1: 1, 2: 0, 3: "ext-b"}),
    ]
    _set(s, "ext-a", 950)  # refilled into the hysteresis band (on 900, off 1000): not clear
    _run(s, 150)
    assert _count(s) == 2 and s.channels[0].det.active
    _set(s, "ext-a", 1100)
    _steps(s, lambda: _count(s) == 3)
    assert _events(s)[2] == (1, _SENSOR_CLEAR, {1: 0, 2: _EXTINGUISHER, 3: "ext-a"})
    assert _led(s) == _OFF and s.board.buzzer.value() == 0


def test_out_of_range_readings_raise_a_fault_and_its_end():
    s = _sensor("fault", [_ch("lab", "smoke"), _ch("kitchen", "smoke", confirm_ms=40)])
    _set(s, "lab", 20)
    _set(s, "kitchen", 20)
    _settle(s)
    _set(s, "lab", 5000)  # above the chamber's range (0..2000)
    _steps(s, lambda: _count(s) == 1)
    assert _events(s) == [(1, _SENSOR_FAULT, {1: 0, 2: 5000, 3: "lab"})]
    s.step()
    assert _led(s) == _MAGENTA and s.board.buzzer.value() == 0
    _set(s, "kitchen", 400)  # an alarm shows over the fault
    _steps(s, lambda: _count(s) == 2)
    s.step()
    assert _led(s) == _AMBER
    _give(s, 1, _seq_of(s, _SMOKE, 1), frame.R_STORED)
    s.step()
    assert _led(s) == _RED
    _set(s, "lab", 30)
    _steps(s, lambda: _count(s) == 3)
    assert _events(s)[2] == (1, _SENSOR_CLEAR, {1: 0, 2: _SENSOR_FAULT, 3: "lab"})
    assert not s.channels[0].det.faulty


def test_fault_alone_shows_magenta_until_restored():
    s = _sensor("fault-led", [_ch("lab", "gas")])
    _set(s, "lab", -3)  # below the range: a broken sensor
    _steps(s, lambda: _count(s) == 1)
    assert _events(s) == [(1, _SENSOR_FAULT, {1: 0, 2: -3, 3: "lab"})]
    s.step()
    assert _led(s) == _MAGENTA
    _set(s, "lab", 2)
    _steps(s, lambda: _count(s) == 2)
    s.step()
    assert _events(s)[1] == (1, _SENSOR_CLEAR, {1: 0, 2: _SENSOR_FAULT, 3: "lab"})
    assert _led(s) == _OFF


def test_led_follows_the_smoke_alarm_through_its_receipts():
    s = _sensor("led", [_ch("kitchen", "smoke")], ack_s=5)
    _set(s, "kitchen", 20)
    _settle(s)
    _set(s, "kitchen", 400)
    _steps(s, lambda: _count(s) == 1)
    seq = _seq_of(s, _SMOKE, 0)
    assert _led(s) == _AMBER  # saved, not yet at the gateway
    s.step()
    assert _led(s) == _AMBER
    _give(s, 1, seq, frame.R_STORED)
    s.step()
    assert _led(s) == _RED  # at the gateway
    _give(s, 1, seq, frame.R_DELIVERED)
    s.step()
    assert s.outbox.state(1, seq) is None and _led(s) == _RED  # at central, smoke still there
    _give(s, 1, seq, frame.R_ACKNOWLEDGED)
    s.step()
    assert _led(s) == _WHITE  # help is coming
    s.acked_at = ticks_add(s.acked_at, -5001)  # ack_s has passed
    s.step()
    assert _led(s) == _RED
    _set(s, "kitchen", 20)
    _steps(s, lambda: _count(s) == 1 and _events(s)[-1][1] == _SENSOR_CLEAR)
    assert _events(s) == [(1, _SENSOR_CLEAR, {1: 0, 2: _SMOKE, 3: "kitchen"})]
    s.step()
    assert _led(s) == _GREEN and s.board.buzzer.value() == 0  # delivered, quiet


def test_led_stays_amber_until_receipt_1_even_after_the_smoke_clears():
    s = _sensor("led-amber", [_ch("kitchen", "smoke")])
    _set(s, "kitchen", 400)
    _steps(s, lambda: _count(s) == 1)
    _set(s, "kitchen", 20)
    _steps(s, lambda: _count(s) == 2)
    s.step()
    assert _led(s) == _AMBER and s.board.buzzer.value() == 0


# temporal-three: (ms after the sounder started, buzzer level), over one 4 s cycle and into
# the next
_T3 = (
    (0, 1),
    (250, 1),
    (499, 1),
    (500, 0),
    (999, 0),
    (1000, 1),
    (1499, 1),
    (1500, 0),
    (2000, 1),
    (2499, 1),
    (2500, 0),
    (3000, 0),
    (3500, 0),
    (3999, 0),
    (4000, 1),
    (4500, 0),
    (5000, 1),
)


def test_sounder_plays_temporal_three_while_smoke_and_stops_when_it_clears():
    s = _sensor("sounder", [_ch("kitchen", "smoke")])
    _set(s, "kitchen", 20)
    _settle(s)
    assert s.sounding_since is None and s.board.buzzer.value() == 0
    _set(s, "kitchen", 400)
    _steps(s, lambda: _count(s) == 1)
    since = s.sounding_since
    assert since is not None and s.board.buzzer.value() == 1
    # in real time: on for the first 500 ms, then off
    _steps(s, lambda: ticks_diff(ticks_ms(), since) >= 300)
    assert s.board.buzzer.value() == 1
    _steps(s, lambda: ticks_diff(ticks_ms(), since) >= 700)
    assert s.board.buzzer.value() == 0
    for ms, level in _T3:
        s._show(ticks_add(since, ms))
        assert s.board.buzzer.value() == level, (ms, level)
    assert s.sounding_since == since  # the pattern runs on from where it started
    _set(s, "kitchen", 20)
    _steps(s, lambda: _count(s) == 2)
    s.step()
    assert s.sounding_since is None and s.board.buzzer.value() == 0
    _run(s, 150)
    assert s.board.buzzer.value() == 0


def test_first_tone_is_whole_at_the_default_sample_rate():
    # the loop sleeps up to sample_ms between samples: the tone started by the sample that
    # confirmed the smoke must last its 500 ms all the same
    s = _sensor("sounder-500", [_ch("kitchen", "smoke", confirm_ms=0)], sample_ms=500)
    _set(s, "kitchen", 400)
    _steps(s, lambda: _count(s) == 1)
    since = s.sounding_since
    assert s.board.buzzer.value() == 1
    _steps(s, lambda: ticks_diff(ticks_ms(), since) >= 300)
    assert s.board.buzzer.value() == 1


def test_receipt_3_during_the_hazard_keeps_the_evacuation_pattern():
    s = _sensor("sounder-ack", [_ch("kitchen", "smoke")])
    _set(s, "kitchen", 400)
    _steps(s, lambda: _count(s) == 1)
    since = s.sounding_since
    seq = _seq_of(s, _SMOKE, 0)
    s._show(ticks_add(since, 600))  # between the first and second tone
    assert s.board.buzzer.value() == 0
    _give(s, 1, seq, frame.R_STORED)
    _give(s, 1, seq, frame.R_ACKNOWLEDGED)
    for ms, level in _T3[4:]:
        s._show(ticks_add(since, ms))
        assert s.board.buzzer.value() == level, (ms, level)
    assert _led(s) == _WHITE
    _set(s, "kitchen", 20)
    _steps(s, lambda: _count(s) == 2)
    levels = []
    start = ticks_ms()
    while ticks_diff(ticks_ms(), start) < 400:
        s.step()
        levels.append(s.board.buzzer.value())
    assert levels == [0] * len(levels)  # quiet once the smoke is gone


def test_full_outbox_holds_hazards_in_ram_and_drops_states():
    channels = [_ch("exit", "door"), _ch("ext", "extinguisher")]
    channels += [_ch("s%d" % i, "smoke", clear_ms=60000) for i in range(5)]
    channels.append(_ch("cellar", "gas", clear_ms=60000))
    s = _sensor("full", channels, outbox=6)  # 2 normal entries, then the reserve of 4
    for name, v in (("exit", 0), ("ext", 1200), ("s0", 20), ("s1", 20), ("s2", 20), ("s3", 20), ("s4", 20)):
        _set(s, name, v)
    _set(s, "cellar", 0)
    _settle(s)
    _set(s, "exit", 1)  # DOOR_HELD_OPEN: the last normal entry
    _steps(s, lambda: len(s.outbox) == 2)
    _set(s, "s0", 400)
    _steps(s, lambda: len(s.outbox) == 3)
    _set(s, "ext", 0)  # only the reserve is left: the state change is dropped and counted
    _steps(s, lambda: s.dropped_states == 1)
    assert len(s.outbox) == 3
    for name in ("s1", "s2", "s3"):
        _set(s, name, 400)
    _steps(s, lambda: len(s.outbox) == 6)
    assert s.outbox.full() and not s.held
    for seq, p, _, _ in _entries(s):
        if p == 0:
            _give(s, 1, seq, frame.R_STORED)
    s.step()
    assert _led(s) == _RED
    _set(s, "s4", 900)
    _steps(s, lambda: len(s.held) == 1)
    s.step()
    assert _led(s) == _AMBER  # a hazard not in the outbox yet
    assert s.sounding_since is not None  # the local warning does not wait for room
    _set(s, "cellar", 40)
    _steps(s, lambda: len(s.held) == 2)
    _set(s, "exit", 0)  # the door closes: SENSOR_CLEAR, dropped too
    _steps(s, lambda: s.dropped_states == 2)
    assert len(s.outbox) == 6
    _give(s, 1, _seq_of(s, _SMOKE, 2), frame.R_DELIVERED)  # s0's alarm at central: one entry free
    assert len(s.outbox) == 5
    s._linked(ticks_ms())
    assert s.outbox.full() and len(s.held) == 1
    held_smoke = _seq_of(s, _SMOKE, 6)
    assert _data(s, held_smoke) == {1: 6, 2: 900, 3: "s4"}
    s.step()
    assert _led(s) == _AMBER
    _give(s, 1, _seq_of(s, _SMOKE, 3), frame.R_DELIVERED)
    s._linked(ticks_ms())
    assert s.outbox.full() and s.held == []
    held_gas = _seq_of(s, _GAS, 7)
    assert held_smoke < held_gas  # in the order they were confirmed
    assert _data(s, held_gas) == {1: 7, 2: 40, 3: "cellar"}
    assert [p for _, p, _, _ in _entries(s)] == [1, 0, 0, 0, 0]
    assert s.dropped_states == 2


def test_a_channel_without_a_reading_is_skipped():
    # an extinguisher reading 0 is one taken out of its bracket: None must not count as 0
    s = _sensor("none", [_ch("ext", "extinguisher"), _ch("kitchen", "smoke")])
    _set(s, "kitchen", 20)
    _settle(s)
    _samples(s, 8)  # several times confirm_ms and fault_ms
    det = s.channels[0].det
    assert det.value is None and not det.active and not det.faulty and not det.waiting()
    assert s.outbox.items() == [(1, 1, 1, 0)]
    assert s._heartbeat_data({}) == {3: {1: 20}}
    _set(s, "ext", 1200)
    _steps(s, lambda: det.value == 1200)
    assert s._heartbeat_data({}) == {3: {0: 1200, 1: 20}}


def test_power_cycle_keeps_an_unsent_smoke_alarm():
    s = _sensor("cycle", [_ch("kitchen", "smoke")])
    _set(s, "kitchen", 400)
    _steps(s, lambda: _count(s) == 1)
    smoke = s.outbox.frame(1, 2)
    cfg = app.load_config(scratch_dir("cfg") + "/cycle.json")  # the same file, read again at boot
    again = app.VenueSensor(cfg, Board())
    assert again.boot == 2
    assert again.outbox.items() == [(0, 1, 2, 0), (1, 1, 1, 0), (1, 2, 1, 0)]
    assert again.outbox.frame(1, 2) == smoke
    assert _payload(again, 1, 2)[frame.K_TYPE] == _SMOKE
    assert _payload(again, 2, 1)[frame.K_DATA] == {1: 2}  # ONLINE counts what was waiting
    again.step()
    assert _led(again) == _AMBER


def test_heartbeat_data_carries_the_latest_readings():
    s = _sensor("heartbeat", [_ch("kitchen", "smoke"), _ch("exit", "door", confirm_ms=60000), _ch("x", "gas")])
    _set(s, "kitchen", 42)
    _set(s, "exit", 1)
    _settle(s)
    _set(s, "kitchen", 57)
    _steps(s, lambda: s.channels[0].det.value == 57)
    data = s._heartbeat_data({1: 12, 2: 1})
    assert data == {1: 12, 2: 1, 3: {0: 57, 1: 1}}
    assert cbor.loads(cbor.dumps(data)) == data
