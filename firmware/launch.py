# Starts the app that config.json's "kind" names. The board's start-up runs boot.py, then
# main.py, by name and as source; main.py only imports this module, which goes onto the board
# compiled (or frozen in the image): a board compiles no source at power-up, and the
# explanations stay here, where comments cost no flash (boot.py and main.py are carried as
# they are written, comments included). boot.py sets aside the emergency exception buffer, so
# a traceback from a pin irq handler can be printed even when the heap is full.
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


def _main():
    # returns what stopped the board short of running the app (or the app short of running
    # on), for the console; None when the app ends otherwise
    try:
        import json

        with open("config.json") as f:
            kind = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError) as e:
        return "config.json unusable: %s" % e
    try:
        import hal

        if hal.safe_mode():
            return "safe mode (button held at power-up): the app is not started"
    except Exception as e:  # hal.HalError, or a port module that failed to load
        return e
    if kind == "alarm_post":
        from apps.alarm_post import app
    elif kind == "wristband":
        from apps.wristband import app
    elif kind == "sensor":
        from apps.sensor import app
    else:
        return "no app for kind %r in config.json" % (kind,)
    try:
        cfg = app.load_config()
    except app.ConfigError as e:
        return e
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
        return "stopped from the console"
    except hal.HalError as e:
        return e
    except Exception as e:
        sys.print_exception(e)
        print("main: app crashed; reset in 2 s")
        time.sleep(2)
        try:
            import machine

            machine.reset()
        except (ImportError, AttributeError):
            # the unix port has no machine.reset(); the virtual board's ROM treats the exit
            # as a reset
            sys.exit(1)
    return None


_stopped = _main()
if _stopped is not None:
    print("main: %s" % _stopped)
