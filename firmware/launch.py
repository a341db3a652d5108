# Starts the app that config.json's "kind" names (main.py imports this module: the start-up
# runs main.py by name, and this one goes onto the board compiled, or frozen in the image).
# A config that cannot be used, or a board the hardware layer cannot drive (an unknown
# platform, a missing or wrong pin map: hal.HalError), is reported in one line on the console
# and the board stays at the REPL, where a technician can fix it; only an app that crashes is
# reported and resets the board after a pause (an alarm post must come back by itself).
# Ctrl-C on the console stops the app and leaves the REPL to the technician (on a real board
# the watchdog, started by the app's loop, then resets it within wdt_ms: safe mode is the way
# to a quiet REPL).
# Safe mode: the button held through the first 2 s after power-up starts nothing but the REPL
# (no app, no watchdog, no radio).
import gc
import sys
import time


def _reset():
    try:
        import machine

        machine.reset()
    except (ImportError, AttributeError):
        # the unix port has no machine.reset(); the virtual board's ROM treats the exit
        # as a reset
        sys.exit(1)


def _main():
    kind = None
    try:
        import json

        with open("config.json") as f:
            kind = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError) as e:
        print("main: config.json unusable: %s" % e)
        return
    try:
        import hal

        if hal.safe_mode():
            print("main: safe mode (button held at power-up): the app is not started")
            return
    except Exception as e:  # hal.HalError, or a port module that failed to load
        print("main: %s" % e)
        return
    if kind == "alarm_post":
        from apps.alarm_post import app
    elif kind == "wristband":
        from apps.wristband import app
    elif kind == "sensor":
        from apps.sensor import app
    else:
        print("main: no app for kind %r in config.json" % (kind,))
        return
    try:
        cfg = app.load_config()
    except app.ConfigError as e:
        print("main: %s" % e)
        return
    # what only reads the configuration leaves the heap (the apps import it where they read)
    sys.modules.pop("devconfig", None)
    # the imports and the config left garbage between the modules' code: collect it before
    # the app makes its long-lived objects, so they pack into the heap instead of filling
    # the gaps (measured on the unix port: the smallest working heap went from 92 to 84 KB
    # for the alarm post, 98 to 89 KB for the sensor, 65 to 63 KB for the wristband)
    gc.collect()
    try:
        app.run(cfg)
    except KeyboardInterrupt:
        print("main: stopped from the console")
        return
    except hal.HalError as e:
        print("main: %s" % e)
        return
    except Exception as e:
        sys.print_exception(e)
        print("main: app crashed; reset in 2 s")
        time.sleep(2)
        _reset()


_main()
