# Runs first at every reset, before main.py; minimal (a failure here leaves no app)
try:
    import micropython

    micropython.alloc_emergency_exception_buf(128)  # an irq handler's traceback on a full heap
except (ImportError, AttributeError):
    pass
