# The device's links (lib/link.py) and the alarm post's "transport" setting. The UART link runs
# against a stand-in for the UART (the hardware boundary): bytes in, bytes out, no pty.
# tests/test_serial.py runs the same link on a virtual board against the agent. Runs on
# MicroPython and CPython.
import json

import cbor
import cobsframe
import cose
import frame
import uartlink
from apps.alarm_post import app
from fwsupport import raises, rmtree, scratch_dir
from hal.unix import Board

KEY = bytes(range(32))


class FakeUart:
    # machine.UART's shape as the link uses it: readinto() -> n (0 when nothing), write() -> n
    def __init__(self, incoming=b"", short=False):
        self.incoming = incoming
        self.out = b""
        self.short = short
        self.closed = False

    def readinto(self, buf):
        n = min(len(buf), len(self.incoming))
        buf[:n] = self.incoming[:n]
        self.incoming = self.incoming[n:]
        return n

    def write(self, data):
        if self.short:
            self.out += data[:3]
            return 3
        self.out += data
        return len(data)

    def close(self):
        self.closed = True


class Poller:
    def __init__(self):
        self.registered = []

    def register(self, obj, mask):
        self.registered.append(obj)


def _receipt(boot, seq, kind):
    return cose.mac0_encode(KEY, b"GW-1", cbor.dumps({1: boot, 2: seq, 3: kind}), frame.AAD_RECEIPT)


def test_uart_link_writes_each_frame_behind_a_zero_and_reads_receipts():
    got = []
    uart = FakeUart()
    u = uartlink.UartLink(lambda: uart, got.append)
    p = Poller()
    u.open(p)
    assert p.registered == [uart] and u.room()
    msg = frame.build(KEY, "AP-0001", 1, 2, frame.T_ALARM, 5, {}, frame.FLAG_RECEIPTS)
    u.send(msg)
    assert uart.out == b"\x00" + cobsframe.frame(msg)
    r1 = _receipt(1, 2, 1)
    r2 = _receipt(1, 2, 2)
    # noise before the first delimiter, a receipt, garbage, an oversize run, a receipt
    uart.incoming = (
        b"\x42\x17" + b"\x00" + cobsframe.frame(r1) + b"\x05\x01\x00" + b"\x01" * 600 + b"\x00" + cobsframe.frame(r2)
    )
    while uart.incoming:
        u.poll()
    assert got == [r1, r2]
    assert u.rejected == {"partial": 1, "oversize": 1, "cobs": 1, "crc": 0, "short": 0}, u.rejected
    u.close()
    assert uart.closed and u.uart is None and not u.room()


def test_uart_link_reopened_drops_the_frame_it_was_reading():
    got = []
    uarts = [FakeUart(b"\x00" + cobsframe.frame(_receipt(1, 3, 1))[:10]), FakeUart()]
    u = uartlink.UartLink(lambda: uarts.pop(0), got.append)
    u.open(Poller())
    u.poll()
    u.close()
    u.open(Poller())  # the rest of that frame is gone with the old line
    u.uart.incoming = cobsframe.frame(_receipt(1, 3, 1))[10:] + b"\x00" + cobsframe.frame(_receipt(1, 3, 2))
    u.poll()
    assert got == [_receipt(1, 3, 2)]
    assert u.rejected["partial"] == 2  # the cut frame, then the tail on the new line


def test_uart_short_write_breaks_the_link():
    u = uartlink.UartLink(lambda: FakeUart(short=True), None)
    u.open(Poller())
    e = raises(uartlink.LinkError, u.send, b"\xa0")
    assert "wrote 3 of" in str(e)


def _config(name, **over):
    cfg = {"kind": "alarm_post", "id": "AP-0001", "key": KEY.hex()}
    cfg.update(over)
    path = scratch_dir("cfg") + "/" + name
    with open(path, "w") as f:
        f.write(json.dumps(cfg))
    return path


def test_transport_setting():
    cfg = app.load_config(_config("uart.json", transport="uart"))
    assert cfg["transport"] == "uart" and cfg["baud"] == 115200  # no broker needed
    assert app.load_config(_config("mqtt.json", broker="gw.local"))["transport"] == "mqtt"
    for over, want in (
        ({"transport": "wifi"}, 'transport must be "mqtt" or "uart"'),
        ({"transport": "uart", "baud": 10}, "baud must be an integer"),
        ({}, "broker must be"),
    ):
        msg = str(raises(app.ConfigError, app.load_config, _config("bad.json", **over)))
        assert want in msg, (over, msg)


def test_broker_password_and_tls_settings():
    pw = "A-zA-Z0-9_url-safe-32-characters"
    cfg = app.load_config(_config("pw.json", broker="gw.local", password=pw, tls_ca="ca.der"))
    assert cfg["password"] == pw and cfg["tls_ca"] == "ca.der"
    assert "password" not in app.load_config(_config("nopw.json", broker="gw.local"))
    for over in ({"password": "short"}, {"password": "has a space in it!!"}, {"password": 12345678901234567}):
        msg = str(raises(app.ConfigError, app.load_config, _config("bad.json", broker="gw.local", **over)))
        assert "password must be 16-128 printable ASCII" in msg, (over, msg)
        assert str(over["password"]) not in msg, "the error never shows the password"
    msg = str(raises(app.ConfigError, app.load_config, _config("bad.json", broker="gw.local", tls_ca="")))
    assert "tls_ca must be" in msg


def test_mqtt_link_with_a_missing_ca_file_says_so():
    from link import LinkError
    from mqttlink import MqttLink

    # the link's TLS module is lib/linktls.py, never MicroPython's built-in tls
    lk = MqttLink("AP-0001", "127.0.0.1", 1, 30, None, password="x" * 16, tls_ca=scratch_dir("ca") + "/none.der")
    e = raises(LinkError, lk.open, Poller())
    assert "tls_ca" in str(e) and "none.der" in str(e)


def test_uart_post_without_a_uart_keeps_its_outbox_and_retries():
    root = scratch_dir("uart-post")
    rmtree(root)
    cfg = app.load_config(_config("post.json", transport="uart", data_dir=root, debounce_ms=1))
    post = app.AlarmPost(cfg, Board())  # no $GE_VBOARD_UART: the hal has no UART
    post.step()
    assert post.client is None
    assert post.outbox.items() == [(1, 1, 1, 0)]  # ONLINE waits in the outbox
