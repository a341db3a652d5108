# Runs first at every reset, before main.py; minimal (a failure here leaves no app)
try:
    import micropython

    micropython.alloc_emergency_exception_buf(128)  # an irq handler's traceback on a full heap
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
