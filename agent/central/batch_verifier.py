"""Central's batch verifier: checks gateway batches and reports each event and each problem.

A reference consumer for the platform side (docs/protocol.md §4.2). Events are reported as soon
as their batch's signature verifies — an authentic alarm is never held back because an
earlier batch is missing — and the chain checks report gaps, reordering, forks and breaks
alongside. Events are deduplicated on (device, boot, seq). With device keys (`--device-keys`)
each event's device MAC is re-checked as well (docs/protocol.md §4.3). `feed()` returns
records (dicts); `guardian-agent verify` prints them as readable lines
(agent/central/dispatch_lines.py) or, with `--json`, one JSON object per line.

Joining a running chain. Central's broker keeps nothing of a gateway's chain (the only
retained message on a gateway's topics is its `online`/`offline` status, docs/protocol.md §5),
so a verifier that starts after the gateway first sees some batch n > 1 of the current epoch.
It then reports `joined` (the chain is followed from batch n; what came before was sent before
it watched) instead of a gap of 1 .. n-1. That holds only for chains that began before the
verifier started (the epoch, the gateway's clock when its chain began, is at most JOIN_SKEW_S
after the verifier's start); a chain that began while the verifier was watching must be
complete, and its missing batches are a `gap` as always.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import aiomqtt
import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.shared import cose
from agent.shared.backoff import Backoff
from agent.shared.errors import WireError
from agent.shared.frames import Event, data_json
from agent.shared.protocol import AAD_BATCH, AAD_FRAME, BATCH_FILTER, ZERO_HASH, type_name
from agent.shared.registry import Registry

if TYPE_CHECKING:
    from agent.central.enrolled_gateways import GatewayKeys

log = logging.getLogger(__name__)

GAP_GRACE_S = 5.0
JOIN_SKEW_S = 120  # how far a gateway's clock may run ahead of central's when its chain begins
MAX_SEEN_EVENTS = 5_000_000
MAX_HASHES = 100_000
# what makes the verifier exit non-zero
INTEGRITY_PROBLEMS = (
    "bad_signature",
    "unknown_signer",
    "revoked_gateway",
    "malformed",
    "fork",
    "chain_break",
    "gap",
    "audit_failed",
)


@dataclass(slots=True)
class _Chain:
    epoch: int
    # seq -> (hash of the batch, its prev field), for recent batches
    hashes: OrderedDict[int, tuple[bytes, bytes]] = field(default_factory=OrderedDict)
    contiguous: int = 0
    missing_since: dict[int, float] = field(default_factory=dict)
    reported_gaps: set[int] = field(default_factory=set)


class BatchVerifier:
    """Feed it batch messages; it returns the JSON-able records to print."""

    def __init__(
        self,
        keys: dict[bytes, Ed25519PublicKey],
        device_registry: Registry | None = None,
        gap_grace_s: float = GAP_GRACE_S,
        clock: Callable[[], float] = time.time,
        gateway_keys: GatewayKeys | None = None,
    ) -> None:
        self.keys = keys
        # central's enrolled-gateways file (agent/central/enrolled_gateways.py): merged over `keys`, reloaded on change
        self._static_keys = dict(keys)
        self.gateway_keys = gateway_keys
        if gateway_keys is not None:
            self.keys = {**keys, **gateway_keys.keys}
        self.registry = device_registry
        self.gap_grace_s = gap_grace_s
        self.clock = clock
        self.chains: dict[str, _Chain] = {}
        self.started = clock()
        self.seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self.counts: Counter[str] = Counter()

    def _problem(self, kind: str, **detail: Any) -> dict[str, Any]:
        self.counts[kind] += 1
        return {"kind": kind, **detail}

    def feed(self, topic: str, data: bytes) -> list[dict[str, Any]]:
        """Check one batch message; the records to report (events and problems), in order."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        if self.gateway_keys is not None and self.gateway_keys.refresh():
            self.keys = {**self._static_keys, **self.gateway_keys.keys}
        try:
            kid, payload = cose.sign1_verify(data, self.keys, AAD_BATCH)
            if self.gateway_keys is not None and kid in self.gateway_keys.revoked:
                raise WireError("revoked_gateway", f"gateway {kid.decode(errors='replace')} was revoked at central")
            body = cose.loads(payload)
            if not isinstance(body, dict):
                raise WireError("malformed", "batch payload is not a map")
            gateway, epoch, seq, prev, events = body.get(1), body.get(2), body.get(3), body.get(4), body.get(5)
            created = body.get(6)
            if gateway != kid.decode(errors="replace"):
                raise WireError("malformed", f"payload gateway {gateway!r} differs from the kid {kid!r}")
            if not (isinstance(epoch, int) and isinstance(seq, int) and seq >= 1 and isinstance(created, int)):
                raise WireError("malformed", "epoch, seq or created missing or not integers")
            if not isinstance(prev, bytes) or len(prev) != 32:
                raise WireError("malformed", "prev must be 32 bytes")
            if not isinstance(events, (list, tuple)) or not events:
                raise WireError("malformed", "events must be a non-empty array")
            decoded = [Event.decode(e) if isinstance(e, dict) else _not_a_map() for e in events]
        except WireError as exc:
            out.append(self._problem(exc.reason, topic=topic, detail=exc.detail))
            return out
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            out.append(self._problem("malformed", topic=topic, detail=str(exc)))
            return out

        digest = hashlib.sha256(data).digest()
        status = self._chain(gateway, epoch, seq, prev, digest, now, out)
        if status in ("duplicate", "fork"):
            return out
        self.counts["batches"] += 1
        central_ms = int(now * 1000)
        for ev in decoded:
            key = ev.key
            if key in self.seen:
                self.counts["duplicate_event"] += 1
                continue
            self.seen[key] = None
            if len(self.seen) > MAX_SEEN_EVENTS:
                self.seen.popitem(last=False)
            # the gateway's own events carry no device MAC; its signature covers them
            if self.registry is not None and ev.device != gateway and not self._audit(ev):
                out.append(self._problem("audit_failed", gateway=gateway, device=ev.device, boot=ev.boot, seq=ev.seq))
                continue
            self.counts["events"] += 1
            out.append(
                {
                    "kind": "event",
                    "gateway": gateway,
                    "venue": venue_of(topic),
                    "ref": f"{ev.device}/{ev.boot}/{ev.seq}",
                    "epoch": epoch,
                    "batch": seq,
                    "device": ev.device,
                    "boot": ev.boot,
                    "seq": ev.seq,
                    "type": ev.type,
                    "type_name": type_name(ev.type),
                    "priority": ev.prio,
                    "device_time_ms": ev.time,
                    "received_ms": ev.received,
                    "sealed_ms": created,
                    "central_ms": central_ms,
                    "gateway_to_central_ms": central_ms - ev.received,
                    "data": data_json(ev.data),
                    "flags": ev.flags,
                }
            )
        return out

    def _audit(self, ev: Event) -> bool:
        assert self.registry is not None
        device = self.registry.get(ev.device)
        if device is None:
            return False
        if device.kind == "wristband":
            # a band's adverts carry no frame MAC: the gateway checked the advert's AES-CCM MIC
            # and raised the event itself (docs/protocol.md §4.4); the batch signature covers it
            return ev.tag == b""
        body: dict[int, Any] = {1: ev.boot, 2: ev.seq, 3: ev.type, 4: ev.time, 5: ev.data}
        if ev.flags:
            body[6] = ev.flags
        payload = cbor2.dumps(body, canonical=True)
        protected = cose.protected_header(cose.ALG_HMAC_256_64, ev.device.encode())
        return cose.mac0_tag(device.key, protected, AAD_FRAME, payload) == ev.tag

    def _chain(
        self, gateway: str, epoch: int, seq: int, prev: bytes, digest: bytes, now: float, out: list[dict[str, Any]]
    ) -> str:
        chain = self.chains.get(gateway)
        if chain is None or epoch > chain.epoch:
            if chain is not None:
                out.extend(self._gaps(gateway, chain, now, force=True))
                out.append(self._problem("new_epoch", gateway=gateway, epoch=epoch, previous=chain.epoch))
                chain = self.chains[gateway] = _Chain(epoch)
            else:
                chain = self.chains[gateway] = _Chain(epoch)
                if seq > 1 and epoch <= self.started + JOIN_SKEW_S:
                    # a chain that was running before this verifier started: followed from here
                    chain.contiguous = seq - 1
                    out.append(self._problem("joined", gateway=gateway, epoch=epoch, seq=seq))
        elif epoch < chain.epoch:
            out.append(self._problem("stale_epoch", gateway=gateway, epoch=epoch, current=chain.epoch, seq=seq))
            return "stale"
        known = chain.hashes.get(seq)
        if known is not None:
            if known[0] == digest:
                out.append(self._problem("duplicate_batch", gateway=gateway, epoch=epoch, seq=seq))
                return "duplicate"
            out.append(self._problem("fork", gateway=gateway, epoch=epoch, seq=seq))
            return "fork"
        chain.hashes[seq] = (digest, prev)
        if len(chain.hashes) > MAX_HASHES:
            chain.hashes.popitem(last=False)
        # the link to the batch before, and (when it came first) from the batch after
        before = ZERO_HASH if seq == 1 else chain.hashes.get(seq - 1, (None,))[0]
        if before is not None and before != prev:
            out.append(
                self._problem("chain_break", gateway=gateway, epoch=epoch, seq=seq, detail="prev does not match")
            )
        after = chain.hashes.get(seq + 1)
        if after is not None and after[1] != digest:
            out.append(
                self._problem("chain_break", gateway=gateway, epoch=epoch, seq=seq + 1, detail="prev does not match")
            )
        if seq in chain.missing_since:
            del chain.missing_since[seq]
            out.append(self._problem("reordered", gateway=gateway, epoch=epoch, seq=seq))
        for missing in range(chain.contiguous + 1, seq):
            if missing not in chain.hashes:
                chain.missing_since.setdefault(missing, now)
        while chain.contiguous + 1 in chain.hashes:
            chain.contiguous += 1
        out.extend(self._gaps(gateway, chain, now))
        return "ok"

    def _gaps(self, gateway: str, chain: _Chain, now: float, force: bool = False) -> list[dict[str, Any]]:
        late = sorted(
            s
            for s, since in chain.missing_since.items()
            if s not in chain.reported_gaps and (force or now - since >= self.gap_grace_s)
        )
        if not late:
            return []
        chain.reported_gaps.update(late)
        return [self._problem("gap", gateway=gateway, epoch=chain.epoch, missing=late)]

    def tick(self) -> list[dict[str, Any]]:
        """Report gaps that stayed open longer than the grace period."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        for gateway, chain in self.chains.items():
            out.extend(self._gaps(gateway, chain, now))
        return out

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        now = self.clock()
        for gateway, chain in self.chains.items():
            out.extend(self._gaps(gateway, chain, now, force=True))
        out.append({"kind": "summary", **{k: v for k, v in sorted(self.counts.items())}})
        return out

    @property
    def integrity_ok(self) -> bool:
        return not any(self.counts[k] for k in INTEGRITY_PROBLEMS)


def venue_of(topic: str) -> str | None:
    """The venue of a batch topic, venues/<venue>/gateways/<gw>/batches (docs/protocol.md §5)."""
    parts = topic.split("/")
    return parts[1] if len(parts) == 5 and parts[0] == "venues" and parts[2] == "gateways" else None


def _not_a_map() -> Event:
    raise WireError("malformed", "a batch event is not a map")


def json_line(rec: dict[str, Any]) -> str:
    """A record as one line of JSON (`guardian-agent verify --json`)."""
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False)


async def run_verifier(
    verifier: BatchVerifier,
    host: str,
    port: int,
    topic: str = BATCH_FILTER,
    client_id: str = "ge-verifier",
    count: int | None = None,
    duration: float | None = None,
    out: TextIO = sys.stdout,
    ready: Callable[[], None] | None = None,
    tls: ssl.SSLContext | None = None,
    line: Callable[[dict[str, Any]], str | None] | None = None,
) -> None:
    """Subscribe and print records until `count` events were printed or `duration` passed.

    `line` turns a record into the text printed (None: nothing); default one JSON object per line.
    """
    as_line = line or json_line

    def emit(records: list[dict[str, Any]]) -> None:
        for rec in records:
            text = as_line(rec)
            if text is not None:
                out.write(text + "\n")
        out.flush()

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 24 * 3600
    deadline = None if duration is None else time.monotonic() + duration

    async def consume() -> None:
        # reconnect with the same persistent session: batches queued meanwhile are delivered
        backoff = Backoff(cap=2.0)
        announced: list[bool] = []
        while True:
            try:
                async with aiomqtt.Client(
                    host,
                    port,
                    identifier=client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                    tls_context=tls,
                ) as client:
                    await client.subscribe(topic, qos=1)
                    backoff.reset()
                    if not announced:
                        announced.append(True)
                        if ready is not None:
                            ready()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        emit(verifier.feed(message.topic.value, payload))
                        if count is not None and verifier.counts["events"] >= count:
                            return
            except aiomqtt.MqttError as exc:
                log.warning("central_broker_down host=%s port=%d reason=%r", host, port, str(exc))
            await asyncio.sleep(backoff.next())

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            emit(verifier.tick())

    tick = asyncio.create_task(ticker())
    try:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        await asyncio.wait_for(consume(), remaining)
    except TimeoutError:
        pass
    finally:
        tick.cancel()
        emit(verifier.finish())
