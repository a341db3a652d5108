# UTF-8 test cases shared by the firmware tests (MicroPython and CPython) and the CPython
# tests that check them against cbor2 and CPython's strict decoder.
#
# STRESS: Markus Kuhn's "UTF-8 decoder capability and stress test" (UTF-8-test.txt), by its
# section numbers, as (section, hex, code points or None when the bytes must be refused).
# The expectations follow Unicode's Table 3-7 (and so CPython's strict codec and cbor2):
# noncharacters such as U+FFFE are well-formed and accepted; overlongs, surrogates, code
# points above U+10FFFF, 5- and 6-byte forms, lone continuation bytes and truncated
# sequences are refused.
# sequences(): a systematic enumeration of short byte strings (every 1- and 2-byte string,
# and 3- and 4-byte strings around every lead byte's boundaries) for the oracle comparison.

STRESS = [
    # 1 some correct UTF-8 text: the Greek word "kosme"
    ("1", "cebae1bdb9cf83cebcceb5", [0x3BA, 0x1F79, 0x3C3, 0x3BC, 0x3B5]),
    # 2.1 first possible sequence of a certain length
    ("2.1.1", "00", [0]),
    ("2.1.2", "c280", [0x80]),
    ("2.1.3", "e0a080", [0x800]),
    ("2.1.4", "f0908080", [0x10000]),
    ("2.1.5", "f888808080", None),
    ("2.1.6", "fc8480808080", None),
    # 2.2 last possible sequence of a certain length
    ("2.2.1", "7f", [0x7F]),
    ("2.2.2", "dfbf", [0x7FF]),
    ("2.2.3", "efbfbf", [0xFFFF]),
    ("2.2.4", "f7bfbfbf", None),
    ("2.2.5", "fbbfbfbfbf", None),
    ("2.2.6", "fdbfbfbfbfbf", None),
    # 2.3 other boundary conditions
    ("2.3.1", "ed9fbf", [0xD7FF]),
    ("2.3.2", "ee8080", [0xE000]),
    ("2.3.3", "efbfbd", [0xFFFD]),
    ("2.3.4", "f48fbfbf", [0x10FFFF]),
    ("2.3.5", "f4908080", None),
    # 3.1 unexpected continuation bytes (3.1.9, all 64 of them, in lone_continuations())
    ("3.1.1", "80", None),
    ("3.1.2", "bf", None),
    ("3.1.3", "80bf", None),
    ("3.1.4", "80bf80", None),
    ("3.1.5", "80bf80bf", None),
    ("3.1.6", "80bf80bf80", None),
    ("3.1.7", "80bf80bf80bf", None),
    ("3.1.8", "80bf80bf80bf80", None),
    # 3.2 lonely start characters, each followed by a space: in lonely_starts()
    # 3.3 sequences with the last continuation byte missing
    ("3.3.1", "c0", None),
    ("3.3.2", "e080", None),
    ("3.3.3", "f08080", None),
    ("3.3.4", "f8808080", None),
    ("3.3.5", "fc80808080", None),
    ("3.3.6", "df", None),
    ("3.3.7", "efbf", None),
    ("3.3.8", "f7bfbf", None),
    ("3.3.9", "fbbfbfbf", None),
    ("3.3.10", "fdbfbfbfbf", None),
    # the same with valid lead bytes, so only the missing byte is wrong
    ("3.3.x", "c2", None),
    ("3.3.x", "e0a0", None),
    ("3.3.x", "f09080", None),
    ("3.3.x", "41e282", None),
    ("3.3.x", "f4", None),
    # 3.4 concatenation of incomplete sequences
    ("3.4", "c0e080f08080f8808080fc80808080dfefbff7bfbffbbfbfbffdbfbfbfbf", None),
    # 3.5 impossible bytes
    ("3.5.1", "fe", None),
    ("3.5.2", "ff", None),
    ("3.5.3", "fefeffff", None),
    # 4.1 overlong ASCII "/"
    ("4.1.1", "c0af", None),
    ("4.1.2", "e080af", None),
    ("4.1.3", "f08080af", None),
    ("4.1.4", "f8808080af", None),
    ("4.1.5", "fc80808080af", None),
    # 4.2 maximum overlong sequences
    ("4.2.1", "c1bf", None),
    ("4.2.2", "e09fbf", None),
    ("4.2.3", "f08fbfbf", None),
    ("4.2.4", "f887bfbfbf", None),
    ("4.2.5", "fc83bfbfbfbf", None),
    # 4.3 overlong NUL
    ("4.3.1", "c080", None),
    ("4.3.2", "e08080", None),
    ("4.3.3", "f0808080", None),
    ("4.3.4", "f880808080", None),
    ("4.3.5", "fc8080808080", None),
    # 5.1 single UTF-16 surrogates
    ("5.1.1", "eda080", None),
    ("5.1.2", "edadbf", None),
    ("5.1.3", "edae80", None),
    ("5.1.4", "edafbf", None),
    ("5.1.5", "edb080", None),
    ("5.1.6", "edbe80", None),
    ("5.1.7", "edbfbf", None),
    # 5.2 paired UTF-16 surrogates (CESU-8)
    ("5.2.1", "eda080edb080", None),
    ("5.2.2", "eda080edbfbf", None),
    ("5.2.3", "edadbfedb080", None),
    ("5.2.4", "edadbfedbfbf", None),
    ("5.2.5", "edae80edb080", None),
    ("5.2.6", "edae80edbfbf", None),
    ("5.2.7", "edafbfedb080", None),
    ("5.2.8", "edafbfedbfbf", None),
    # 5.3 noncharacters: well-formed (Unicode Corrigendum #9), accepted as CPython does
    ("5.3.1", "efbfbe", [0xFFFE]),
    ("5.3.2", "efbfbf", [0xFFFF]),
    ("5.3.3", "efb790", [0xFDD0]),
    ("5.3.4", "f48fbfbe", [0x10FFFE]),
    # an error after good text, and good text after an error
    ("x", "41c3a9e282ac", [0x41, 0xE9, 0x20AC]),
    ("x", "41c3a9e282", None),
    ("x", "c0af41", None),
]


def lone_continuations():
    # 3.1.9: each of the 64 continuation bytes alone, then all of them in a row
    out = [("3.1.9", bytes((b,)), None) for b in range(0x80, 0xC0)]
    out.append(("3.1.9", bytes(range(0x80, 0xC0)), None))
    return out


def lonely_starts():
    # 3.2: every lead byte C0-FD followed by a space
    return [("3.2", bytes((b, 0x20)), None) for b in range(0xC0, 0xFE)]


_EDGES3 = (0x00, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF)
_EDGES4 = (0x7F, 0x80, 0x8F, 0x90, 0xBF, 0xC0)


def sequences():
    # every 1- and 2-byte string; 3-byte strings with a lead E0-EF, any second byte and a
    # third at the continuation range's edges; 4-byte strings with a lead F0-FF, any second
    # byte and third and fourth bytes at the edges (same order on every interpreter)
    for a in range(256):
        yield bytes((a,))
    for a in range(256):
        for b in range(256):
            yield bytes((a, b))
    for a in range(0xE0, 0xF0):
        for b in range(256):
            for c in _EDGES3:
                yield bytes((a, b, c))
    for a in range(0xF0, 0x100):
        for b in range(256):
            for c in _EDGES4:
                for d in _EDGES4:
                    yield bytes((a, b, c, d))


def test_cases():
    # Run by tests/firmware/test_cbor_property.py: GE_CASES names a JSON file
    # {"valid": hex bitmap}, bit i (most significant first) set when the i-th string of
    # sequences() is well-formed according to cbor2 and CPython's strict decoder. Each string
    # goes through cbor.loads as a text string; the firmware must agree on every one.
    import json
    import os

    import cbor

    with open(os.getenv("GE_CASES")) as f:
        bitmap = bytes.fromhex(json.load(f)["valid"])
    bad = []
    n = 0
    for seq in sequences():
        want = bitmap[n >> 3] >> (7 - (n & 7)) & 1
        try:
            cbor.loads(bytes((0x60 + len(seq),)) + seq)
            got = 1
        except cbor.CBORError:
            got = 0
        if got != want:
            bad.append(seq.hex())
        n += 1
    assert len(bitmap) == (n + 7) // 8, "a bitmap of %d bytes for %d strings" % (len(bitmap), n)
    assert not bad, "%d of %d disagree with cbor2, first: %s" % (len(bad), n, bad[:5])
