# Device frames and gateway receipts (docs/protocol.md, "Device frame" and "Receipt").
# A frame is a COSE_Mac0 under the device key with external_aad "ge/1/frame"; a receipt is a
# COSE_Mac0 from the gateway under the same key with external_aad "ge/1/receipt".
import cbor
import cose
from clock import const

AAD_FRAME = b"ge/1/frame"
AAD_RECEIPT = b"ge/1/receipt"

# payload keys
K_BOOT = const(1)
K_SEQ = const(2)
K_TYPE = const(3)
_K_TIME = const(4)
K_DATA = const(5)
K_FLAGS = const(6)
_K_KIND = const(3)  # receipt

FLAG_RECEIPTS = 1  # the device keeps the event until receipt 2 and wants receipts

# event types (docs/protocol.md, "Event types")
T_ALARM = 1
T_ALARM_HELD = 2
T_SMOKE = 7  # venue sensors: P0 hazards
T_GAS = 8
T_TAMPER = 64
T_ONLINE = 65
T_DOOR_HELD_OPEN = 70  # venue sensors: P1 states
T_EXTINGUISHER = 71
T_SENSOR_CLEAR = 72
T_SENSOR_FAULT = 73
T_HEARTBEAT = 128

# receipt kinds
R_STORED = 1
R_DELIVERED = 2
R_ACKNOWLEDGED = 3
R_DROPPED = 4  # the gateway evicted this (non-alarm) event from its full buffer


class FrameError(ValueError):
    pass


def build(key, device_id, boot, seq, typ, time_ms, data, flags=0):
    payload = {K_BOOT: boot, K_SEQ: seq, K_TYPE: typ, _K_TIME: time_ms, K_DATA: data}
    if flags:
        payload[K_FLAGS] = flags
    return cose.mac0_encode(key, device_id.encode(), cbor.dumps(payload), AAD_FRAME)


def parse_receipt(key, msg):
    # Returns (boot, seq, kind); raises FrameError on a bad MAC or a malformed receipt.
    try:
        _, payload = cose.mac0_verify(key, msg, AAD_RECEIPT)
        body = cbor.loads(payload)
    except (cose.COSEError, cbor.CBORError) as exc:
        raise FrameError("bad receipt: %s" % exc)
    if not isinstance(body, dict):
        raise FrameError("bad receipt: payload is not a map")
    boot = body.get(K_BOOT)
    seq = body.get(K_SEQ)
    kind = body.get(_K_KIND)
    for name, v in (("boot", boot), ("seq", seq), ("kind", kind)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise FrameError("bad receipt: %s missing or not a uint" % name)
    return boot, seq, kind
