# UTF-8 validation for device code: MicroPython's bytes.decode() checks only that each lead
# byte has its continuation bytes, so it lets overlong forms (C0 AF for "/"), surrogates
# (ED A0 80) and code points above U+10FFFF (F4 90 80 80) through, and its str can hold
# surrogates (chr(0xD800)) that .encode() then writes out. cbor.py and mqtt.py check text with
# this instead. No library offers this on every port (MicroPython has no codecs module).
#
# bad() follows Unicode's table of well-formed byte sequences (The Unicode Standard, Table
# 3-7; RFC 3629 section 4), the same rules as CPython's strict decoder:
#   00-7F | C2-DF 80-BF | E0 A0-BF 80-BF | E1-EC 80-BF 80-BF | ED 80-9F 80-BF
#   | EE-EF 80-BF 80-BF | F0 90-BF 80-BF 80-BF | F1-F3 80-BF 80-BF 80-BF | F4 80-8F 80-BF 80-BF
# It walks the buffer in place and allocates nothing (every value is a small int).


def bad(buf, i=0, end=-1, mqtt=False):
    # Offset of the first byte of the first ill-formed sequence in buf[i:end] (end < 0: to
    # the end), or -1 when it is all well-formed. mqtt also refuses what an MQTT string may
    # not hold and Mosquitto refuses: U+0000 (MQTT-1.5.3-2), the control characters
    # U+0001-U+001F and U+007F-U+009F and the non-characters (U+FDD0-U+FDEF, U+xxFFFE,
    # U+xxFFFF), MQTT 3.1.1 section 1.5.3.
    if end < 0:
        end = len(buf)
    while i < end:
        b = buf[i]
        if b < 0x80:
            if mqtt and (b < 0x20 or b == 0x7F):
                return i
            i += 1
            continue
        # lead byte: how many continuation bytes, and the range of the first one
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= b <= 0xDF:
            n = 1
            cp = b & 0x1F
        elif 0xE0 <= b <= 0xEF:
            n = 2
            cp = b & 0x0F
            if b == 0xE0:
                lo = 0xA0  # below: overlong
            elif b == 0xED:
                hi = 0x9F  # above: surrogates D800-DFFF
        elif 0xF0 <= b <= 0xF4:
            n = 3
            cp = b & 0x07
            if b == 0xF0:
                lo = 0x90  # below: overlong
            elif b == 0xF4:
                hi = 0x8F  # above: beyond U+10FFFF
        else:
            return i  # 80-BF lone continuation, C0-C1 overlong, F5-FF never used
        if i + n >= end:
            return i  # truncated
        c = buf[i + 1]
        if c < lo or c > hi:
            return i
        cp = cp << 6 | c & 0x3F
        for j in range(i + 2, i + n + 1):
            c = buf[j]
            if (c & 0xC0) != 0x80:
                return i
            cp = cp << 6 | c & 0x3F
        if mqtt and (cp <= 0x9F or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE):
            return i
        i += n + 1
    return -1
