# The hardware layer for the running platform: `import hal; board = hal.Board()`.
# Every port module offers the same Board API (see hal/unix.py); the app above it is the
# same code everywhere. Ports are added here as they are written.
import sys

if sys.platform == "linux":
    from hal.unix import Board  # noqa: F401 - re-exported as hal.Board
else:
    raise ImportError("hal: no hardware layer for platform %r" % sys.platform)
