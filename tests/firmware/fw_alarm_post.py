# The alarm post app without a network (its broker refuses connections): config checks, a
# press saved before anything else, receipts (forged, stray, stored, delivered), LED, a power
# cycle, a full outbox. Runs on MicroPython and CPython with the unix hal and no supervisor.
# (tests/test_alarm_post_e2e.py runs the same app against real brokers and the agent.)
import json

import cbor
import cose
import frame
from apps.alarm_post import app
from clock import ticks_diff, ticks_ms
from fwsupport import raises, rmtree, scratch_dir
from hal.unix import Board

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def _config(name, **over):
    cfg = {"kind": "alarm_post", "id": "AP-0001", "key": KEY.hex(), "broker": "127.0.0.1", "port": 1}
    cfg.update(over)
    path = scratch_dir("cfg") + "/" + name
    with open(path, "w") as f:
        f.write(json.dumps(cfg))
    return path


def _post(name, **over):
    root = scratch_dir(name)
    rmtree(root)
    cfg = app.load_config(_config(name + ".json", data_dir=root, debounce_ms=1, **over))
    return app.AlarmPost(cfg, Board())


def _steps(post, until, ms=2000):
    start = ticks_ms()
    while not until():
        if ticks_diff(ticks_ms(), start) > ms:
            raise AssertionError("condition not reached within %d ms" % ms)
        post.step()


def _click(post):
    post.board.button._set(1)
    _steps(post, lambda: post.button.pressed)
    post.board.button._set(0)
    _steps(post, lambda: not post.button.pressed and not post.button.waiting())


def _led(post):
    b = post.board
    return (b.led_r.value(), b.led_g.value(), b.led_b.value())


def _receipt(key, boot, seq, kind):
    payload = cbor.dumps({1: boot, 2: seq, 3: kind})
    return cose.mac0_encode(key, b"GW-1", payload, frame.AAD_RECEIPT)


def _payload(post, boot, seq):
    _, payload = cose.mac0_verify(KEY, post.outbox.frame(boot, seq), frame.AAD_FRAME)
    return cbor.loads(payload)


def test_config_errors_name_the_field_and_never_show_the_key():
    e = raises(app.ConfigError, app.load_config, scratch_dir("cfg") + "/missing.json")
    assert "cannot read" in str(e)
    path = scratch_dir("cfg") + "/bad.json"
    with open(path, "w") as f:
        f.write('{"id": ')
    assert "not valid JSON" in str(raises(app.ConfigError, app.load_config, path))
    cases = (
        ({"id": "AP 1"}, "id must be"),
        ({"id": 5}, "id must be"),
        ({"key": "00" * 8}, "key must be"),
        ({"key": "zz" * 32}, "key must be"),
        ({"broker": ""}, "broker must be"),
        ({"port": "1883"}, "port must be an integer"),
        ({"port": 70000}, "port must be an integer"),
        ({"heartbeat_s": True}, "heartbeat_s must be"),
        ({"outbox": 3}, "outbox must be"),
        ({"long_press_ms": 100, "debounce_ms": 200}, "long_press_ms must be larger"),
    )
    for over, want in cases:
        msg = str(raises(app.ConfigError, app.load_config, _config("case.json", **over)))
        assert want in msg, (over, msg)
        assert KEY.hex() not in msg
    cfg = app.load_config(_config("ok.json"))
    assert cfg["key"] == KEY and cfg["heartbeat_s"] == 60 and cfg["outbox"] == 32


def test_press_is_saved_before_it_is_sent_and_led_shows_sending():
    post = _post("press")
    assert post.client is None  # the broker refuses: nothing can have been sent
    assert post.outbox.items() == [(1, 1, 1, 0)]  # ONLINE, P1, waiting
    _click(post)
    assert post.outbox.items() == [(0, 1, 2, 0), (1, 1, 1, 0)]
    body = _payload(post, 1, 2)
    assert body[frame.K_TYPE] == frame.T_ALARM and body[frame.K_FLAGS] == frame.FLAG_RECEIPTS
    assert body[frame.K_DATA] == {}
    post.step()
    assert _led(post) == (1, 1, 0)  # amber


def test_receipts_forged_stray_stored_delivered():
    post = _post("receipts")
    _click(post)
    down = post.link.down
    post.link._message(down, _receipt(OTHER, 1, 2, frame.R_DELIVERED))  # wrong key
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_DELIVERED)[:-1])  # truncated
    post.link._message(down, b"\xa0")  # not a COSE message
    assert post.bad_receipts == 3 and post.outbox.state(1, 2) == 0
    post.link._message(down, _receipt(KEY, 1, 9, frame.R_DELIVERED))  # not an event it holds
    post.link._message(down, _receipt(KEY, 1, 2, 7))  # unknown kind
    assert post.stray_receipts == 2 and post.outbox.state(1, 2) == 0
    post.link._message(b"ge/dev/AP-0002/down", _receipt(KEY, 1, 2, frame.R_DELIVERED))  # other topic
    assert post.outbox.state(1, 2) == 0
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_STORED))
    post.step()
    assert post.outbox.state(1, 2) == 1 and _led(post) == (0, 0, 1)  # blue
    post.link._message(down, _receipt(KEY, 1, 1, frame.R_DELIVERED))  # ONLINE delivered: LED unchanged
    post.step()
    assert _led(post) == (0, 0, 1)
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_DELIVERED))
    post.step()
    assert post.outbox.items() == [] and _led(post) == (0, 1, 0)  # green
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_STORED))  # late receipt 1: nothing moves back
    assert post.outbox.items() == [] and post.stray_receipts == 3


def test_power_cycle_keeps_the_outbox_and_starts_a_new_boot():
    post = _post("cycle")
    _click(post)
    again = app.AlarmPost(post.cfg, Board())  # same flash directory
    assert again.boot == 2
    assert again.outbox.items() == [(0, 1, 2, 0), (1, 1, 1, 0), (1, 2, 1, 0)]
    # boot 2's ONLINE counts what was waiting when it started
    _, payload = cose.mac0_verify(KEY, again.outbox.frame(2, 1), frame.AAD_FRAME)
    assert cbor.loads(payload)[frame.K_DATA] == {1: 2}


def test_full_outbox_folds_presses_and_keeps_the_reserve_for_alarms():
    post = _post("full", outbox=6)
    post.board.tamper._set(1)  # the enclosure opens: P1, uses a normal entry
    _steps(post, lambda: len(post.outbox) == 2)
    assert [(p, s) for p, _, s, _ in post.outbox.items()] == [(1, 1), (1, 2)]
    for _ in range(4):
        _click(post)
    assert len(post.outbox) == 6 and post.outbox.full()
    _click(post)
    _click(post)
    assert post.folded == 2 and len(post.outbox) == 6
    post.board.tamper._set(0)  # closes: only the reserve is left, dropped
    _steps(post, lambda: post.dropped_tamper >= 1)
    post.link._message(post.link.down, _receipt(KEY, 1, 3, frame.R_DELIVERED))
    assert len(post.outbox) == 5
    post._linked(ticks_ms())
    assert post.folded == 0 and post.outbox.full()
    folded = [s for p, _, s, _ in post.outbox.items() if p == 0][-1]
    body = _payload(post, 1, folded)
    assert body[frame.K_TYPE] == frame.T_ALARM and body[frame.K_DATA] == {1: 2}


def test_long_press_sends_alarm_then_alarm_held():
    post = _post("long", long_press_ms=150)
    post.board.button._set(1)
    _steps(post, lambda: len(post.outbox) == 3)
    post.board.button._set(0)
    _steps(post, lambda: not post.button.waiting())
    types = [_payload(post, 1, s)[frame.K_TYPE] for p, _, s, _ in post.outbox.items() if p == 0]
    assert types == [frame.T_ALARM, frame.T_ALARM_HELD]
    assert _payload(post, 1, 3)[frame.K_DATA] == {1: 150}


def test_dropped_receipt_removes_state_events_never_alarms():
    post = _post("dropped")
    _click(post)
    post.board.tamper._set(1)
    _steps(post, lambda: len(post.outbox) == 3)
    down = post.link.down
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_DROPPED))  # the alarm: not believed
    post.link._message(down, _receipt(OTHER, 1, 3, frame.R_DROPPED))  # forged
    assert len(post.outbox) == 3 and post.dropped_events == 0
    post.link._message(down, _receipt(KEY, 1, 3, frame.R_DROPPED))  # the tamper event
    assert [(p, s) for p, _, s, _ in post.outbox.items()] == [(0, 2), (1, 1)]
    assert post.dropped_events == 1


def _buzz(post, ms=2000):
    # steps the post until its buzzer pattern is over; the levels it went through
    levels = [post.board.buzzer.value()]
    start = ticks_ms()
    while post.beep_until is not None:
        if ticks_diff(ticks_ms(), start) > ms:
            raise AssertionError("buzzer still sounding after %d ms" % ms)
        post.step()
        if post.board.buzzer.value() != levels[-1]:
            levels.append(post.board.buzzer.value())
    return levels


def test_receipt_3_for_a_held_alarm_shows_white_and_beeps_twice():
    post = _post("ack-held", ack_s=5)
    _click(post)
    assert _buzz(post) == [1, 0]  # the press: one beep
    down = post.link.down
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_STORED))
    post.step()
    assert _led(post) == (0, 0, 1)  # blue
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_ACKNOWLEDGED))
    start = ticks_ms()
    assert _buzz(post) == [1, 0, 1, 0]  # two beeps
    assert ticks_diff(ticks_ms(), start) >= 3 * 120  # on, pause, on
    assert _led(post) == (1, 1, 1)  # white: help is coming
    assert post.outbox.state(1, 2) == 1  # the alarm still waits for receipt 2
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_ACKNOWLEDGED))  # again: no new beeps
    assert post.beep_until is None and post.stray_receipts == 0
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_DELIVERED))
    post.step()
    assert post.outbox.items() == [(1, 1, 1, 0)] and _led(post) == (1, 1, 1)  # still white
    post.acked_at -= 5001  # ack_s has passed
    post.step()
    assert _led(post) == (0, 1, 0)  # green: delivered less than green_s ago


def test_receipt_3_for_a_recently_delivered_alarm_and_amber_over_white():
    post = _post("ack-recent", ack_s=5)
    _click(post)
    down = post.link.down
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_DELIVERED))
    assert post.outbox.state(1, 2) is None and post.recent == [(1, 2)]
    post.link._message(down, _receipt(KEY, 1, 2, frame.R_ACKNOWLEDGED))
    assert _buzz(post) == [1, 0, 1, 0]
    assert _led(post) == (1, 1, 1)
    _click(post)  # a new alarm not yet at the gateway: amber shows over white
    post.step()
    assert _led(post) == (1, 1, 0)
    post.link._message(down, _receipt(KEY, 1, 3, frame.R_STORED))
    post.step()
    assert _led(post) == (1, 1, 1)  # stored: white again while ack_s lasts


def test_receipt_3_forged_or_for_an_unknown_event_is_ignored_and_counted():
    post = _post("ack-bad")
    _click(post)
    _buzz(post)
    down = post.link.down
    post.link._message(down, _receipt(OTHER, 1, 2, frame.R_ACKNOWLEDGED))  # wrong key
    assert post.bad_receipts == 1
    post.link._message(down, _receipt(KEY, 1, 9, frame.R_ACKNOWLEDGED))  # no such event
    post.link._message(down, _receipt(KEY, 1, 1, frame.R_ACKNOWLEDGED))  # ONLINE: not an alarm
    post.link._message(down, _receipt(KEY, 2, 2, frame.R_ACKNOWLEDGED))  # another boot
    assert post.stray_receipts == 3
    post.step()
    assert post.acked_at is None and post.beep_until is None and _led(post) == (1, 1, 0)


def test_recent_delivered_alarms_are_bounded():
    post = _post("ack-bound")
    down = post.link.down
    for seq in range(2, 12):
        _click(post)
        post.link._message(down, _receipt(KEY, 1, seq, frame.R_DELIVERED))
    assert post.recent == [(1, s) for s in range(4, 12)]
    post.link._message(down, _receipt(KEY, 1, 3, frame.R_ACKNOWLEDGED))  # forgotten: ignored
    assert post.stray_receipts == 1 and post.acked_at is None
    post.link._message(down, _receipt(KEY, 1, 4, frame.R_ACKNOWLEDGED))
    assert post.acked == (1, 4)


def test_ack_s_is_checked():
    msg = str(raises(app.ConfigError, app.load_config, _config("ack.json", ack_s=-1)))
    assert "ack_s must be an integer from 0 to 86400" in msg
    assert app.load_config(_config("ack-ok.json"))["ack_s"] == 120
