# The virtual board's UART to the gateway (hal/unix.py Board.uart(), loaded only by a board
# that uses one): a pty whose path the supervisor passes in $GE_VBOARD_UART; the supervisor
# bridges it to a host-side pty the gateway opens.
import os

from clock import const

_VTIME = const(5)  # Linux termios c_cc indices; the unix port's termios module lacks them
_VMIN = const(6)


def open_uart(baudrate=115200):
    # The UART wired to the gateway, shaped like machine.UART for the link: readinto()
    # returns what is there (0 when nothing: it never blocks), write(), close(), and it
    # joins a select.poll set. A pty has no line speed, so baudrate changes nothing here.
    # OSError when the board has no UART ($GE_VBOARD_UART unset) or it cannot be opened.
    path = os.getenv("GE_VBOARD_UART")
    if not path:
        raise OSError("hal: this board has no UART ($GE_VBOARD_UART is not set)")
    f = open(path, "r+b", buffering=0)  # noqa: SIM115 - the open file is the UART handed out
    try:
        import termios

        try:
            from termios import setraw
        except ImportError:
            from tty import setraw  # CPython keeps it there

        fd = f.fileno()
        setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][_VMIN] = 0  # a read returns at once with what is buffered
        attrs[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except BaseException:
        f.close()
        raise
    return f
