"""A bleak scanner backend that listens to the virtual air (simulation only).

`BleakScanner(backend=SimAirScanner, air=(host, port), name=..., position=(x, y))` registers
with the virtual air (hil_tests/sim/air.py, datagrams in docs/protocol.md §11) as a scanner
standing at `position`, and hands every advert the air delivers to bleak's normal callback
path (`call_detection_callbacks` with a BLEDevice and AdvertisementData), as the BlueZ
backend does for what the controller reports. Only the radio is simulated: everything from
the detection callback on is the production code (agent/gateway/wristbands/source.py).

Datagrams that do not parse, and advertising data that is not a valid sequence of AD
structures, are counted by reason in `rejected` and dropped (the controller drops a bad PDU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner

log = logging.getLogger(__name__)

REFRESH_S = 2.0  # the air drops a scanner it has not heard from for 15 s
_AD_MANUFACTURER = 0xFF
_AD_NAME = (0x08, 0x09)
REASONS = ("malformed", "bad_addr", "bad_rssi", "bad_hex", "bad_ad")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, scanner: SimAirScanner) -> None:
        self.scanner = scanner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.scanner.datagram(data)

    def error_received(self, exc: Exception) -> None:
        # the air is not there (ECONNREFUSED): the scanner hears nothing, the watchdog notices
        self.scanner.errors += 1


def parse_ad(data: bytes) -> tuple[dict[int, bytes], str | None]:
    """(manufacturer data by company id, local name) of advertising data; ValueError if malformed."""
    mfr: dict[int, bytes] = {}
    name = None
    i = 0
    while i < len(data):
        n = data[i]
        if n == 0:  # early end of the significant part
            break
        if i + 1 + n > len(data):
            raise ValueError("AD structure runs past the end")
        ad_type, value = data[i + 1], data[i + 2 : i + 1 + n]
        if ad_type == _AD_MANUFACTURER:
            if len(value) < 2:
                raise ValueError("manufacturer data without a company id")
            mfr[value[0] | value[1] << 8] = bytes(value[2:])
        elif ad_type in _AD_NAME:
            name = value.decode("utf-8", "replace")
        i += 1 + n
    return mfr, name


class SimAirScanner(BaseBleakScanner):
    """bleak backend: a scanner on the virtual air; see the module docstring."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "passive",
        *,
        air: tuple[str, int],
        name: str,
        position: tuple[float, float] = (0.0, 0.0),
        **kwargs: Any,  # the other backends' arguments (bluez=, cb=) that BleakScanner passes on
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.air = air
        self.name = name
        self.position = position
        self.rejected: Counter[str] = Counter()
        self.received = 0
        self.errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.seen_devices = {}
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), remote_addr=self.air)
        self._transport = transport
        self._register()
        self._refresh = asyncio.create_task(self._keep_registered())

    async def stop(self) -> None:
        task, self._refresh = self._refresh, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(OSError):
                transport.sendto(f"bye {self.name}".encode())
            transport.close()

    def _register(self) -> None:
        if self._transport is not None:
            x, y = self.position
            self._transport.sendto(f"scan {self.name} {x:.2f} {y:.2f}".encode())

    async def _keep_registered(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            self._register()

    def datagram(self, data: bytes) -> None:
        """One datagram from the air: `rx <addr> <rssi> <advert hex>`."""
        try:
            addr, rssi, payload, mfr, local_name = _parse_rx(data)
        except _Rejected as exc:
            self.rejected[exc.reason] += 1
            return
        self.received += 1
        address = ":".join(f"{b:02X}" for b in addr)
        adv = AdvertisementData(
            local_name=local_name,
            manufacturer_data=mfr,
            service_data={},
            service_uuids=[],
            tx_power=None,
            rssi=rssi,
            platform_data=(payload,),
        )
        device = self.create_or_update_device(address, address, local_name, None, adv)
        self.call_detection_callbacks(device, adv)


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_rx(data: bytes) -> tuple[bytes, int, bytes, dict[int, bytes], str | None]:
    parts = data.split(b" ")
    if len(parts) != 4 or parts[0] != b"rx":
        raise _Rejected("malformed")
    try:
        if len(parts[1]) != 12:
            raise ValueError("length")
        addr = bytes.fromhex(parts[1].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise _Rejected("bad_addr") from None
    try:
        rssi = int(parts[2])
    except ValueError:
        raise _Rejected("bad_rssi") from None
    if not -127 <= rssi <= 20:
        raise _Rejected("bad_rssi")
    try:
        payload = bytes.fromhex(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise _Rejected("bad_hex") from None
    if not 1 <= len(payload) <= 31:
        raise _Rejected("bad_ad")
    try:
        mfr, local_name = parse_ad(payload)
    except ValueError:
        raise _Rejected("bad_ad") from None
    return addr, rssi, payload, mfr, local_name
