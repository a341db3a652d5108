"""What the benchmarks are built from: real brokers, the real agent, fast devices, central's sink.

- `Rig`: a local and a central Mosquitto (tests' hil_tests/sim/mosquitto.py) and the agent
  as a process (hil_tests/sim/gateway.py), in a temporary directory.
- `FrameFactory`: device frames built fast (precomputed HMAC pads), checked byte for byte
  against the firmware's own builder (firmware/lib/frame.py) for a sample of every shape.
- `Publisher`: one device-side MQTT 3.1.1 connection that writes many pre-built QoS 1
  PUBLISH packets per send() and counts the broker's PUBACKs on a reader thread, so the
  publisher is not what limits the pace.
- `SinkProcess`: tests/bench/sink.py (central's subscriber) as a process, its lines collected.
- `AlarmDevice`: an alarm post's link (the firmware's MQTT client): publishes an alarm and
  times receipt 1 (stored) and receipt 2 (delivered: central's broker acknowledged it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.shared import cose
from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR, REPO_ROOT

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above
from mqtt import MQTTClient

GATEWAY_ID = "GW-1"
VENUE = "venue-1"
_T0 = time.monotonic()


def progress(msg: str) -> None:
    """A progress line on stderr (stdout carries only the JSON results)."""
    sys.stderr.write(f"[bench {time.monotonic() - _T0:7.1f}s] {msg}\n")
    sys.stderr.flush()


# --- numbers ---------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    s = sorted(xs)
    rank = max(1, -(-len(s) * p // 100))  # ceil(n * p / 100)
    return s[int(rank) - 1]


# --- devices and frames ----------------------------------------------------------------


def fleet(n: int, prefix: str = "HB", kind: str = "sensor") -> list[Device]:
    """n devices with deterministic keys."""
    return [
        Device(f"{prefix}-{i:05d}", kind, hashlib.sha256(f"bench {prefix} {i}".encode()).digest(), VENUE, "hall")
        for i in range(1, n + 1)
    ]


def _uint(key: int, value: int) -> bytes:
    return bytes((key,)) + cose.head(0, value)


class FrameFactory:
    """Device frames (docs/protocol.md §2) for many devices, at a few µs each."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self._pads: dict[str, tuple[Any, Any, bytes]] = {}
        for d in devices:
            protected = cose.protected_header(cose.ALG_HMAC_256_64, d.id.encode())
            key = d.key.ljust(64, b"\0")
            inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
            outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
            inner.update(b"\x84\x64MAC0" + cose.bstr(protected) + cose.bstr(fwframe.AAD_FRAME))
            self._pads[d.id] = (inner, outer, b"\xd1\x84" + cose.bstr(protected) + b"\xa0")
        self._keys = {d.id: d.key for d in devices}
        self._checked: set[tuple[str, int, int]] = set()

    def frame(
        self, device: str, boot: int, seq: int, typ: int, time_ms: int, data: dict[int, int], flags: int
    ) -> bytes:
        items = sorted(data.items())
        payload = b"".join(
            (
                b"\xa6" if flags else b"\xa5",
                _uint(1, boot),
                _uint(2, seq),
                _uint(3, typ),
                _uint(4, time_ms),
                b"\x05",
                cose.head(5, len(items)),
                *(cose.head(0, k) + cose.head(0, v) for k, v in items),
                _uint(6, flags) if flags else b"",
            )
        )
        inner, outer, start = self._pads[device]
        body = cose.bstr(payload)
        i = inner.copy()
        i.update(body)
        o = outer.copy()
        o.update(i.digest())
        blob = start + body + b"\x48" + o.digest()[:8]
        shape = (device, typ, flags)
        if shape not in self._checked:
            # the firmware's builder is the reference for every shape this factory makes
            ref = fwframe.build(self._keys[device], device, boot, seq, typ, time_ms, data, flags)
            if ref != blob:
                raise AssertionError(f"frame factory differs from firmware/lib/frame.py: {blob.hex()} {ref.hex()}")
            self._checked.add(shape)
        return blob


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, pid: int) -> bytes:
    """An MQTT 3.1.1 QoS 1 PUBLISH."""
    body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", pid) + payload
    return b"\x32" + varint(len(body)) + body


def packet_payload(packet: bytes) -> bytes:
    """The application payload of a PUBLISH packet built by publish_packet()."""
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    topic_len = packet[i] << 8 | packet[i + 1]
    return packet[i + 2 + topic_len + 2 :]


def heartbeat_packets(
    factory: FrameFactory, devices: Sequence[Device], n: int, boot: int = 1, pid_base: int = 0
) -> list[bytes]:
    """n P2 HEARTBEAT frames (no receipts asked), round-robin over `devices`, as PUBLISH packets."""
    out: list[bytes] = []
    topics = [f"ge/dev/{d.id}/up".encode() for d in devices]
    nd = len(devices)
    for i in range(n):
        k = i % nd
        seq = i // nd + 1
        blob = factory.frame(devices[k].id, boot, seq, fwframe.T_HEARTBEAT, seq * 1000, {1: seq, 2: 0}, 0)
        out.append(publish_packet(topics[k], blob, (pid_base + i) % 65535 + 1))
    return out


# --- MQTT clients on the device side ---------------------------------------------------


class Publisher:
    """Pipelines pre-built QoS 1 PUBLISH packets on one MQTT 3.1.1 connection."""

    MAX_INFLIGHT = 30_000  # below 65535, so a packet id is never reused while in flight

    def __init__(self, broker: tuple[str, int], client_id: str = "bench-pub") -> None:
        self.client = MQTTClient(client_id, broker[0], broker[1], keepalive=0)
        self.client.connect(clean_session=True)
        self.sock: socket.socket = self.client.sock
        self.sock.settimeout(None)
        self.acked = 0
        self.sent = 0
        self.error: str | None = None
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name="bench-pub-acks")
        self._reader.start()

    def _read(self) -> None:
        rest = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                data = rest + chunk
                n = len(data) // 4
                whole = data[: n * 4]
                if whole[0::4] != b"\x40" * n or whole[1::4] != b"\x02" * n:
                    raise ValueError(f"expected only PUBACKs from the broker, got {whole[:64].hex()}...")
                rest = data[n * 4 :]
                with self._cv:
                    self.acked += n
                    self._cv.notify_all()
                if len(chunk) < 4096:
                    # the broker writes each PUBACK on its own: let a few gather, so that this
                    # thread does not take a core from the processes being measured
                    time.sleep(0.001)
        except (OSError, ValueError) as exc:
            with self._cv:
                self.error = str(exc)
                self._cv.notify_all()

    def send(self, packets: Sequence[bytes], chunk: int = 512) -> None:
        """Write every packet, keeping at most MAX_INFLIGHT unacknowledged."""
        for i in range(0, len(packets), chunk):
            part = packets[i : i + chunk]
            with self._cv:
                self._cv.wait_for(lambda: self.sent - self.acked < self.MAX_INFLIGHT or self.error is not None)
                if self.error is not None:
                    raise RuntimeError(f"publisher: {self.error}")
            self.sock.sendall(b"".join(part))
            self.sent += len(part)

    def wait_acked(self, timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self.acked >= self.sent or self.error is not None, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


class AlarmDevice:
    """An alarm post's MQTT link: publish an alarm, time its receipts."""

    def __init__(
        self, broker: tuple[str, int], device: Device, factory: FrameFactory, boot: int = 1, password: str | None = None
    ) -> None:
        self.device = device
        self.factory = factory
        self.boot = boot
        self.seq = 0
        # with a password it logs in as itself, as posts do on the packaged broker
        user = device.id if password is not None else None
        client_id = device.id if password is not None else f"bench-{device.id}"
        self.client = MQTTClient(client_id, broker[0], broker[1], user=user, password=password, keepalive=30)
        self.client.set_callback(self._on_message)
        self.client.connect(clean_session=True)
        self._quickack_opt = getattr(socket, "TCP_QUICKACK", None)
        # The figures are the gateway's, not this socket's: no Nagle (a publish right after the
        # PUBACK of a receipt would wait for the broker's delayed ACK), and ACKs at once (the
        # broker, without TCP_NODELAY by default, holds a receipt that follows its PUBACK to us
        # until that PUBACK is ACKed: up to 40 ms with Linux's delayed ACK)
        self.client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe(f"ge/dev/{device.id}/down", qos=1)
        self._receipts: dict[int, dict[int, float]] = {}  # seq -> kind -> monotonic time

    def _on_message(self, topic: bytes, msg: bytes) -> None:
        t = time.monotonic()
        boot, seq, kind = fwframe.parse_receipt(self.device.key, msg)
        if boot == self.boot:
            self._receipts.setdefault(seq, {}).setdefault(kind, t)

    def _quickack(self) -> None:
        # Linux clears TCP_QUICKACK by itself, so it is set again before every wait
        if self._quickack_opt is not None and self.client.sock is not None:
            self.client.sock.setsockopt(socket.IPPROTO_TCP, self._quickack_opt, 1)

    def alarm(self, timeout: float = 10.0) -> tuple[int, float, float | None, float | None]:
        """Press: (seq, publish time, receipt 1 time, receipt 2 time); None for a missing receipt."""
        self.seq += 1
        seq = self.seq
        blob = self.factory.frame(self.device.id, self.boot, seq, fwframe.T_ALARM, seq, {}, fwframe.FLAG_RECEIPTS)
        self._quickack()
        t0 = time.monotonic()
        self.client.publish(f"ge/dev/{self.device.id}/up", blob, qos=1, wait=False)
        deadline = t0 + timeout
        while fwframe.R_DELIVERED not in self._receipts.get(seq, {}) and time.monotonic() < deadline:
            self._quickack()
            self.client.wait_msg(50)
        got = self._receipts.pop(seq, {})
        return seq, t0, got.get(fwframe.R_STORED), got.get(fwframe.R_DELIVERED)

    def close(self) -> None:
        self.client.disconnect()


# --- central's sink ---------------------------------------------------------------------


class SinkProcess:
    """tests/bench/sink.py as a process; its JSON lines are collected by a reader thread."""

    def __init__(self, broker: tuple[str, int], key_file: Path) -> None:
        self.records: list[dict[str, Any]] = []
        self.events = 0  # device events (batches' events minus the gateway's own)
        self.errors: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self.on_batch: Callable[[dict[str, Any]], None] | None = None
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.sink",
                "--broker",
                f"{broker[0]}:{broker[1]}",
                "--gateway-key",
                str(key_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True, name="bench-sink")
        self._reader.start()
        if not self.wait(lambda: any(r["k"] == "ready" for r in self.records), 15):
            self.close()
            raise RuntimeError("central sink did not start")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            rec = json.loads(line)
            with self._cv:
                if rec["k"] == "batch":
                    self.events += rec["n"] - rec["gw"]
                    if self.on_batch is not None:
                        self.on_batch(rec)
                elif rec["k"] == "error":
                    self.errors.append(rec)
                self.records.append(rec)
                self._cv.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(predicate, timeout)

    def wait_events(self, n: int, timeout: float) -> bool:
        return self.wait(lambda: self.events >= n, timeout)

    def batches(self) -> list[dict[str, Any]]:
        with self._cv:
            return [r for r in self.records if r["k"] == "batch"]

    def first(self, kind: str, value: str | None = None) -> dict[str, Any] | None:
        with self._cv:
            return next((r for r in self.records if r["k"] == kind and (value is None or r.get("v") == value)), None)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# --- the rig ---------------------------------------------------------------------------


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Rig:
    """Local and central Mosquitto plus the agent, in a temporary directory; a context manager."""

    def __init__(
        self, devices: Sequence[Device], name: str, extra_config: str = "", start_central: bool = True
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"ge-bench-{name}-"))
        # the brokers as the tests run them (Mosquitto's defaults, unlimited queues)
        self.local = Mosquitto(self.dir / "local", name="local")
        self.central = Mosquitto(self.dir / "central", name="central")
        self.local.start()
        if start_central:
            self.central.start()
        self.agent = AgentProcess(
            self.dir / "gw",
            self.local.address,
            self.central.address,
            devices,
            gateway_id=GATEWAY_ID,
            venue=VENUE,
            extra_config=extra_config,
        )
        # one gateway heartbeat per start (at start), which the sink counts apart
        cfg = self.agent.config_file.read_text()
        self.agent.config_file.write_text(cfg.replace("[gateway]\n", "[gateway]\nheartbeat_s = 3600\n", 1))
        self.sink: SinkProcess | None = None

    def start_sink(self) -> SinkProcess:
        self.sink = SinkProcess(self.central.address, self.agent.public_key_file)
        return self.sink

    def agent_counters(self) -> dict[str, str]:
        """The agent's counters from its `agent_stopped` line (stops it)."""
        self.agent.stop(60)
        return self.agent.stats()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        self.agent.kill()
        self.local.kill()
        self.central.kill()
        if os.environ.get("GE_BENCH_KEEP"):
            progress(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    t = time.monotonic()
    yield
    progress(f"{what}: {time.monotonic() - t:.1f}s")
