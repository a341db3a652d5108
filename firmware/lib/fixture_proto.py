# The rig fixture's line protocol (docs/hil.md): the host sends one command per line, the
# fixture answers one line, "OK ..." or "ERR <reason>". Pure code shared by the fixture
# firmware (apps/rig_fixture, a Raspberry Pi Pico) and the simulated fixture on the host
# (hil_tests/sim/fixture.py), so both speak exactly the same protocol.
#
#   PING                      -> OK fixture <version> <channels>
#   PRESS <ch> [<input>]      -> OK          input: button (default) or tamper
#   RELEASE <ch> [<input>]    -> OK
#   HOLD <ch> <ms>            -> OK          press, wait ms, release (answers after the release)
#   POWER <ch> ON|OFF         -> OK
#   LED <ch>                  -> OK <r> <g> <b>   each 0 or 1, read through the phototransistors
#   SET <ch> <name> <value>   -> OK          a sensor value fed to the device (integer)
#
# Channels are 0 .. channels-1, one per device under test. Lines are ASCII, at most 64
# bytes, ending in "\n" ("\r\n" accepted).
VERSION = "1"
MAX_LINE = 64
INPUTS = ("button", "tamper")


class ProtoError(ValueError):
    pass


def _int(text, what, lo, hi):
    try:
        v = int(text)
    except ValueError:
        raise ProtoError("%s must be an integer, got %r" % (what, text))
    if v < lo or v > hi:
        raise ProtoError("%s must be %d..%d, got %d" % (what, lo, hi, v))
    return v


def parse(line, channels):
    # -> (verb, channel, arg); raises ProtoError with the reason to send back
    if len(line) > MAX_LINE:
        raise ProtoError("line longer than %d bytes" % MAX_LINE)
    parts = line.strip().split()
    if not parts:
        raise ProtoError("empty line")
    verb = parts[0].upper()
    if verb == "PING":
        if len(parts) != 1:
            raise ProtoError("PING takes no arguments")
        return verb, -1, None
    if verb not in ("PRESS", "RELEASE", "HOLD", "POWER", "LED", "SET"):
        raise ProtoError("unknown command %r" % parts[0])
    if len(parts) < 2:
        raise ProtoError("%s needs a channel" % verb)
    ch = _int(parts[1], "channel", 0, channels - 1)
    n = len(parts)
    if verb in ("PRESS", "RELEASE"):
        if n > 3 or (n == 3 and parts[2] not in INPUTS):
            raise ProtoError("%s <ch> [button|tamper]" % verb)
        return verb, ch, parts[2] if n == 3 else "button"
    if verb == "HOLD":
        if n != 3:
            raise ProtoError("HOLD <ch> <ms>")
        return verb, ch, _int(parts[2], "ms", 1, 60000)
    if verb == "POWER":
        if n != 3 or parts[2].upper() not in ("ON", "OFF"):
            raise ProtoError("POWER <ch> ON|OFF")
        return verb, ch, parts[2].upper() == "ON"
    if verb == "LED":
        if n != 2:
            raise ProtoError("LED <ch>")
        return verb, ch, None
    if n != 4:
        raise ProtoError("SET <ch> <name> <value>")
    return verb, ch, (parts[2], _int(parts[3], "value", -(1 << 31), (1 << 31) - 1))


def ok(*fields):
    return " ".join(["OK"] + [str(f) for f in fields])


def err(reason):
    return "ERR " + reason.replace("\n", " ")[:MAX_LINE]
