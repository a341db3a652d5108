# What the self-test (selftest.py) checks for a wristband: its pins and the advert crypto,
# the "worn, nothing happening" advert of tests/vectors/wristband.json (AES-128 key
# derivation, EID, counter mask and AES-CCM on cryptolib's AES-ECB).
import binascii

import advert

from apps.wristband import app  # noqa: F401 - the self-test runs app.load_config()

INPUTS = ("button", "strap")
OUTPUTS = ("buzzer",)

_ROOT = "101112131415161718191a1b1c1d1e1f"
_ADVERT = "1effffff40426b2f377c137db05ec21604208c23659844c3f5f81fb8bd5160"


def crypto():
    keys = advert.BandKeys(binascii.unhexlify(_ROOT), 0, 10, advert.COMPANY_TEST)
    buf = bytearray(advert.ADVERT_LEN)
    advert.encode(keys, 1700000000, advert.WORN, 87, 0, 0, buf)
    if binascii.hexlify(bytes(buf)).decode() != _ADVERT:
        return "AES-CCM advert vector"
    return None
