# Runs the test_* functions of one firmware test module. The same file runs under the
# MicroPython unix port and under CPython, so it uses only what both have (no pytest, no
# traceback module on MicroPython). Invoked by tests/firmware/test_firmware.py:
#   <interpreter> fwtest.py MODULE [NAME ...]
# Output, one line per test: "ok NAME" or "FAIL NAME" followed by the traceback lines,
# then "done PASSED FAILED". Exit status 1 when anything failed.
import sys


def _print_exc(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    else:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)


def main(argv):
    modname = argv[1]
    wanted = argv[2:]
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    if wanted:
        names = [n for n in names if n in wanted]
    passed = failed = 0
    for name in names:
        try:
            getattr(mod, name)()
        except Exception as exc:
            failed += 1
            print("FAIL " + name)
            _print_exc(exc)
            print("end " + name)
        else:
            passed += 1
            print("ok " + name)
    print("done %d %d" % (passed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv))
