# Runs first at every reset, before main.py (the board's start-up, or the virtual board's
# ROM, runs it). Kept minimal: anything that fails here leaves the board without its app.
try:
    import micropython

    # a traceback from a pin irq handler can be printed even when the heap is full
    micropython.alloc_emergency_exception_buf(128)
except (ImportError, AttributeError):
    pass
