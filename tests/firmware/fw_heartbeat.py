# The reset cause travels in the first heartbeat a boot sends, and only in it
# (docs/protocol.md, HEARTBEAT key 4; lib/reporter.py): a watchdog reset is how a command
# centre learns that a post hung. On the fake clock of fw_redial.py. Runs on MicroPython and
# CPython.
import json

import cbor
import cose
import frame
from apps.alarm_post import app as post_app
from fw_redial import KEY, _on_fake_clock
from fwsupport import rmtree, scratch_dir
from hal.unix import Board

WATCHDOG = 3  # hal/machineboard.py _RESET_WATCHDOG


class WatchdogResetBoard(Board):
    def reset_cause(self):
        return WATCHDOG


def _heartbeats(rig):
    out = []
    for _, msg in rig.link.sent:
        _, payload = cose.mac0_verify(KEY, msg, frame.AAD_FRAME)
        p = cbor.loads(payload)
        if p[frame.K_TYPE] == frame.T_HEARTBEAT:
            out.append(p[frame.K_DATA])
    return out


def _post_after_a_watchdog_reset(name):
    root = scratch_dir(name)
    rmtree(root)
    path = root + ".json"
    cfg = {"id": "AP-0001", "key": KEY.hex(), "broker": "127.0.0.1", "data_dir": root, "heartbeat_s": 5}
    with open(path, "w") as f:
        f.write(json.dumps(cfg))
    cfg = post_app.load_config(path)
    return lambda: post_app.AlarmPost(cfg, WatchdogResetBoard())


def test_only_the_first_heartbeat_of_a_boot_carries_the_reset_cause():
    def body(rig):
        rig.link.gateway_up = True
        rig.run(16000)
        beats = _heartbeats(rig)
        assert len(beats) >= 3, beats
        assert beats[0].get(4) == WATCHDOG, beats[0]
        assert [b for b in beats[1:] if 4 in b] == [], beats

    _on_fake_clock(post_app, _post_after_a_watchdog_reset("hb-cause"), body)


def test_heartbeats_due_while_the_gateway_is_away_leave_the_cause_for_the_first_sent():
    def body(rig):
        rig.run(12000)  # no gateway: heartbeats fall due and cannot be sent
        assert _heartbeats(rig) == []
        rig.link.gateway_up = True
        rig.run(12000)
        beats = _heartbeats(rig)
        assert beats and beats[0].get(4) == WATCHDOG, beats
        assert [b for b in beats[1:] if 4 in b] == [], beats

    _on_fake_clock(post_app, _post_after_a_watchdog_reset("hb-cause-late"), body)
