"""guardian-notify as a real process, for tests and benchmarks: config, start, kill -9, restart.

`NotifierProcess` writes a notify.toml (central broker, the gateways' keys and venues, central's
command key, the acknowledgement endpoint on a free loopback port) next to a care-circle file
the caller gives, runs `python -m agent.notify run`, and keeps its data directory across
restarts. `fresh_port()` finds a free loopback port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from hil_tests.sim.gateway import ProcessError


def fresh_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifierProcess:
    def __init__(
        self,
        workdir: Path,
        central: tuple[str, int],
        circle_toml: str,
        gateways: Iterable[tuple[Path, str]],
        command_key: Path | None = None,
        device_keys: Path | None = None,
        delivery: str = "retry_base_s = 0.5\nretry_cap_s = 2.0\nsend_timeout_s = 5\n",
        client_id: str = "ge-notify-test",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = fresh_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "notify.log"
        circle = self.workdir / "circle.toml"
        circle.write_text(circle_toml)
        lines = [
            "[notifier]",
            f'data_dir = "{self.workdir / "data"}"',
            f'circles = ["{circle}"]',
            *([f'device_keys = "{device_keys}"'] if device_keys else []),
            "[central]",
            f'broker = "{central[0]}:{central[1]}"',
            f'client_id = "{client_id}"',
            *([f'command_key = "{command_key}"'] if command_key else []),
        ]
        for key, venue in gateways:
            lines += ["[[central.gateway]]", f'key = "{key}"', f'venue = "{venue}"']
        lines += ["[ack]", f'listen = "127.0.0.1:{self.port}"', f'base_url = "{self.base_url}"']
        lines += ["[delivery]", delivery]
        self.config_file = self.workdir / "notify.toml"
        self.config_file.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def ledger_file(self) -> Path:
        return self.workdir / "data" / "ledger.db"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "agent.notify", "run", "--config", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log_file.close()
        self.wait_log("central_feed_up", timeout)

    def log_text(self, since_start: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return (data[self._log_offset :] if since_start else data).decode(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text(since_start=True):
                return
            if not self.running:
                raise ProcessError(f"notifier exited before logging {needle!r}:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)
        raise ProcessError(f"notifier did not log {needle!r} within {timeout}s:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9: the notifier dies wherever it is."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ProcessError(f"notifier ignored signal {sig}:\n{self.log_text()[-3000:]}") from None
