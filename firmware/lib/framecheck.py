# Known-answer checks of the frame crypto for the self-test of devices that send frames
# (alarm posts, venue sensors): HMAC-SHA256 (RFC 4231 test case 2) and the COSE_Mac0 frame of
# docs/protocol.md section 2. Loaded by the self-test only, never by the running app.
import binascii

import cose
import frame

_HMAC_KEY = b"Jefe"
_HMAC_MSG = b"what do ya want for nothing?"
_HMAC_OUT = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
# key 00..1f, AP-0001, boot 3, seq 1, ALARM, 123456 ms, receipts
_FRAME = "d1844ca20104044741502d30303031a051a6010302010301041a0001e24005a00601485a9e82eb9719bb5e"


def run():
    # None when both match, else what failed
    if binascii.hexlify(cose.hmac_sha256(_HMAC_KEY, _HMAC_MSG)).decode() != _HMAC_OUT:
        return "HMAC-SHA256 vector"
    msg = frame.build(bytes(range(32)), "AP-0001", 3, 1, frame.T_ALARM, 123456, {}, frame.FLAG_RECEIPTS)
    if binascii.hexlify(msg).decode() != _FRAME:
        return "COSE_Mac0 frame vector"
    return None
