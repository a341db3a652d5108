# Test app for the virtual board (tests/test_virtual_board.py): mirrors button -> led_g and
# tamper -> led_r, counts button presses through the pin irq and shows the count's parity
# on led_b, and keeps a boot counter in flash (written with rename, like real firmware).
# config.json options: name; busy_ms (sleep in every loop turn); exit_boots (sys.exit() on
# boots up to this number); burst (print that many 100-byte lines at start); rgb (set the
# LED with one Board.rgb() call instead of pin by pin).
import json
import os
import select
import sys
import time

import hal


def _boots():
    try:
        with open("boots.txt") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


boots = _boots() + 1
with open("boots.tmp", "w") as f:
    f.write("%d" % boots)
os.rename("boots.tmp", "boots.txt")

try:
    with open("config.json") as f:
        cfg = json.load(f)
except (OSError, ValueError):
    cfg = {}
if boots <= cfg.get("exit_boots", 0):
    print("main.py: sys.exit() on boot %d" % boots)
    sys.exit()
for i in range(cfg.get("burst", 0)):
    print("burst %06d %s" % (i, "x" * 86))
board = hal.Board()
presses = [0]


def on_button(pin, level, t):
    if level:
        presses[0] += 1


board.button.irq(on_button)
poller = select.poll()
board.register(poller)
busy_ms = cfg.get("busy_ms", 0)
# the tests' "ready" signal: from here on every input change is seen
print("main.py: %s boot %d uid %s" % (cfg.get("name", "?"), boots, board.uid().hex()))
while True:
    board.service()
    if cfg.get("rgb"):
        board.rgb(board.tamper.value(), board.button.value(), presses[0] & 1)
    else:
        board.led_g.value(board.button.value())
        board.led_r.value(board.tamper.value())
        board.led_b.value(presses[0] & 1)
    if busy_ms:
        time.sleep_ms(busy_ms)
    poller.poll(1000)
