# The "ROM" of a virtual board (hil_tests/sim/board.py): run by the MicroPython unix port,
# not by CPython, with the board's flash directory as cwd. It does what a board's C start-up
# does after a reset: boot.py, then main.py, then the REPL.
#
# The REPL after the script comes from $MICROPYINSPECT, which the unix port reads when the
# script ends (like `-i`, but the ROM can still choose to exit): a SystemExit from boot.py
# or main.py (sys.exit(), machine.soft_reset()) ends the interpreter instead, and the
# supervisor restarts it as a soft reset. $GE_VBOARD_RESET says why this interpreter started:
# "power", "soft" (print "MPY: soft reboot", run both files) or "raw" (a reset taken in the
# raw REPL: like a board, run boot.py but not main.py; the supervisor re-enters the raw REPL).
import os
import sys

# Linux termios c_lflag bit; the unix port's termios module does not export it.
_ISIG = 1


def _interrupts_on():
    # The supervisor starts the interpreter with ISIG off, so a Ctrl-C that arrives before
    # this point is a plain character rather than a SIGINT without a handler (which kills).
    try:
        import termios

        attrs = termios.tcgetattr(0)
        attrs[3] |= _ISIG
        termios.tcsetattr(0, termios.TCSANOW, attrs)
    except (ImportError, OSError):
        pass


def _run(path):
    # Like the C start-up's pyexec_file_if_exists: a missing file is skipped, an exception
    # is printed and booting goes on; only SystemExit asks for a reset.
    try:
        os.stat(path)
    except OSError:
        return True
    try:
        execfile(path, globals())  # noqa: F821 - a MicroPython builtin
    except SystemExit:
        return False
    except BaseException as exc:  # KeyboardInterrupt included, like a board
        sys.print_exception(exc)
    return True


def _boot():
    os.putenv("MICROPYINSPECT", "1")
    # The unix port puts the script's directory first on sys.path; a board has the flash
    # root there (MICROPYPATH=":lib" supplies '' and 'lib').
    rom_dir = __file__.rsplit("/", 1)[0]
    sys.path[:] = [p for p in sys.path if p != rom_dir]
    if "" not in sys.path:
        sys.path.insert(0, "")
    kind = os.getenv("GE_VBOARD_RESET") or "power"
    if kind != "power":
        print("MPY: soft reboot\r")
    _interrupts_on()
    if not _run("boot.py") or (kind != "raw" and not _run("main.py")):
        os.unsetenv("MICROPYINSPECT")
        raise SystemExit(0)


if __name__ == "__main__":
    try:
        _boot()
    except KeyboardInterrupt as exc:
        # interrupted between the files: still end up at the REPL
        sys.print_exception(exc)
