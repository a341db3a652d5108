"""The parts of a virtual board (hil_tests/sim/board.py composes them into `VirtualBoard`).

- core.py      the lock, the wake pipe and the supervisor thread's loop the parts share
- flash.py     the flash chip: a host directory, factory-flashed by `install()`
- power.py     the power switch and the interpreter process: boot, soft resets, power cuts
- console.py   the USB-UART console: the interpreter's pty bridged to a stable one, the log
- uart.py      the serial line to the gateway, bridged the same way
- control.py   the control socket the device's hal connects to (line transport only)
- pins.py      the digital pins: inputs the supervisor drives, outputs and the LED history
- band.py      a wristband's radio position, battery and accelerometer
- readings.py  a venue sensor's channel readings

The wire protocol of the control socket is in hil_tests/sim/board.py's docstring.
"""
