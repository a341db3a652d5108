"""The virtual air: BLE adverts between virtual wristbands and scanners over loopback UDP.

Simulation at the radio boundary only (DESIGN.md invariant 5): a band's firmware hands its
advert bytes to the radio (firmware/hal/unix.py `Board.radio()`), the radio sends them here
with the band's position, and every registered scanner (agent/gateway/wristbands/sim_scanner.py, the bleak
backend used in simulation) gets a copy with an RSSI from a log-distance path-loss model:

    rssi = tx_power_dbm - 10 * exponent * log10(max(d, 0.5 m)) - wall_db (other room) + N(0, shadowing_db)

A copy is lost with probability `loss`, and always when the RSSI is below `sensitivity_dbm`.
The noise and the losses come from one random.Random(seed), so a run is repeatable for the
same order of datagrams. Datagrams (docs/protocol.md §11, simulation only), ASCII, fields
separated by one space:

    band    -> air      adv <addr> <x> <y> <advert>      addr: 12 hex digits, advert: hex
    scanner -> air      scan <name> <x> <y>              register or refresh (every <= 5 s)
    scanner -> air      bye <name>                       unregister
    air     -> scanner  rx <addr> <rssi> <advert>        one received copy
    control -> air      mute <name> <0|1>                a scanner's radio goes deaf (1) or back (0)

A scanner not heard from for `scanner_ttl_s` is dropped. Every datagram that does not parse
is counted by reason in `rejected` and otherwise ignored.

Venue description (YAML), positions in metres:

    name: care-home
    model: {tx_power_dbm: -59, exponent: 2.2, shadowing_db: 3, loss: 0.02,
            sensitivity_dbm: -97, wall_db: 6, seed: 1}
    zones:                                  # rooms, corridors, exits: rectangles
      - {name: lounge, rect: [0, 0, 10, 8]}               # x0, y0, x1, y1
      - {name: front-door, rect: [10, 0, 12, 3], exit: true}
    scanners:
      - {name: scan-lounge, at: [5, 4]}
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

MAX_DATAGRAM = 512
ADVERT_MAX = 31
SCANNER_TTL_S = 15.0
NAME_MAX = 32
REASONS = ("malformed", "unknown_verb", "bad_name", "bad_number", "bad_hex", "unknown_scanner")


class VenueError(ValueError):
    """A venue description that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    rect: tuple[float, float, float, float]  # x0, y0, x1, y1 with x0 < x1, y0 < y1
    exit: bool = False

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.rect
        return x0 <= x <= x1 and y0 <= y <= y1

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.rect
        return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass(frozen=True, slots=True)
class Model:
    tx_power_dbm: float = -59.0  # RSSI at 1 m
    exponent: float = 2.2
    shadowing_db: float = 3.0
    loss: float = 0.02
    sensitivity_dbm: float = -97.0
    wall_db: float = 6.0  # band and scanner in different zones (or one outside every zone)
    seed: int = 1


@dataclass(frozen=True, slots=True)
class Venue:
    name: str
    model: Model
    zones: tuple[Zone, ...]
    scanners: dict[str, tuple[float, float]] = field(default_factory=dict)

    def zone_at(self, x: float, y: float) -> Zone | None:
        for z in self.zones:
            if z.contains(x, y):
                return z
        return None

    def zone(self, name: str) -> Zone:
        for z in self.zones:
            if z.name == name:
                return z
        raise KeyError(name)


def _number(where: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise VenueError(f"{where}: expected a number, got {v!r}")
    return float(v)


def _point(where: str, v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise VenueError(f"{where}: expected [x, y], got {v!r}")
    return _number(where, v[0]), _number(where, v[1])


def _name(where: str, v: Any) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= NAME_MAX or not all(c.isalnum() or c in "._-" for c in v):
        raise VenueError(f"{where}: expected a name of 1-32 characters from A-Z a-z 0-9 . _ -, got {v!r}")
    return v


def _keys(where: str, d: dict[str, Any], known: tuple[str, ...]) -> None:
    for k in d:
        if k not in known:
            raise VenueError(f"{where}.{k}: unknown key (known: {', '.join(known)})")


def parse_venue(data: Any, source: str = "venue") -> Venue:
    """A venue from its YAML data; VenueError names the key that is wrong."""
    if not isinstance(data, dict):
        raise VenueError(f"{source}: expected a mapping at the top")
    _keys(source, data, ("name", "model", "zones", "scanners"))
    name = _name(f"{source}: name", data.get("name", "venue"))
    return Venue(
        name,
        _model(source, data.get("model", {})),
        _zones(source, data.get("zones", [])),
        _scanners(source, data.get("scanners", [])),
    )


def _model(source: str, m: Any) -> Model:
    if not isinstance(m, dict):
        raise VenueError(f"{source}: model: expected a mapping")
    _keys(f"{source}: model", m, Model.__slots__)
    defaults = Model()
    kw: dict[str, Any] = {}
    for key in Model.__slots__:
        if key in m:
            v = _number(f"{source}: model.{key}", m[key])
            kw[key] = int(v) if key == "seed" else v
    model = Model(**{**{k: getattr(defaults, k) for k in Model.__slots__}, **kw})
    if not 0 <= model.loss < 1 or model.exponent <= 0 or model.shadowing_db < 0:
        raise VenueError(f"{source}: model: loss must be in [0, 1), exponent > 0, shadowing_db >= 0")
    return model


def _zones(source: str, raw: Any) -> tuple[Zone, ...]:
    if not isinstance(raw, list) or not raw:
        raise VenueError(f"{source}: zones: expected a non-empty list")
    zones: list[Zone] = []
    for i, z in enumerate(raw):
        where = f"{source}: zones[{i}]"
        if not isinstance(z, dict):
            raise VenueError(f"{where}: expected a mapping")
        _keys(where, z, ("name", "rect", "exit"))
        r = z.get("rect")
        if not isinstance(r, list) or len(r) != 4:
            raise VenueError(f"{where}.rect: expected [x0, y0, x1, y1], got {r!r}")
        x0, y0, x1, y1 = (_number(f"{where}.rect", v) for v in r)
        if not (x0 < x1 and y0 < y1):
            raise VenueError(f"{where}.rect: expected x0 < x1 and y0 < y1, got {r!r}")
        ex = z.get("exit", False)
        if not isinstance(ex, bool):
            raise VenueError(f"{where}.exit: expected true or false")
        zname = _name(f"{where}.name", z.get("name"))
        if any(o.name == zname for o in zones):
            raise VenueError(f"{where}.name: duplicate zone {zname!r}")
        zones.append(Zone(zname, (x0, y0, x1, y1), ex))
    return tuple(zones)


def _scanners(source: str, raw: Any) -> dict[str, tuple[float, float]]:
    if not isinstance(raw, list):
        raise VenueError(f"{source}: scanners: expected a list")
    scanners: dict[str, tuple[float, float]] = {}
    for i, s in enumerate(raw):
        where = f"{source}: scanners[{i}]"
        if not isinstance(s, dict):
            raise VenueError(f"{where}: expected a mapping")
        _keys(where, s, ("name", "at"))
        sname = _name(f"{where}.name", s.get("name"))
        if sname in scanners:
            raise VenueError(f"{where}.name: duplicate scanner {sname!r}")
        scanners[sname] = _point(f"{where}.at", s.get("at"))
    return scanners


def load_venue(path: Path) -> Venue:
    """Read a venue YAML file; VenueError names the file and the key."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise VenueError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise VenueError(f"{path}: not valid YAML: {exc}") from exc
    return parse_venue(data, str(path))


class AirRejected(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Scanner:
    addr: tuple[str, int]
    x: float
    y: float
    seen: float
    muted: bool = False


def _float(b: bytes) -> float:
    try:
        v = float(b)
    except ValueError:
        raise AirRejected("bad_number") from None
    if not math.isfinite(v) or abs(v) > 1e6:
        raise AirRejected("bad_number")
    return v


def _word(b: bytes) -> str:
    if not 1 <= len(b) <= NAME_MAX or not all(c in b"._-" or chr(c).isalnum() for c in b):
        raise AirRejected("bad_name")
    return b.decode("ascii")


def _hex(b: bytes, lo: int, hi: int) -> bytes:
    try:
        v = bytes.fromhex(b.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise AirRejected("bad_hex") from None
    if not lo <= len(v) <= hi:
        raise AirRejected("bad_hex")
    return v


class VirtualAir:
    """The air as a thread with one UDP socket on loopback; see the module docstring.

    Args:
        venue: zones, scanner placement and the radio model.
        host, port: where to listen (port 0: a free one; see `address`).
    """

    def __init__(self, venue: Venue, host: str = "127.0.0.1", port: int = 0) -> None:
        self.venue = venue
        self.model = venue.model
        self.rng = random.Random(self.model.seed)
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.setblocking(False)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._scanners: dict[str, _Scanner] = {}
        self._muted: set[str] = set()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self.log: list[tuple[float, bytes, float, float, bytes]] = []  # (time, addr, x, y, advert)
        self._thread = threading.Thread(target=self._run, name="virtual-air", daemon=True)
        self._thread.start()

    # --- control from the test process ------------------------------------------------

    def mute(self, scanner: str, muted: bool = True) -> None:
        """Make a scanner's radio deaf (nothing is delivered to it) or hear again."""
        with self._lock:
            if muted:
                self._muted.add(scanner)
            else:
                self._muted.discard(scanner)

    def scanners(self) -> dict[str, tuple[float, float]]:
        """Registered scanners and their positions (a copy)."""
        with self._lock:
            return {n: (s.x, s.y) for n, s in self._scanners.items()}

    def wait_scanners(self, names: set[str], timeout: float = 10.0) -> None:
        """Wait until every scanner in `names` has registered."""
        with self._cv:
            if not self._cv.wait_for(lambda: names <= self._scanners.keys(), timeout):
                raise TimeoutError(f"scanners {sorted(names - self._scanners.keys())} did not register in {timeout}s")

    def adverts(self, since: int = 0) -> list[tuple[float, bytes, float, float, bytes]]:
        """Adverts the air carried, oldest first: (monotonic time, address, x, y, advert bytes)."""
        with self._lock:
            return list(self.log[since:])

    def wait_advert(
        self, predicate: Any, timeout: float = 10.0, since: int = 0
    ) -> tuple[float, bytes, float, float, bytes]:
        """The first advert from `since` on for which predicate(advert bytes) is true."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for entry in self.log[since:]:
                    if predicate(entry[4]):
                        return entry
                since = len(self.log)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching advert within {timeout}s")
                self._cv.wait(left)

    def transmit(self, addr: bytes, x: float, y: float, advert: bytes) -> None:
        """Send an advert from (x, y) as a band would (a test playing an attacker)."""
        msg = b"adv %s %.2f %.2f %s" % (addr.hex().encode(), x, y, advert.hex().encode())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(msg, self.address)

    def rssi(self, bx: float, by: float, sx: float, sy: float) -> float:
        """One draw of the RSSI a scanner at (sx, sy) sees from a band at (bx, by)."""
        m = self.model
        d = max(math.hypot(bx - sx, by - sy), 0.5)
        rssi = m.tx_power_dbm - 10 * m.exponent * math.log10(d)
        zb, zs = self.venue.zone_at(bx, by), self.venue.zone_at(sx, sy)
        if zb is None or zb != zs:
            rssi -= m.wall_db
        return rssi + self.rng.gauss(0.0, m.shadowing_db)

    # --- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop:
            poller.poll(1000)
            while True:
                try:
                    data, src = self._sock.recvfrom(MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                try:
                    self._datagram(data, src)
                except AirRejected as exc:
                    with self._cv:
                        self.rejected[exc.reason] += 1
                        self._cv.notify_all()
            self._expire()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for name in [n for n, s in self._scanners.items() if now - s.seen > SCANNER_TTL_S]:
                del self._scanners[name]
                self.counts["expired"] += 1

    def _datagram(self, data: bytes, src: tuple[str, int]) -> None:
        if len(data) > MAX_DATAGRAM:
            raise AirRejected("malformed")
        parts = data.split(b" ")
        verb = parts[0]
        if verb == b"adv":
            if len(parts) != 5:
                raise AirRejected("malformed")
            addr = _hex(parts[1], 6, 6)
            x, y = _float(parts[2]), _float(parts[3])
            advert = _hex(parts[4], 1, ADVERT_MAX)
            self._deliver(addr, x, y, advert)
        elif verb == b"scan":
            if len(parts) != 4:
                raise AirRejected("malformed")
            name = _word(parts[1])
            x, y = _float(parts[2]), _float(parts[3])
            with self._cv:
                s = self._scanners.get(name)
                if s is None or s.addr != src:
                    self.counts["registered"] += 1
                self._scanners[name] = _Scanner(src, x, y, time.monotonic())
                self._cv.notify_all()
        elif verb == b"bye":
            if len(parts) != 2:
                raise AirRejected("malformed")
            name = _word(parts[1])
            with self._cv:
                if self._scanners.pop(name, None) is None:
                    raise AirRejected("unknown_scanner")
                self._cv.notify_all()
        elif verb == b"mute":
            if len(parts) != 3 or parts[2] not in (b"0", b"1"):
                raise AirRejected("malformed")
            self.mute(_word(parts[1]), parts[2] == b"1")
        else:
            raise AirRejected("unknown_verb")

    def _deliver(self, addr: bytes, x: float, y: float, advert: bytes) -> None:
        m = self.model
        out: list[tuple[tuple[str, int], bytes]] = []
        with self._cv:
            self.log.append((time.monotonic(), addr, x, y, advert))
            if len(self.log) > 100_000:
                del self.log[:50_000]
            self.counts["adverts"] += 1
            self._cv.notify_all()
            for name, s in self._scanners.items():
                if name in self._muted:
                    continue
                rssi = self.rssi(x, y, s.x, s.y)
                if rssi < m.sensitivity_dbm or self.rng.random() < m.loss:
                    self.counts["lost"] += 1
                    continue
                out.append((s.addr, b"rx %s %d %s" % (addr.hex().encode(), round(rssi), advert.hex().encode())))
        for dest, msg in out:
            with contextlib.suppress(OSError):
                self._sock.sendto(msg, dest)
                self.counts["delivered"] += 1

    # --- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(5)
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> VirtualAir:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m hil_tests.sim.air VENUE.yaml [--port N]`: the air as a process."""
    ap = argparse.ArgumentParser(prog="ge-air", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("venue", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        venue = load_venue(args.venue)
    except VenueError as exc:
        print(f"ge-air: {exc}")
        return 1
    air = VirtualAir(venue, args.host, args.port)
    print(f"ge-air: listening on {air.address[0]}:{air.address[1]}", flush=True)
    try:
        while True:
            time.sleep(60)
            print(f"ge-air: {dict(air.counts)} rejected {dict(air.rejected)}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        air.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
