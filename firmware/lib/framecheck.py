# Known-answer checks of the frame crypto for the self-test of devices that send frames
# (alarm posts, venue sensors): HMAC-SHA256 (RFC 4231 test case 2) and the COSE_Mac0 frame of
# docs/protocol.md section 2. Loaded by the self-test only, never by the running app.
import cose
import frame

_HMAC_KEY = b"Jefe"
_HMAC_MSG = b"what do ya want for nothing?"
_HMAC_OUT = (  # RFC 4231 4.3: 5bdcc146bf60754e6a042426089575c7 5a003f089d2739839dec58b964ec3843
    b"\x5b\xdc\xc1\x46\xbf\x60\x75\x4e\x6a\x04\x24\x26\x08\x95\x75\xc7"
    b"\x5a\x00\x3f\x08\x9d\x27\x39\x83\x9d\xec\x58\xb9\x64\xec\x38\x43"
)
# key 00..1f, AP-0001, boot 3, seq 1, ALARM, 123456 ms, receipts
_FRAME = (
    b"\xd1\x84"  # tag 17, an array of 4
    b"\x4c\xa2\x01\x04\x04\x47AP-0001"  # protected: bstr(12) {1: 4, 4: bstr(7) "AP-0001"}
    b"\xa0"  # unprotected: {}
    # payload: bstr(17) {1: 3, 2: 1, 3: 1, 4: 123456, 5: {}, 6: 1}
    b"\x51\xa6\x01\x03\x02\x01\x03\x01\x04\x1a\x00\x01\xe2\x40\x05\xa0\x06\x01"
    b"\x48\x5a\x9e\x82\xeb\x97\x19\xbb\x5e"  # tag: bstr(8)
)


def run():
    # None when both match, else what failed
    if cose.hmac_sha256(_HMAC_KEY, _HMAC_MSG) != _HMAC_OUT:
        return "HMAC-SHA256 vector"
    msg = frame.build(bytes(range(32)), "AP-0001", 3, 1, frame.T_ALARM, 123456, {}, frame.FLAG_RECEIPTS)
    if msg != _FRAME:
        return "COSE_Mac0 frame vector"
    return None
