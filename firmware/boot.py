# At every reset, before main.py; fwswitch.py says what it finishes here and why
try:
    import micropython

    micropython.alloc_emergency_exception_buf(128)
except (ImportError, AttributeError):
    pass
try:
    import fwswitch

    fwswitch.run()
except ImportError:
    pass
except Exception as e:
    print("boot: switch not finished: %r" % (e,))
fwswitch = None
__import__("sys").modules.pop("fwswitch", None)
