"""Serial ports: device frames in, receipts out, over a UART (docs/protocol.md §9).

Each [[serial]] port is opened with pyserial-asyncio and read as a byte stream. The framing
(COBS of payload || CRC-32, 0x00 delimited) is undone here with the `cobs` package, and each
payload enters the same pipeline as a frame from the local broker (`Pipeline.ingest`: the same
acceptance order and counters), as source ``serial:<port>``. Framing rejects are counted by
reason in `SerialCounters.rejected` and logged, throttled, with the port.

Receipts go back the way the device spoke: each port registers with the receipt router
(agent/gateway/receipts.py) under its source name, the router remembers the source of each device's
last verified frame, and a receipt for a device last heard on a port is written to that port
(after the durable commit, when the pipeline sends receipt 1); every other receipt goes to the
local broker. The port is the device's link: there is no broker session or last will, and no
link-level acknowledgement (the device's outbox sends a frame again until its receipt comes).

A port that cannot be opened, or that disappears (a USB adapter unplugged: EIO), is reopened
with backoff. Memory per port is bounded whatever arrives: the deframer holds at most one
frame, reading pauses while too many frames wait for their commit, and receipts waiting to be
written are bounded (beyond that they are dropped and counted; the device asks again).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

import serial_asyncio
from cobs import cobs

from agent.gateway.config import SerialConfig
from agent.gateway.pipeline import Ingest
from agent.gateway.receipts import ReceiptRouter
from agent.gateway.stats import SerialCounters
from agent.shared.backoff import Backoff
from agent.shared.errors import WireError
from agent.shared.log import Throttle

log = logging.getLogger(__name__)

CRC_LEN = 4
REASONS = ("partial", "oversize", "cobs", "crc", "short")
# Receipts (about 40 bytes each) waiting for the port; a port nobody reads stops here.
WRITE_LIMIT = 64 * 1024
# Frames handed to the pipeline and not yet durable; reading pauses above this, resumes at half.
MAX_UNSETTLED = 1024
# A local port is cheap to try: look for it again within 2 s, so a post plugged back in is
# heard quickly.
OPEN_BACKOFF_BASE_S = 0.2
OPEN_BACKOFF_CAP_S = 2.0


def max_encoded(max_payload: int) -> int:
    """Most bytes between two delimiters for a payload of up to `max_payload` bytes."""
    n = max_payload + CRC_LEN
    return n + 1 + n // 254


def encode_frame(payload: bytes) -> bytes:
    """The bytes written for one payload: 0x00, COBS(payload || CRC-32 little-endian), 0x00."""
    body = payload + zlib.crc32(payload).to_bytes(CRC_LEN, "little")
    return b"\x00" + bytes(cobs.encode(body)) + b"\x00"


def unframe(body: bytes, max_payload: int) -> bytes:
    """The payload of the bytes between two delimiters; WireError with the counted reason."""
    if len(body) > max_encoded(max_payload):
        raise WireError("oversize", f"{len(body)} bytes between delimiters > {max_encoded(max_payload)}")
    try:
        raw = bytes(cobs.decode(body))
    except cobs.DecodeError as exc:
        raise WireError("cobs", f"not a COBS encoding: {exc}") from exc
    if len(raw) <= CRC_LEN:
        raise WireError("short", f"{len(raw)} bytes after COBS decoding; a frame holds a payload and a 4-byte CRC")
    payload = raw[:-CRC_LEN]
    if len(payload) > max_payload:
        raise WireError("oversize", f"payload of {len(payload)} bytes > {max_payload}")
    got = int.from_bytes(raw[-CRC_LEN:], "little")
    want = zlib.crc32(payload)
    if got != want:
        raise WireError("crc", f"CRC-32 {got:08x}, computed {want:08x} over {len(payload)} bytes")
    return payload


class Deframer:
    """Cuts a byte stream into payloads; holds at most one frame (`max_encoded` bytes).

    Bytes before the first 0x00 are the tail of a frame whose start was missed (`partial`); a
    frame longer than the bound is dropped up to the next 0x00 (`oversize`, counted once);
    empty frames (0x00 0x00) are nothing. See docs/protocol.md §9.
    """

    __slots__ = ("_buf", "_hunted", "_hunting", "_skipping", "max_encoded", "max_payload")

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.max_encoded = max_encoded(max_payload)
        self._buf = bytearray()
        self._hunting = True
        self._hunted = 0
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | WireError]:
        """Payloads and rejections in `data`, in stream order."""
        out: list[bytes | WireError] = []
        parts = data.split(b"\x00")
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if part:
                self._take(part, out)
            if i < last:
                self._end(out)
        return out

    def close(self) -> list[bytes | WireError]:
        """The stream ended (port closed): a frame begun is a partial one."""
        out: list[bytes | WireError] = []
        if self._buf and not self._hunting and not self._skipping:
            out.append(WireError("partial", f"{len(self._buf)} bytes of a frame cut off when the port closed"))
        self._buf.clear()
        self._hunting, self._hunted, self._skipping = True, 0, False
        return out

    def _take(self, part: bytes, out: list[bytes | WireError]) -> None:
        if self._skipping:
            return
        if self._hunting:
            self._hunted += len(part)
            return
        if len(self._buf) + len(part) > self.max_encoded:
            out.append(WireError("oversize", f"more than {self.max_encoded} bytes without a delimiter; dropped"))
            self._buf.clear()
            self._skipping = True
            return
        self._buf += part

    def _end(self, out: list[bytes | WireError]) -> None:
        if self._skipping:
            self._skipping = False
            return
        if self._hunting:
            self._hunting = False
            if self._hunted:
                out.append(WireError("partial", f"{self._hunted} bytes before the first delimiter"))
                self._hunted = 0
            return
        if not self._buf:
            return
        body = bytes(self._buf)
        self._buf.clear()
        try:
            out.append(unframe(body, self.max_payload))
        except WireError as exc:
            out.append(exc)


class _Protocol(asyncio.Protocol):
    def __init__(self, port: SerialPort, lost: asyncio.Future[str]) -> None:
        self.port = port
        self.lost = lost
        self.deframer = Deframer(port.max_frame)

    def data_received(self, data: bytes) -> None:
        self.port.received(data, self.deframer.feed(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.received(b"", self.deframer.close())
        if not self.lost.done():
            self.lost.set_result(str(exc) if exc is not None else "closed")


class SerialPort:
    """One [[serial]] port: read, deframe, ingest; receipts written back; reopened with backoff."""

    def __init__(
        self, cfg: SerialConfig, *, ingest: Ingest, receipts: ReceiptRouter, counters: SerialCounters, max_frame: int
    ) -> None:
        self.cfg = cfg
        self.name = f"serial:{cfg.port}"
        self.ingest = ingest
        self.counters = counters  # shared by the ports of one SerialSources
        self.max_frame = max_frame
        self.backoff = Backoff(OPEN_BACKOFF_BASE_S, OPEN_BACKOFF_CAP_S)
        self.connected = asyncio.Event()
        self._transport: Any = None  # serial_asyncio.SerialTransport while the port is open
        self._unsettled = 0
        self._paused = False
        self._reject_log = Throttle()
        self._down_log = Throttle(60.0)
        receipts.register(self.name, self.send)

    def send(self, device_id: str, payload: bytes) -> None:
        """Write one receipt; dropped (and counted) when the port is down or not draining."""
        t = self._transport
        if t is None or t.is_closing() or t.get_write_buffer_size() > WRITE_LIMIT:
            self.counters.receipts_dropped += 1
            return
        t.write(encode_frame(payload))

    async def run(self) -> None:
        while True:
            try:
                reason = await self._session()
            except (OSError, ValueError) as exc:  # serial.SerialException is an OSError; bad settings ValueError
                reason = str(exc)
            suppressed = self._down_log.allow(reason)
            if suppressed is not None:
                log.warning(
                    "serial_port_down port=%s reason=%r suppressed_since_last=%d", self.cfg.port, reason, suppressed
                )
            await asyncio.sleep(self.backoff.next())

    async def _session(self) -> str:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()
        transport, _ = await serial_asyncio.create_serial_connection(
            loop, lambda: _Protocol(self, lost), str(self.cfg.port), baudrate=self.cfg.baudrate
        )
        self._transport = transport
        self._paused = False
        self.connected.set()
        log.info("serial_port_up port=%s baudrate=%d device=%s", self.cfg.port, self.cfg.baudrate, self.cfg.device)
        try:
            return await lost
        finally:
            self.connected.clear()
            self._transport = None
            transport.close()

    def received(self, data: bytes, items: list[bytes | WireError]) -> None:
        counters = self.counters
        counters.bytes += len(data)
        if data:
            # the port works: the next reopen is quick again (a port that opens and fails at
            # once keeps backing off instead)
            self.backoff.reset()
        for item in items:
            if isinstance(item, bytes):
                counters.frames += 1
                self._unsettled += 1
                self.ingest(item, self.cfg.device, self._settled, self.name)
            else:
                self._rejected(item)
        if self._unsettled > MAX_UNSETTLED and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _settled(self) -> None:
        self._unsettled -= 1
        if self._paused and self._unsettled <= MAX_UNSETTLED // 2:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()

    def _rejected(self, exc: WireError) -> None:
        self.counters.rejected[exc.reason] += 1
        suppressed = self._reject_log.allow(exc.reason)
        if suppressed is not None:
            log.warning(
                "serial_frame_rejected port=%s reason=%s detail=%r suppressed_since_last=%d",
                self.cfg.port,
                exc.reason,
                exc.detail[:200],
                suppressed,
            )


class SerialSources:
    """The [[serial]] ports; each registers as the receipt route of the devices heard on it."""

    def __init__(
        self, ports: Sequence[SerialConfig], *, ingest: Ingest, receipts: ReceiptRouter, max_frame: int
    ) -> None:
        self.counters = SerialCounters()
        self.ports = {
            p.name: p
            for p in (
                SerialPort(cfg, ingest=ingest, receipts=receipts, counters=self.counters, max_frame=max_frame)
                for cfg in ports
            )
        }

    async def run(self) -> None:
        if not self.ports:
            await asyncio.Event().wait()  # no ports: idle for the gateway's lifetime
        await asyncio.gather(*(port.run() for port in self.ports.values()))
