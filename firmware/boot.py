# Runs first at every reset, before main.py (the board's start-up, or the virtual board's
# ROM, runs it). Kept minimal: anything that fails here leaves the board without its app.
try:
    import micropython

    # a traceback from a pin irq handler can be printed even when the heap is full
    micropython.alloc_emergency_exception_buf(128)
except (ImportError, AttributeError):
    pass
# A firmware switch that a reset cut short is finished before anything imports the set
# (fwswitch.py); the module leaves the heap again.
try:
    import fwswitch

    fwswitch.run()
except ImportError:
    pass  # flashed before the switch existed
except Exception as e:
    print("boot: firmware switch not finished: %r" % (e,))
try:
    import sys

    sys.modules.pop("fwswitch", None)
    del fwswitch
except (NameError, ImportError):
    pass
