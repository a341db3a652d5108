"""The serial link (docs/protocol.md §9) with real processes: alarm posts running the firmware
on virtual boards with `"transport": "uart"` (the UART is a pty), the agent reading the port
with its serial source (pyserial-asyncio), real Mosquitto brokers and the central verifier.
Also: the [[serial]] config checks, and 100,000 random and mutated serial frames and bytes
pushed through a pty into the live agent with good frames interleaved.
"""

from __future__ import annotations

import errno
import os
import random
import select
import sys
import time
import tty
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2
import pytest
from cobs import cobs

from agent.gateway.config import load_config
from agent.shared.errors import ConfigError
from agent.shared.registry import Device, write_registry
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import firmware_files
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR
from tests import oracle

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware module, found through the path above

KEY = bytes([0x5E]) * 32
OTHER_KEY = bytes([0x5F]) * 32  # the bad items' device frames carry a MAC under this key
DEVICE = "AP-0301"
DEVICES = [Device(DEVICE, "alarm_post", KEY, "venue-1", "hall")]
SERIAL_REASONS = {"partial", "oversize", "cobs", "crc", "short"}


def serial_section(port: Path, device: str | None = DEVICE) -> str:
    lines = ["[[serial]]", f'port = "{port}"', "baudrate = 115200"]
    if device is not None:
        lines.append(f'device = "{device}"')
    return "\n".join(lines)


def wire(payload: bytes) -> bytes:
    """What a sender writes for one payload, built with the `cobs` package and zlib."""
    return b"\x00" + bytes(cobs.encode(payload + zlib.crc32(payload).to_bytes(4, "little"))) + b"\x00"


def wait_until(what: str, check: Callable[[], bool], timeout: float, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        time.sleep(0.02)  # polls a log file or process state, with a deadline


def alarms(verifier: CentralVerifier) -> list[tuple[int, int]]:
    return sorted((e["boot"], e["seq"]) for e in verifier.events(device=DEVICE, type_name="ALARM"))


# --- [[serial]] in the agent config ----------------------------------------------------------

BASE = """
[gateway]
id = "GW-1"
venue = "v1"
data_dir = "data"
devices_file = "devices.toml"
[local]
host = "127.0.0.1"
[central]
host = "127.0.0.1"
"""


def _config(tmp_path: Path, extra: str) -> Path:
    write_registry(tmp_path / "devices.toml", DEVICES)
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra)
    return path


def test_serial_config_is_read(tmp_path: Path) -> None:
    cfg = load_config(
        _config(
            tmp_path,
            '[[serial]]\nport = "/dev/ttyUSB0"\n[[serial]]\nport = "ports/post"\nbaudrate = 9600\ndevice = "AP-0301"\n',
        )
    )
    assert [(s.port, s.baudrate, s.device) for s in cfg.serial] == [
        (Path("/dev/ttyUSB0"), 115200, None),
        (tmp_path / "ports/post", 9600, "AP-0301"),
    ]
    assert load_config(_config(tmp_path, "")).serial == ()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[serial]\nport = "/dev/ttyUSB0"\n', "serial: expected an array of tables ([[...]])"),
        ("[[serial]]\nbaudrate = 9600\n", "serial[0].port: missing (required)"),
        ('[[serial]]\nport = ""\n', "serial[0].port: expected the path of a serial device"),
        ("[[serial]]\nport = 5\n", "serial[0].port: expected a string, got int 5"),
        ('[[serial]]\nport = "/dev/ttyS0"\nbaudrate = "fast"\n', "serial[0].baudrate: expected an integer, got str"),
        ('[[serial]]\nport = "/dev/ttyS0"\nbaudrate = 10\n', "serial[0].baudrate: expected an integer in 50..4000000"),
        ('[[serial]]\nport = "/dev/ttyS0"\ndevice = "AP 1"\n', "serial[0].device: expected 1-32 characters"),
        ('[[serial]]\nport = "/dev/ttyS0"\nspeed = 9600\n', "serial[0].speed: unknown key"),
        (
            '[[serial]]\nport = "/dev/ttyS0"\n[[serial]]\nport = "/dev/ttyS0"\n',
            "serial[1].port: /dev/ttyS0 is already serial[0].port",
        ),
    ],
)
def test_bad_serial_config_names_file_and_key(tmp_path: Path, extra: str, message: str) -> None:
    path = _config(tmp_path, extra)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and message in str(exc.value), str(exc.value)


# --- an alarm post on a UART ------------------------------------------------------------------


class SerialVenue:
    """Brokers, the agent with a [[serial]] port, the verifier, and UART alarm posts."""

    def __init__(self, workdir: Path, local: Mosquitto, central: Mosquitto, micropython: str) -> None:
        self.workdir = workdir
        self.micropython = micropython
        self.board_dir = workdir / DEVICE
        self.uart_path = self.board_dir / "uart"  # VirtualBoard(uart=True) puts its link here
        self.agent = AgentProcess(
            workdir / "gw", local.address, central.address, DEVICES, extra_config=serial_section(self.uart_path)
        )
        self.verifier = CentralVerifier(central.address, [self.agent.public_key_file])
        self.boards: list[VirtualBoard] = []

    def start(self) -> None:
        self.verifier.start()
        self.agent.start()
        self.agent.wait_log("uplink_up")

    def post(self) -> VirtualBoard:
        board = VirtualBoard(DEVICE, self.board_dir, micropython=self.micropython, uart=True)
        self.boards.append(board)
        assert board.uart_path == self.uart_path
        return board

    def logged(self, needle: str) -> int:
        return self.agent.log_text(since_start=True).count(needle)

    def wait_logged(self, needle: str, n: int, timeout: float = 15) -> None:
        wait_until(f"{n}x {needle!r} in the agent log", lambda: self.logged(needle) >= n, timeout, self.agent.log_tail)

    def close(self) -> None:
        for board in self.boards:
            board.close()
        self.verifier.stop()
        self.agent.kill()


@pytest.fixture
def venue(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str) -> Iterator[SerialVenue]:
    v = SerialVenue(tmp_path, *broker_pair, micropython)
    try:
        v.start()
        yield v
    finally:
        v.close()


def flash(board: VirtualBoard) -> None:
    board.install(
        firmware_files("alarm_post"), {"kind": "alarm_post", "id": DEVICE, "key": KEY.hex(), "transport": "uart"}
    )


def press_until_green(post: VirtualBoard, venue: SerialVenue, boot: int) -> None:
    mark = post.console_offset
    post.click()
    post.wait_console(f"{boot}/2 type 1 saved", since=mark)
    post.wait_led("green", timeout=20)
    log = post.console_output(mark).decode()
    assert log.index(f"{boot}/2 stored at the gateway") < log.index(f"{boot}/2 delivered"), log
    assert venue.verifier.wait_for(lambda: (boot, 2) in alarms(venue.verifier), 15), alarms(venue.verifier)


def test_uart_post_press_verified_at_central_and_power_cut(venue: SerialVenue) -> None:
    post = venue.post()
    flash(post)
    post.power_on()
    post.wait_console("alarm_post: connected to uart", timeout=10)
    venue.wait_logged("serial_port_up", 1)
    press_until_green(post, venue, boot=1)
    seen = [c for _, c in post.led_history]
    assert seen[0] == "amber" and seen[-1] == "green" and set(seen) <= {"amber", "blue", "green"}, seen

    # power cut and restart: a new boot on the same port, whose path did not change
    post.power_cut()
    post.power_on()
    post.wait_console("alarm_post: connected to uart", timeout=10)
    press_until_green(post, venue, boot=2)
    assert alarms(venue.verifier) == [(1, 2), (2, 2)]
    online = venue.verifier.events(device=DEVICE, type_name="ONLINE")
    assert venue.verifier.wait_for(lambda: len(venue.verifier.events(device=DEVICE, type_name="ONLINE")) == 2, 15)
    assert sorted((e["boot"], e["seq"]) for e in venue.verifier.events(device=DEVICE, type_name="ONLINE")) == [
        (1, 1),
        (2, 1),
    ], online
    assert venue.logged("serial_port_up") == 1  # the port stayed open across the power cycle
    assert [p for p in venue.verifier.problems() if p["kind"] != "new_epoch"] == []
    venue.agent.stop()
    stats = venue.agent.stats()
    assert "bad_mac" not in stats["rejected"] and "malformed" not in stats["rejected"], stats


def test_port_missing_at_start_and_unplugged_is_reopened(venue: SerialVenue) -> None:
    # the agent started before the post's port existed: it keeps trying
    venue.wait_logged("serial_port_down", 1)
    assert venue.logged("serial_port_up") == 0
    post = venue.post()
    flash(post)
    venue.wait_logged("serial_port_up", 1)
    post.power_on()
    press_until_green(post, venue, boot=1)

    # the port disappears (the adapter is unplugged: the pty closes, the link is removed) ...
    post.close()
    venue.wait_logged("serial_port_down", 2)
    # ... and comes back, with the post on it (its flash kept)
    post = venue.post()
    post.power_on()
    venue.wait_logged("serial_port_up", 2)
    press_until_green(post, venue, boot=2)
    assert alarms(venue.verifier) == [(1, 2), (2, 2)]


# --- 100,000 bad serial frames and bytes through the live agent -------------------------------

BAD = 100_000
EVERY = 100  # one good frame after every EVERY bad items


def good_frame(seq: int, key: bytes = KEY) -> bytes:
    # every 10th an alarm that asks for receipts, the rest heartbeats
    if seq % 10 == 0:
        return fwframe.build(key, DEVICE, 1, seq, fwframe.T_ALARM, seq, {}, fwframe.FLAG_RECEIPTS)
    return fwframe.build(key, DEVICE, 1, seq, fwframe.T_HEARTBEAT, seq, {}, 0)


def bad_items(rng: random.Random, template: bytes) -> list[Callable[[], bytes]]:
    # template: a well-formed device frame whose MAC is wrong, so that a mutation that happens
    # to give the original bytes back is still a bad frame
    framed = wire(template)

    def noise() -> bytes:  # line noise, zeros included
        return rng.randbytes(rng.choice((1, 2, 9, 40, 200, 600, 2000)))

    def noise_without_zero() -> bytes:  # grows past the frame bound
        return bytes(rng.randrange(1, 256) for _ in range(rng.choice((10, 300, 1500))))

    def flipped() -> bytes:  # bits flipped on the wire: CRC or COBS errors
        b = bytearray(framed)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(1, len(b) - 1)] ^= 1 << rng.randrange(8)
        return bytes(b)

    def truncated() -> bytes:  # the line dropped the rest of a frame
        return framed[: rng.randrange(1, len(framed) - 1)]

    def spliced() -> bytes:  # bytes inserted or lost inside a frame
        i = rng.randrange(1, len(framed) - 1)
        return framed[:i] + rng.randbytes(rng.randint(0, 6)) + framed[i + rng.randint(0, 6) :]

    def bad_payload() -> bytes:  # a clean serial frame carrying a bad device frame
        b = bytearray(template)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        kind = rng.randrange(4)
        if kind == 0:
            return wire(bytes(b))
        if kind == 1:
            return wire(rng.randbytes(rng.randint(1, 512)))
        if kind == 2:
            return wire(cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""])))
        return wire(template[: rng.randrange(1, len(template))])

    def empty() -> bytes:
        return b"\x00" * rng.randint(1, 3)

    def short() -> bytes:
        return b"\x00" + bytes(cobs.encode(rng.randbytes(rng.randint(0, 4)))) + b"\x00"

    return [noise, noise_without_zero, flipped, flipped, truncated, spliced, bad_payload, bad_payload, empty, short]


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def expected_counts(stream: bytes) -> tuple[int, dict[str, int]]:
    """Frames that pass the framing, and framing rejects by reason: the receiver's rules
    (docs/protocol.md §9) applied to the whole stream with the `cobs` package and zlib."""
    counts = dict.fromkeys(SERIAL_REASONS, 0)
    frames = 0
    parts = stream.split(b"\x00")
    assert parts[0] == b"" and parts[-1] == b""  # starts and ends on a delimiter
    for body in parts[1:-1]:
        if not body:
            continue
        if len(body) > 519:
            counts["oversize"] += 1
            continue
        try:
            raw = bytes(cobs.decode(body))
        except cobs.DecodeError:
            counts["cobs"] += 1
            continue
        if len(raw) < 5:
            counts["short"] += 1
        elif len(raw) - 4 > 512:
            counts["oversize"] += 1
        elif zlib.crc32(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            counts["crc"] += 1
        else:
            frames += 1
    return frames, counts


class PtyPort:
    """A pty standing in for the post's UART: the test holds the master, the agent the slave."""

    def __init__(self, workdir: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing, before the agent opens it
        os.set_blocking(self.master, False)
        self.path = workdir / "fuzz-uart"
        self.path.symlink_to(os.ttyname(self.slave))
        self.received = bytearray()

    def pump(self, data: bytes, timeout: float = 60) -> None:
        """Write all of data, reading what the agent writes back meanwhile."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent stopped reading: {len(view)} bytes left")
            readable, writable, _ = select.select([self.master], [self.master], [], 1.0)
            if readable:
                self.read()
            if writable:
                try:
                    n = os.write(self.master, view[:4096])
                except BlockingIOError:
                    n = 0
                view = view[n:]

    def read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not chunk:
                return
            self.received += chunk

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def receipts_from(data: bytes) -> set[tuple[int, int, int]]:
    out = set()
    for body in data.split(b"\x00"):
        if not body:
            continue
        raw = bytes(cobs.decode(body))
        payload, crc = raw[:-4], int.from_bytes(raw[-4:], "little")
        assert zlib.crc32(payload) == crc, body.hex()
        assert oracle.verify_mac0(KEY, payload, b"ge/1/receipt"), payload.hex()
        msg = cbor2.loads(payload)
        body_map = cbor2.loads(msg.value[2])
        out.add((body_map[1], body_map[2], body_map[3]))
    return out


def test_100k_bad_serial_frames_and_bytes_through_the_live_agent(
    tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], seed: int
) -> None:
    rng = random.Random(seed)
    local, central = broker_pair
    port = PtyPort(tmp_path)
    agent = AgentProcess(
        tmp_path / "gw", local.address, central.address, DEVICES, extra_config=serial_section(port.path)
    )
    verifier = CentralVerifier(central.address, [agent.public_key_file], agent.devices_file)
    try:
        verifier.start()
        agent.start()
        agent.wait_log("uplink_up")
        agent.wait_log("serial_port_up")
        assert agent.pid is not None

        makers = bad_items(rng, good_frame(10**6, OTHER_KEY))
        chunks: list[bytes] = [b"\x00"]
        n_good = 0
        for i in range(1, BAD + 1):
            chunks.append(rng.choice(makers)())
            if i % EVERY == 0:
                n_good += 1
                chunks.append(wire(good_frame(n_good)))  # its leading 0x00 ends whatever came before
        stream = b"".join(chunks)
        n_framed, want_rejected = expected_counts(stream)
        print(f"{BAD} bad items, {n_good} good frames, {len(stream)} bytes; expected framing rejects {want_rejected}")

        rss = []
        fifth = len(stream) // 5
        for k in range(5):
            port.pump(stream[k * fifth : len(stream) if k == 4 else (k + 1) * fifth])
            rss.append(vm_rss_kb(agent.pid))
        got = verifier.wait_events(n_good, 60, device=DEVICE)
        assert sorted(e["seq"] for e in got) == list(range(1, n_good + 1)), f"seed {seed}"
        rss.append(vm_rss_kb(agent.pid))
        print(f"agent VmRSS after each fifth and at the end: {rss} kB")
        # memory stays flat: what the agent holds after the first fifth is what it holds at the end
        assert rss[-1] - rss[0] < 20_000, f"seed {seed}: RSS grew {rss} kB"

        # receipts 1 and 2 for every alarm that asked, on the same port, COBS-framed and MACed
        flagged = {(1, s) for s in range(10, n_good + 1, 10)}
        want_receipts = {(b, s, k) for b, s in flagged for k in (1, 2)}

        def all_receipts() -> bool:
            port.read()
            return want_receipts <= receipts_from(bytes(port.received))

        wait_until("receipts 1 and 2 on the port", all_receipts, 30, lambda: f"seed {seed}")

        agent.stop()
        stats = agent.stats()
        print(
            f"agent stats: accepted={stats['accepted']} rejected={stats['rejected']} serial={stats['serial_rejected']}"
        )
        assert int(stats["accepted"]) == n_good, f"seed {seed}: {stats}"
        serial_rejected = _counter(stats["serial_rejected"])
        assert serial_rejected == {k: v for k, v in want_rejected.items() if v}, f"seed {seed}: {stats}"
        # every frame that passed the framing and was not a good one was rejected by the pipeline
        pipeline_rejected = _counter(stats["rejected"])
        assert sum(pipeline_rejected.values()) == n_framed - n_good, f"seed {seed}: {stats}"
        assert set(pipeline_rejected) <= {
            "oversize",
            "malformed",
            "unknown_device",
            "topic_mismatch",
            "bad_mac",
            "bad_payload",
            "replay",
        }, pipeline_rejected
        assert [p for p in verifier.problems() if p["kind"] != "new_epoch"] == [], f"seed {seed}"
    finally:
        verifier.stop()
        agent.kill()
        port.close()


def _counter(text: str) -> dict[str, int]:
    text = text.strip("{}")
    if not text:
        return {}
    return {k.strip("'\""): int(v) for k, v in (kv.split(":") for kv in text.split(","))}
