"""The gateway agent and the central verifier as real processes, for tests, the demo and the rig.

`AgentProcess` writes a config and a device registry, runs `python -m agent run`, and can stop,
kill -9 and restart it with its data directory intact. `CentralVerifier` runs
`python -m agent verify --json` and collects its JSON lines as they arrive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.gateway import broker_files
from agent.gateway.config import load_config
from agent.gateway.signer import load_or_create_key
from agent.shared.registry import Device, load_registry, write_registry
from hil_tests.sim.mosquitto import Mosquitto

# verifier records that are not problems: a resent batch, a late one that filled its gap, and
# joining a chain that was running before the verifier started
NOT_PROBLEMS = ("event", "summary", "duplicate_batch", "reordered", "joined")


class ProcessError(RuntimeError):
    """A simulated gateway-side process did not start or behave; carries its log tail."""


class AgentProcess:
    """One `guardian-agent run` process with its config, registry and data directory."""

    def __init__(
        self,
        workdir: Path,
        local: tuple[str, int],
        central: tuple[str, int],
        devices: Iterable[Device],
        gateway_id: str = "GW-1",
        venue: str = "venue-1",
        extra_config: str = "",
        central_options: str = "",
        local_broker: Mosquitto | None = None,
    ) -> None:
        """`central_options`: more [central] lines (command_key, a [central.tls] table last).
        `local_broker`: a broker running the packaged config (not started yet); the agent logs
        in to it and owns its password and ACL files, as `devices import` writes them
        (`write_broker_files()`), and signals it to reload them."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.gateway_id = gateway_id
        self.venue = venue
        self.data_dir = self.workdir / "data"
        self.devices_file = self.workdir / "devices.toml"
        self.config_file = self.workdir / "agent.toml"
        self.log_path = self.workdir / "agent.log"
        write_registry(self.devices_file, list(devices))
        self.local_broker = local_broker
        local_login: list[str] = []
        if local_broker is not None:
            if local_broker.packaged is None:
                raise ValueError("local_broker must run the packaged config (Mosquitto(..., packaged=...))")
            local_login = [
                f'username = "{gateway_id}-agent"',
                f'password_file = "{self.workdir / "local-broker.secret"}"',
                "[local.mosquitto]",
                f'password_file = "{local_broker.packaged.password_file}"',
                f'acl_file = "{local_broker.packaged.acl_file}"',
                f'pid_file = "{local_broker.pid_file}"',
            ]
        self.config_file.write_text(
            "\n".join(
                [
                    "[gateway]",
                    f'id = "{gateway_id}"',
                    f'venue = "{venue}"',
                    f'data_dir = "{self.data_dir}"',
                    f'devices_file = "{self.devices_file}"',
                    "[local]",
                    f'host = "{local[0]}"',
                    f"port = {local[1]}",
                    "keepalive = 5",
                    *local_login,
                    "[central]",
                    f'host = "{central[0]}"',
                    f"port = {central[1]}",
                    "keepalive = 5",
                    central_options,
                    extra_config,
                ]
            )
            + "\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0
        # the key exists before the first start (as after enrollment), so central's verifier
        # can be running before the gateway sends its first batch
        load_or_create_key(self.data_dir / "gateway.key", gateway_id)

    def write_broker_files(self) -> None:
        """The local broker's password and ACL files from the registry, as `guardian-agent
        devices import` writes them; the broker is told to reload them when it runs."""
        cfg = load_config(self.config_file)
        local = cfg.local
        if local.mosquitto is None:
            raise ValueError("no local_broker was given")
        if self.local_broker is None or not self.local_broker.running:
            local = replace(local, mosquitto=replace(local.mosquitto, pid_file=None))
        broker_files.write_files(local, load_registry(self.devices_file))

    @property
    def local_password(self) -> str:
        """The agent's broker password (what an attacker must not have)."""
        return broker_files.read_password(self.workdir / "local-broker.secret")

    @property
    def public_key_file(self) -> Path:
        return self.data_dir / "gateway.key.pub"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, wait: bool = True, timeout: float = 15.0) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} ---\n".encode())
        self._log_offset = self.log_path.stat().st_size
        log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log_file.close()
        self.starts += 1
        if wait:
            self.wait_log("local_broker_up", timeout)

    def log_text(self, since_start: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[self._log_offset :].decode(errors="replace") if since_start else data.decode(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15.0) -> None:
        """Wait until `needle` appears in the log since the last start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text(since_start=True):
                return
            if not self.running:
                raise ProcessError(f"agent exited (rc={self._rc()}) before logging {needle!r}:\n{self.log_tail()}")
            time.sleep(0.02)
        raise ProcessError(f"agent did not log {needle!r} within {timeout}s:\n{self.log_tail()}")

    def _rc(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait: the agent commits what it holds and exits."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """kill -9: the agent dies wherever it is."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ProcessError(f"agent ignored signal {sig} for {timeout}s:\n{self.log_tail()}") from None
        return proc.returncode

    def stats(self) -> dict[str, str]:
        """The key=value pairs of the last `agent_stopped` line (after stop())."""
        for line in reversed(self.log_text().splitlines()):
            if " agent_stopped " in line:
                return dict(kv.split("=", 1) for kv in line.split(" agent_stopped ", 1)[1].split() if "=" in kv)
        return {}


class CentralVerifier:
    """`guardian-agent verify` as a process; its JSON lines are collected by a reader thread."""

    def __init__(
        self,
        broker: tuple[str, int],
        key_files: Iterable[Path],
        device_keys: Path | None = None,
        client_id: str = "ge-verifier",
    ) -> None:
        args = [
            sys.executable,
            "-m",
            "agent",
            "verify",
            "--json",
            "--broker",
            f"{broker[0]}:{broker[1]}",
            "--client-id",
            client_id,
        ]
        for path in key_files:
            args += ["--gateway-key", str(path)]
        if device_keys is not None:
            args += ["--device-keys", str(device_keys)]
        self.args = args
        self.records: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        self._cv = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self.on_record: Callable[[dict[str, Any]], None] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self._proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if not self.wait_for(lambda: "ready" in self.stderr_lines, timeout):
            raise ProcessError(f"verifier not ready after {timeout}s: {self.stderr_lines[-10:]}")

    def _read_out(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"kind": "unparsable", "line": line}
            if self.on_record is not None:
                self.on_record(rec)
            with self._cv:
                self.records.append(rec)
                self._cv.notify_all()

    def _read_err(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            with self._cv:
                self.stderr_lines.append(line.strip())
                self._cv.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(predicate, timeout)

    def events(self, **match: Any) -> list[dict[str, Any]]:
        with self._cv:
            return [r for r in self.records if r["kind"] == "event" and all(r.get(k) == v for k, v in match.items())]

    def problems(self) -> list[dict[str, Any]]:
        with self._cv:
            return [r for r in self.records if r["kind"] not in NOT_PROBLEMS]

    def wait_events(self, n: int, timeout: float, **match: Any) -> list[dict[str, Any]]:
        self.wait_for(lambda: len(self.events(**match)) >= n, timeout)
        return self.events(**match)

    def stop(self) -> None:
        """SIGINT: the verifier reports open gaps and its summary, then exits."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

    def summary(self) -> dict[str, Any]:
        with self._cv:
            return next((r for r in reversed(self.records) if r["kind"] == "summary"), {})
