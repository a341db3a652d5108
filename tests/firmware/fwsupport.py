# Helpers shared by the firmware test modules; runs on MicroPython and CPython.
import json
import os

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
VECTORS = os.getenv("GE_VECTORS") or (_HERE + "/../vectors")
SCRATCH = os.getenv("GE_SCRATCH") or "/tmp"
IS_MICROPYTHON = hasattr(__import__("sys"), "implementation") and (
    __import__("sys").implementation.name == "micropython"
)


def load_vectors(name):
    with open(VECTORS + "/" + name) as f:
        return json.load(f)


def unhex(s):
    return bytes.fromhex(s)


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError("expected %s from %r" % (exc_type.__name__, args))


def scratch_dir(name):
    path = SCRATCH + "/" + name
    try:
        os.mkdir(path)
    except OSError:
        pass
    return path


def rmtree(path):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for entry in entries:
        full = path + "/" + entry
        try:
            os.remove(full)
        except OSError:
            rmtree(full)
    try:
        os.rmdir(path)
    except OSError:
        pass


def from_json(v):
    # Typed values in vector files: JSON has no bytes, int map keys, tags or NaN.
    # {"$bytes": hex}, {"$float": "nan"|"inf"|"-inf"|number}, {"$f64": hex of a double},
    # {"$map": [[k, v], ...]},
    # {"$tag": [n, v]}; lists and plain scalars map directly.
    import cbor

    if isinstance(v, list):
        return [from_json(x) for x in v]
    if isinstance(v, dict):
        if "$bytes" in v:
            return bytes.fromhex(v["$bytes"])
        if "$f64" in v:
            import struct

            return struct.unpack(">d", bytes.fromhex(v["$f64"]))[0]
        if "$float" in v:
            return float(v["$float"])
        if "$map" in v:
            return {from_json(k): from_json(x) for k, x in v["$map"]}
        if "$tag" in v:
            return cbor.Tag(v["$tag"][0], from_json(v["$tag"][1]))
        return {k: from_json(x) for k, x in v.items()}
    return v


def same(a, b):
    # Equality that treats NaN as equal to NaN and keeps int/float and -0.0 distinct.
    if isinstance(a, float) and isinstance(b, float):
        if a != a and b != b:
            return True
        if a == 0.0 and b == 0.0:
            return str(a) == str(b)
        return a == b
    if type(a) is not type(b):
        if isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray)):
            return bytes(a) == bytes(b)
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(a[k], b[k]) for k in a)
    if hasattr(a, "tag"):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b
