# Checks the CBOR codec against cases written by a CPython test (cbor2 as the oracle):
# GE_CASES names a JSON file {"seed": S, "cases": [{"value", "hex"}], "garbage": [hex]}.
# Runs on MicroPython; every mismatch is printed with the seed so it can be replayed.
import os

import cbor
from fwsupport import from_json, same, unhex


def test_cases():
    import json

    with open(os.getenv("GE_CASES")) as f:
        doc = json.load(f)
    seed = doc["seed"]
    bad = []
    for case in doc["cases"]:
        value = from_json(case["value"])
        got = cbor.dumps(value).hex()
        if got != case["hex"]:
            bad.append("encode %s: got %s" % (case["hex"], got))
        elif not same(cbor.loads(unhex(case["hex"])), value):
            bad.append("decode %s" % case["hex"])
    for hx in doc["garbage"]:
        try:
            cbor.loads(unhex(hx))
        except cbor.CBORError:
            pass
        except Exception as exc:
            bad.append("garbage %s raised %s: %s" % (hx, type(exc).__name__, exc))
    assert not bad, "seed %d: %d failures, first: %s" % (seed, len(bad), bad[:3])
