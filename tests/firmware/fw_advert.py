# The wristband advert (lib/advert.py, docs/protocol.md section 10) against the vectors
# built with cryptography (tests/vectors/wristband.json). Runs on MicroPython and CPython.
import advert
import fwread_advert
from fwsupport import load_vectors, raises, unhex

V = load_vectors("wristband.json")


def _keys(vec):
    return advert.BandKeys(unhex(vec["root"]), vec["epoch"], vec["k"], V["company"])


def test_constants_pinned():
    assert advert.ADVERT_LEN == 31
    assert advert.COMPANY_TEST == 0xFFFF
    assert advert.header(0) == 0x40 and advert.header(5) == 0x45
    assert (advert.SOS, advert.FALL, advert.STRAP_OPEN, advert.WORN) == (1, 2, 4, 8)
    assert (advert.LOW_BATTERY, advert.CHARGING, advert.CLOCK_RESTORED) == (16, 32, 64)


def test_key_derivation():
    for vec in V["kdf"]:
        got = advert.derive(unhex(vec["root"]), vec["purpose"], vec["epoch"])
        assert got.hex() == vec["key"]


def test_eid():
    for vec in V["eid"]:
        assert fwread_advert.eid(unhex(vec["ik"]), vec["k"], vec["ts"]).hex() == vec["eid"], vec


def test_adverts_encode_to_vectors():
    buf = bytearray(31)
    for vec in V["adverts"]:
        keys = _keys(vec)
        got = advert.encode(keys, vec["counter"], vec["flags"], vec["battery"], vec["event_id"], vec["event_age"])
        assert bytes(got).hex() == vec["hex"], vec["name"]
        assert keys.eid.hex() == vec["eid"] and keys.mask == vec["mask"] and keys.addr.hex() == vec["addr"]
        # preallocated buffer, same bytes
        advert.encode(keys, vec["counter"], vec["flags"], vec["battery"], vec["event_id"], vec["event_age"], buf)
        assert bytes(buf).hex() == vec["hex"]


def test_adverts_open():
    for vec in V["adverts"]:
        got = fwread_advert.open_(_keys(vec), unhex(vec["hex"]), vec["counter"])
        assert got == (vec["counter"], vec["flags"], vec["battery"], vec["event_id"], vec["event_age"]), vec["name"]


def test_bad_adverts_rejected_with_reason():
    keys = advert.BandKeys(unhex(V["adverts"][0]["root"]), 0, 10, V["company"])
    for vec in V["bad_adverts"]:
        exc = raises(advert.AdvertError, fwread_advert.open_, keys, unhex(vec["hex"]), vec["near"])
        assert exc.reason == vec["reason"], (vec["name"], exc.reason)


def test_address_is_non_resolvable_private():
    for vec in V["adverts"]:
        a = unhex(vec["addr"])
        assert a[0] >> 6 == 0 and a != bytes(6)


def test_window_cache_follows_counter():
    vec = V["adverts"][0]
    keys = _keys(vec)
    first = keys.window(vec["counter"])
    assert keys.window(vec["counter"] + 1) == first
    start = vec["counter"] & ~1023
    assert keys.window(start + 1024) != first
    assert keys.window(start) == first


def test_bad_inputs_rejected():
    root = bytes(16)
    raises(advert.AdvertError, advert.BandKeys, bytes(15))
    raises(advert.AdvertError, advert.BandKeys, root, 16)
    raises(advert.AdvertError, advert.BandKeys, root, 0, 7)
    raises(advert.AdvertError, advert.BandKeys, root, 0, 16)
    raises(advert.AdvertError, advert.BandKeys, root, 0, 10, 0x10000)
    keys = advert.BandKeys(root)
    raises(advert.AdvertError, advert.encode, keys, -1, 0, 0, 0, 0)
    raises(advert.AdvertError, advert.encode, keys, 1 << 32, 0, 0, 0, 0)
    raises(advert.AdvertError, advert.encode, keys, 5, 0x80, 0, 0, 0)
    raises(advert.AdvertError, advert.encode, keys, 5, 0, 101, 0, 0)
    raises(advert.AdvertError, advert.encode, keys, 5, 0, 50, 0x10000, 0)
    # ages saturate instead of failing
    data = advert.encode(keys, 5, advert.SOS, 50, 1, 100000)
    assert fwread_advert.open_(keys, data, 5)[4] == 0xFFFF
