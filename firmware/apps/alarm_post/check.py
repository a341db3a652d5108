# What the self-test (selftest.py) checks for an alarm post: its pins and its frame crypto.
import framecheck

from apps.alarm_post import app  # noqa: F401 - the self-test runs app.load_config()

INPUTS = ("button", "tamper")
OUTPUTS = ("led_r", "led_g", "led_b", "buzzer")


def crypto():
    return framecheck.run()
