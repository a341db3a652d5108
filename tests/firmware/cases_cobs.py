# Checks the firmware deframer against streams written by a CPython test (the gateway's
# deframer on the `cobs` package as the oracle): GE_CASES names a JSON file
# {"seed": S, "cases": [{"hex", "payloads": [hex], "rejected": {reason: n}}]}.
# Runs on MicroPython; every mismatch is printed with the seed so it can be replayed.
import os

import cobsframe
from fwsupport import unhex


def test_cases():
    import json

    with open(os.getenv("GE_CASES")) as f:
        doc = json.load(f)
    bad = []
    for n, case in enumerate(doc["cases"]):
        d = cobsframe.Deframer()
        got = [p.hex() for p in d.feed(unhex(case["hex"]))]
        if got != case["payloads"]:
            bad.append("case %d: payloads %s, want %s" % (n, got, case["payloads"]))
        elif d.rejected != case["rejected"]:
            bad.append("case %d: rejected %s, want %s" % (n, d.rejected, case["rejected"]))
    assert not bad, "seed %d: %d failures, first: %s" % (doc["seed"], len(bad), bad[:3])
