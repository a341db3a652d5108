"""Central's side of the benchmarks: a subscriber on the central broker, in its own process.

`python -m tests.bench.sink --broker HOST:PORT --gateway-key GW.pub` subscribes (QoS 1) to
every gateway's batches and status, checks each batch's Ed25519 signature and hash chain,
counts its events (decoding only batches that start with an alarm or with the gateway's own
event, or are small) and prints one JSON line per batch on stdout:

    {"k": "batch", "t": <CLOCK_MONOTONIC s>, "seq": S, "n": events, "gw": gateway events,
     "p0": [[device, boot, seq], ...]}

plus {"k": "status", "t": ..., "v": "online"|"offline"}, {"k": "dup", "seq": S} for a batch
seen before and {"k": "error", ...} for anything that does not verify. `t` is taken when the
whole PUBLISH has been read; CLOCK_MONOTONIC is one clock for every process on the machine,
so the benchmark compares it with its own time.monotonic() readings. A process of its own so
that decoding batches never holds the benchmark's GIL while it times devices.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from typing import Any

from agent.shared import cose
from agent.shared.errors import WireError
from agent.shared.keyfiles import load_gateway_public_key
from agent.shared.protocol import AAD_BATCH, ZERO_HASH
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
from mqtt import MQTTClient  # firmware MQTT 3.1.1 client, on CPython

BATCHES = "venues/+/gateways/+/batches"
STATUS = "venues/+/gateways/+/status"


class Sink:
    def __init__(self, keys: dict[bytes, Any]) -> None:
        self.keys = keys
        self.chain: dict[str, tuple[int, int, bytes]] = {}  # gateway -> (epoch, seq, hash)
        self.seen: set[tuple[str, int, int]] = set()

    def on_message(self, topic: bytes, msg: bytes) -> None:
        t = time.monotonic()
        if topic.endswith(b"/status"):
            emit({"k": "status", "t": t, "v": msg.decode(errors="replace")})
            return
        try:
            _, payload = cose.sign1_verify(msg, self.keys, AAD_BATCH)
            gw, epoch, seq, prev, n, first_device, first_prio = header(payload)
        except (WireError, ValueError, IndexError) as exc:
            emit({"k": "error", "t": t, "reason": "malformed", "detail": str(exc)})
            return
        digest = hashlib.sha256(msg).digest()
        if (gw, epoch, seq) in self.seen:
            emit({"k": "dup", "t": t, "seq": seq})
            return
        self.seen.add((gw, epoch, seq))
        last = self.chain.get(gw)
        if last is not None and last[0] == epoch:
            if seq != last[1] + 1 or prev != last[2]:
                emit({"k": "error", "t": t, "reason": "chain", "detail": f"seq {seq} after {last[1]}"})
        elif seq == 1 and prev != ZERO_HASH:
            emit({"k": "error", "t": t, "reason": "chain", "detail": "seq 1 with a prev hash"})
        self.chain[gw] = (epoch, seq, digest)
        own = 0
        p0: list[list[Any]] = []
        if first_prio == 0 or first_device == gw or n <= 64:
            # events are lane-ordered in a batch, so P0 events come first; the gateway's own
            # (one heartbeat per start with the benchmark's config) come alone or first
            events = cose.loads(payload)[5]
            own = sum(1 for e in events if e[1] == gw)
            p0 = [[e[1], e[2], e[3]] for e in events if e[5] == 0]
        emit({"k": "batch", "t": t, "seq": seq, "n": n, "gw": own, "p0": p0})


def _head(p: bytes, i: int) -> tuple[int, int, int]:
    """(major type, argument, next index) of the CBOR head at p[i]."""
    b = p[i]
    major, info = b >> 5, b & 0x1F
    if info < 24:
        return major, info, i + 1
    size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
    return major, int.from_bytes(p[i + 1 : i + 1 + size], "big"), i + 1 + size


def header(payload: bytes) -> tuple[str, int, int, bytes, int, str, int]:
    """(gateway, epoch, seq, prev, event count, first event's device, its priority) of a batch
    payload, read from its canonical layout (docs/protocol.md §4) without decoding the events."""
    if payload[0] != 0xA6 or payload[1] != 1:
        raise ValueError("batch payload is not map(6) starting with key 1")
    _, n, i = _head(payload, 2)
    gw = payload[i : i + n].decode()
    i += n
    fields: list[int] = []
    for key in (2, 3):
        if payload[i] != key:
            raise ValueError(f"batch key {key} expected")
        _, v, i = _head(payload, i + 1)
        fields.append(v)
    if payload[i : i + 3] != b"\x04\x58\x20":
        raise ValueError("batch key 4 (prev, 32 bytes) expected")
    prev = payload[i + 3 : i + 35]
    i += 35
    if payload[i] != 5:
        raise ValueError("batch key 5 expected")
    major, count, i = _head(payload, i + 1)
    if major != 4 or not count:
        raise ValueError("events must be a non-empty array")
    # first event: map, 1: device, 2: boot, 3: seq, 4: type, 5: priority
    _, _, i = _head(payload, i)
    _, dn, i = _head(payload, i + 1)
    device = payload[i : i + dn].decode()
    i += dn
    for _key in (2, 3, 4):
        _, _, i = _head(payload, i + 1)
    _, prio, _ = _head(payload, i + 1)
    return gw, fields[0], fields[1], prev, count, device, prio


def emit(rec: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.sink")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--gateway-key", required=True)
    args = ap.parse_args()
    host, port = args.broker.rsplit(":", 1)
    gateway_id, key = load_gateway_public_key(args.gateway_key)
    sink = Sink({gateway_id.encode(): key})
    client = MQTTClient("bench-sink", host, int(port), keepalive=0, max_packet=1 << 22)
    client.set_callback(sink.on_message)
    client.connect(clean_session=True)
    client.subscribe(BATCHES, qos=1)
    client.subscribe(STATUS, qos=1)
    emit({"k": "ready", "t": time.monotonic()})
    try:
        while True:
            client.wait_msg()
    except KeyboardInterrupt:
        return 0
    finally:
        client.disconnect()


if __name__ == "__main__":
    sys.exit(main())
