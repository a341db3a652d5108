# On-device self-test, run by the provisioning tool over the console after flashing
# (`import selftest; selftest.run()`) and by a technician at the REPL. It checks the hardware
# layer (pins answer, the board has a unique id), the flash store (an atomic record written,
# read back and removed), the crypto (HMAC-SHA256 RFC 4231 case 2 and the COSE_Mac0 frame of
# docs/protocol.md section 2) and config.json (the app's own validation), then prints one line:
#   selftest: ok id=<device> kind=<kind> fw=<bundle version> bundle=<bundle id> mpy=<x.y.z> uid=<hex>
#   selftest: FAIL <check>: <reason>
# The key in config.json is never printed.
import json
import os
import sys

_TMP_DIR = "selftest.tmp"
# RFC 4231 test case 2
_HMAC_KEY = b"Jefe"
_HMAC_MSG = b"what do ya want for nothing?"
_HMAC_OUT = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
# docs/protocol.md section 2 example: key 00..1f, AP-0001, boot 3, seq 1, ALARM, 123456 ms, receipts
_FRAME = "d1844ca20104044741502d30303031a051a6010302010301041a0001e24005a00601485a9e82eb9719bb5e"


class _Fail(Exception):
    pass


def _check_hal():
    import hal

    b = hal.Board()
    try:
        for name in ("button", "tamper"):
            v = getattr(b, name).value()
            if v not in (0, 1):
                raise _Fail("hal: input %s reads %r" % (name, v))
        outputs = ("led_r", "led_g", "led_b", "buzzer")
        if not hasattr(b, "led_r"):
            # a neopixel LED has no pins of its own: the colour goes through rgb()
            b.rgb(1, 1, 1)
            if b.colour() != (1, 1, 1):
                raise _Fail("hal: the LED does not take a colour")
            b.rgb(0, 0, 0)
            outputs = ("buzzer",)
        for name in outputs:
            pin = getattr(b, name)
            pin.value(1)
            if pin.value() != 1:
                raise _Fail("hal: output %s does not switch on" % name)
            pin.value(0)
            if pin.value() != 0:
                raise _Fail("hal: output %s does not switch off" % name)
        uid = b.uid()
        if not isinstance(uid, bytes) or len(uid) < 4:
            raise _Fail("hal: no unique id")
        return uid
    finally:
        close = getattr(b, "close", None)
        if close is not None:
            close()


def _check_store():
    import store

    try:
        os.mkdir(_TMP_DIR)
    except OSError:
        pass
    path = _TMP_DIR + "/rec"
    data = bytes(range(64))
    try:
        store.atomic_write(path, data)
        if store.read(path) != data:
            raise _Fail("store: record read back differs")
    finally:
        for name in ("rec", "rec.tmp"):
            try:
                os.remove(_TMP_DIR + "/" + name)
            except OSError:
                pass
        try:
            os.rmdir(_TMP_DIR)
        except OSError:
            pass


def _check_crypto():
    import binascii

    import cose
    import frame

    if binascii.hexlify(cose.hmac_sha256(_HMAC_KEY, _HMAC_MSG)).decode() != _HMAC_OUT:
        raise _Fail("crypto: HMAC-SHA256 vector")
    msg = frame.build(bytes(range(32)), "AP-0001", 3, 1, frame.T_ALARM, 123456, {}, frame.FLAG_RECEIPTS)
    if binascii.hexlify(msg).decode() != _FRAME:
        raise _Fail("crypto: COSE_Mac0 frame vector")


def _check_config():
    try:
        with open("config.json") as f:
            kind = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError) as e:
        raise _Fail("config: config.json unusable: %s" % e)
    if kind == "alarm_post":
        from apps.alarm_post import app
    elif kind == "sensor":
        from apps.sensor import app
    else:
        raise _Fail("config: no app for kind %r" % (kind,))
    try:
        cfg = app.load_config()
    except app.ConfigError as e:
        raise _Fail("config: %s" % e)
    return cfg["id"], kind


def _manifest():
    try:
        with open("manifest.json") as f:
            m = json.load(f)
        return m.get("version", "?"), m.get("bundle", "?")
    except (OSError, ValueError, AttributeError):
        return "?", "?"


def run():
    import binascii

    check = "start"
    try:
        check = "hal"
        uid = _check_hal()
        check = "store"
        _check_store()
        check = "crypto"
        _check_crypto()
        check = "config"
        dev, kind = _check_config()
    except _Fail as e:
        print("selftest: FAIL %s" % e)
        return False
    except Exception as e:
        print("selftest: FAIL %s: %s %s" % (check, type(e).__name__, e))
        return False
    fw, bundle = _manifest()
    mpy = ".".join(str(x) for x in sys.implementation.version[:3])
    print(
        "selftest: ok id=%s kind=%s fw=%s bundle=%s mpy=%s uid=%s"
        % (dev, kind, fw, bundle, mpy, binascii.hexlify(uid).decode())
    )
    return True
