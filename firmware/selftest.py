# On-device self-test, run by the provisioning tool over the console after flashing
# (`import selftest; selftest.run()`) and by a technician at the REPL. It checks the hardware
# layer (the pins the device kind uses answer, the board has a unique id), the flash store
# (an atomic record written, read back and removed), the kind's crypto (apps/<kind>/check.py:
# HMAC-SHA256 and the COSE_Mac0 frame for posts and sensors, the advert's AES-CCM for
# wristbands) and config.json (the app's own validation), then prints one line:
#   selftest: ok id=<device> kind=<kind> fw=<bundle version> bundle=<bundle id> mpy=<x.y.z> uid=<hex>
#   selftest: FAIL <check>: <reason>
# run() returns that line too (provisioning reads it as the command's result, checked end to
# end, instead of parsing the console). The kind's check module is loaded by name, so a bundle
# carries only its own kind's checks.
# The key in config.json is never printed.
import json
import os
import sys

_TMP_DIR = "selftest.tmp"


class _Fail(Exception):
    pass


def _kind():
    try:
        with open("config.json") as f:
            kind = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError) as e:
        raise _Fail("config: config.json unusable: %s" % e)
    if not isinstance(kind, str) or not kind or not all(c.isalpha() or c == "_" for c in kind):
        raise _Fail("config: no app for kind %r" % (kind,))
    try:
        return kind, __import__("apps.%s.check" % kind, None, None, ("check",))
    except ImportError:
        raise _Fail("config: no app for kind %r" % (kind,))


def _check_hal(check):
    import hal

    try:
        b = hal.Board()
    except hal.HalError as e:
        raise _Fail(str(e))  # one line naming the board file and the key ("hal: ...")
    try:
        for name in check.INPUTS:
            v = getattr(b, name).value()
            if v not in (0, 1):
                raise _Fail("hal: input %s reads %r" % (name, v))
        outputs = check.OUTPUTS
        if "led_r" in outputs and not hasattr(b, "led_r"):
            # a neopixel LED has no pins of its own: the colour goes through rgb()
            b.rgb(1, 1, 1)
            if b.colour() != (1, 1, 1):
                raise _Fail("hal: the LED does not take a colour")
            b.rgb(0, 0, 0)
            outputs = tuple(n for n in outputs if n not in ("led_r", "led_g", "led_b"))
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
    import record as store

    store._mkdir(_TMP_DIR)
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


def run():
    import binascii

    check = "config"
    try:
        kind, checks = _kind()
        check = "hal"
        uid = _check_hal(checks)
        check = "store"
        _check_store()
        check = "crypto"
        bad = checks.crypto()
        if bad is not None:
            raise _Fail("crypto: %s" % bad)
        check = "config"
        app = checks.app
        try:
            dev = app.load_config()["id"]
        except app.ConfigError as e:
            raise _Fail("config: %s" % e)
    except Exception as e:
        # a _Fail names its check; anything else is named here
        line = "selftest: FAIL %s" % (e if isinstance(e, _Fail) else "%s: %s %s" % (check, type(e).__name__, e))
    else:
        try:
            with open("manifest.json") as f:
                m = json.load(f)
            fw, bundle = m.get("version", "?"), m.get("bundle", "?")
        except (OSError, ValueError, AttributeError):
            fw = bundle = "?"
        mpy = ".".join(str(x) for x in sys.implementation.version[:3])
        line = "selftest: ok id=%s kind=%s fw=%s bundle=%s mpy=%s uid=%s" % (
            dev,
            kind,
            fw,
            bundle,
            mpy,
            binascii.hexlify(uid).decode(),
        )
    print(line)
    return line
