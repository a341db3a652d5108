"""Power cuts against the flash store: SIGKILL a real process at random moments, again and again.

The child (tests/firmware/store_powercut.py, under MicroPython and under CPython) boots over
the same flash directory each time: it takes the next boot number, loads the outbox and
reports every entry, then puts, marks and removes entries, printing each operation as it
begins and when it has completed. Half of the runs are killed as soon as the parent has read
a randomly chosen line (the child is running on, so the kill lands wherever it happens to be);
the other half stop the child at a randomly chosen filesystem step (before a rename, a
remove, or between the two halves of a file write, leaving it torn) and kill it there.

After every kill the next child's report is checked against what the log proved: the boot
number never repeats or goes backwards; every completed put that was not removed is there
with the right priority, state and bytes; nothing else is, except the one operation that was
in flight; no entry file is ever found corrupt (torn .tmp files are expected). At the end the
directory is checked once more by CPython importing firmware/lib/store.py directly.
Replay a failure with GE_SEED=<seed> (in every failure message and the report: tests/seeds.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from hil_tests.sim.tools import FIRMWARE_DIR

HERE = Path(__file__).resolve().parent
CHILD = HERE / "firmware" / "store_powercut.py"
CAPACITY = 8  # as in the child
RUNS = 40
MIN_KILLS = 30
LINE_TIMEOUT = 10.0


def _frame(boot: int, seq: int) -> bytes:
    n = 1 + (boot * 131 + seq * 17) % 512
    block = hashlib.sha256(f"{boot}/{seq}".encode()).digest()
    return (block * (n // 32 + 1))[:n]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).digest()[:8].hex()


class _Lines:
    """Lines from a child's stdout, each awaited with a deadline (no sleeps)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.eof = False

    def next(self, timeout: float = LINE_TIMEOUT) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                rest, self.buf = self.buf, b""
                return rest.decode() if rest else None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line from the child within {timeout}s (have {self.buf!r})")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buf += chunk
                else:
                    self.eof = True
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


class _Model:
    """What the log proves the store holds, and the checks against each reboot's report."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.top_boot = 0
        self.entries: dict[tuple[int, int], tuple[int, int]] = {}  # (boot, seq) -> (prio, state)
        self.pending: list[str] | None = None  # the operation in flight when a child died
        self.have: dict[tuple[int, int], tuple[int, int]] = {}
        self.count = 0
        self.phase = "start"
        self.log: list[str] = []
        self.torn = 0  # torn .tmp files the children found and moved aside
        self.outcomes: dict[str, int] = {}  # how in-flight operations turned out after a kill

    def fail(self, msg: str) -> None:
        tail = "\n".join(self.log[-30:])
        pytest.fail(f"{self.label}: {msg}\n--- last lines:\n{tail}")

    def boot(self, boot: int, damaged: int) -> None:
        if boot <= self.top_boot:
            self.fail(f"boot counter returned {boot} after {self.top_boot}")
        if damaged:
            self.fail(f"a boot counter slot was damaged ({damaged})")
        self.top_boot = boot

    def check_loaded(self) -> None:
        have, pend = self.have, self.pending
        if len(have) != self.count:
            self.fail(f"load said {self.count} entries, reported {len(have)}")
        for key, (prio, state) in self.entries.items():
            if key not in have:
                if pend is not None and pend[0] == "rm" and (int(pend[1]), int(pend[2])) == key:
                    continue
                self.fail(f"entry {key} was put and never removed, and is gone")
            hprio, hstate = have[key]
            allowed = {state}
            if pend is not None and pend[0] == "mark" and (int(pend[1]), int(pend[2])) == key:
                allowed.add(int(pend[3]))
            if hprio != prio or hstate not in allowed:
                self.fail(f"entry {key} is ({hprio}, {hstate}), want prio {prio} and a state in {allowed}")
        for key, value in have.items():
            if key in self.entries:
                continue
            if pend is not None and pend[0] == "put" and (int(pend[1]), int(pend[2])) == key:
                if value != (int(pend[3]), 0):
                    self.fail(f"half-put entry {key} came back as {value}")
                continue
            self.fail(f"entry {key} {value} was never put, or was removed")
        if pend is not None:
            self._count_outcome(pend, have)
        self.entries = dict(have)
        self.pending = None

    def _count_outcome(self, pend: list[str], have: dict[tuple[int, int], tuple[int, int]]) -> None:
        # how the operation in flight at the kill came back: done or undone
        key = (int(pend[1]), int(pend[2]))
        if pend[0] == "mark":
            done = key in have and have[key][1] == int(pend[3])
        else:
            done = (key in have) == (pend[0] == "put")
        outcome = f"{pend[0]} {'done' if done else 'undone'}"
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def completed(self, result: list[str]) -> None:
        op = self.pending
        if op is None:
            self.fail("a completion without an operation")
            return
        key = (int(op[1]), int(op[2]))
        if result[0] == "full":
            if op[0] != "put" or int(result[1]) != len(self.entries) or len(self.entries) < CAPACITY:
                self.fail(f"OutboxFull with {len(self.entries)} entries")
        elif op[0] == "put":
            if key in self.entries:
                self.fail(f"put of {key} twice")
            self.entries[key] = (int(op[3]), 0)
        elif op[0] == "mark":
            self.entries[key] = (self.entries[key][0], int(op[3]))
        elif op[0] == "rm":
            del self.entries[key]
        self.pending = None

    def line(self, text: str) -> None:
        self.log.append(text)
        f = text.split()
        if not f:
            self.fail("empty line")
        kind = f[0]
        if kind == "start":
            self.phase = "boot"
        elif kind == "boot":
            self.boot(int(f[1]), int(f[2]))
            self.phase = "load"
        elif kind == "load":
            if int(f[2]):
                self.fail(f"{f[2]} corrupt outbox files at load: only .tmp files may be torn")
            self.count = int(f[1])
            self.torn += int(f[3])
            self.have = {}
        elif kind == "have":
            prio, boot, seq, state, n = (int(x) for x in f[1:6])
            if (n, f[6]) != (len(_frame(boot, seq)), _digest(_frame(boot, seq))):
                self.fail(f"entry {(boot, seq)} returned with the wrong bytes")
            self.have[(boot, seq)] = (prio, state)
        elif kind == "ready":
            self.check_loaded()
            self.phase = "ops"
        elif kind == ">":
            self.pending = f[1:]
        elif kind == "<":
            self.completed(f[1:])
        elif kind not in ("pause", "end"):
            self.fail(f"unexpected output: {text}")


def _import_store() -> ModuleType:
    lib = str(FIRMWARE_DIR / "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)  # store.py imports record.py from there, as on a board
    spec = importlib.util.spec_from_file_location("ge_store_checked", FIRMWARE_DIR / "lib" / "store.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _final_check(model: _Model, root: Path) -> None:
    # one more reboot, this time the store module imported into this CPython process
    store = _import_store()
    boot = store.BootCounter(str(root)).next()
    model.line(f"boot {boot} 0")
    ob = store.Outbox(str(root), CAPACITY)
    model.line(f"load {len(ob)} {ob.bad} {ob.torn}")
    for prio, b, s, st in ob.items():
        fr = ob.frame(b, s)
        model.line(f"have {prio} {b} {s} {st} {len(fr)} {_digest(fr)}")
    model.line("ready")


def _run_child(cmd: list[str], env: dict[str, str], model: _Model, pause_at: int, kill_after: int) -> int:
    """One boot of the child, every line it prints fed to `model`: killed at its pause point
    (`pause_at`), or after `kill_after` lines; returns its exit status."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        lines = _Lines(proc)
        n = 0
        while True:
            text = lines.next()
            if text is None:
                break
            model.line(text)
            n += 1
            if (pause_at and text.startswith("pause ")) or (not pause_at and n >= kill_after):
                proc.send_signal(signal.SIGKILL)
                break
        # whatever the child printed before it died is true too
        while (text := lines.next()) is not None:
            model.line(text)
        return proc.wait(timeout=LINE_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("fs", ["rename", "fat"])
@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_store_survives_sigkill(
    interp: str, fs: str, tmp_path: Path, request: pytest.FixtureRequest, seed: int
) -> None:
    env = dict(os.environ)
    path = os.pathsep.join([str(HERE / "firmware"), str(FIRMWARE_DIR / "lib")])
    if interp == "micropython":
        cmd = [request.getfixturevalue("micropython"), str(CHILD)]
        env["MICROPYPATH"] = path
    else:
        cmd = [sys.executable, str(CHILD)]
        env["PYTHONPATH"] = path
    rng = random.Random(f"{seed}/{interp}/{fs}")
    root = tmp_path / "flash"
    model = _Model(f"{interp}/{fs} seed={seed}")
    kills = 0
    in_flight: dict[str, int] = {}
    started = time.monotonic()
    for run in range(RUNS):
        pause_at = rng.randint(1, 150) if run % 2 else 0
        kill_after = rng.randint(1, 60)
        model.phase = "spawn"
        rc = _run_child([*cmd, str(root), fs, str(pause_at), str(seed + run)], env, model, pause_at, kill_after)
        if rc == -signal.SIGKILL:
            kills += 1
            where = model.phase
            if where == "ops":
                where = model.pending[0] if model.pending else "between"
            in_flight[where] = in_flight.get(where, 0) + 1
        elif rc != 0 or model.log[-1] != "end":
            model.fail(f"child exited with {rc}")
    _final_check(model, root)
    elapsed = time.monotonic() - started
    print(f"{kills} kills in {RUNS} runs, {elapsed:.2f}s; killed during: {in_flight}")
    print(f"in-flight operations after reboot: {model.outcomes}; torn .tmp files: {model.torn}")
    print(f"last boot {model.top_boot}, {len(model.entries)} entries left")
    assert kills >= MIN_KILLS, f"only {kills} kills (seed {seed})"
