# What the self-test (selftest.py) checks for a venue sensor: its pins and its frame crypto.
# The channels' inputs are judged by app.load_config() (names) and read once the app runs.
import framecheck

from apps.sensor import app  # noqa: F401 - the self-test runs app.load_config()

INPUTS = ()
OUTPUTS = ("led_r", "led_g", "led_b", "buzzer")


def crypto():
    return framecheck.run()
