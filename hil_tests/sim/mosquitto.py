"""A real Mosquitto broker on a loopback port, started and stopped (or killed) on demand.

Used by tests, the demo and the simulated rig. The port stays the same across restarts so
clients can reconnect to the same address after a fault is injected. By default the broker is
Mosquitto's defaults with anonymous access and unbounded queues (what most tests need); with
`packaged` it runs the gateway's shipped config (packaging/mosquitto/guardian-local.conf:
logins, ACL, limits) with only the port, the files and the log moved here, which is what the
attack tests and benchmarks run against.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hil_tests.sim.tools import REPO_ROOT, find_mosquitto, free_port

PACKAGED_CONFIG = REPO_ROOT / "packaging" / "mosquitto" / "guardian-local.conf"


class BrokerError(RuntimeError):
    """The broker did not start or stop as asked; the message carries its log tail."""


@dataclass(frozen=True)
class Packaged:
    """Run the shipped config with these password and ACL files (as `devices import` writes them)."""

    password_file: Path
    acl_file: Path


def packaged_lines(files: Packaged) -> list[str]:
    """The shipped config's settings, its files replaced by `files`; no listener or log lines."""
    lines = []
    for line in PACKAGED_CONFIG.read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith(("listener ", "log_dest ")):
            continue
        if line.startswith("password_file "):
            lines.append(f"password_file {files.password_file}")
        elif line.startswith("acl_file "):
            lines.append(f"acl_file {files.acl_file}")
        else:
            lines.append(line)
    return lines


@dataclass(frozen=True)
class TlsListener:
    """A second listener, with TLS: the broker's certificate and key, and the CA it checks clients
    against (their certificate is required unless require_certificate is false)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True


class Mosquitto:
    """One mosquitto process bound to 127.0.0.1.

    Args:
        workdir: directory for the config, log and (optional) persistence file.
        name: label used in file names and error messages.
        port: fixed port; a free one is chosen when omitted.
        persistence: keep QoS 1 queues and sessions across restarts (a restart after
            stop() or kill() then behaves like a broker that was power-cycled with its disk).
        extra_config: more mosquitto.conf lines (limits, ...).
        tls: also listen with TLS on `tls_port` (the plain listener stays, for tools and
            verifiers that do not take part in the TLS test).
        packaged: run the shipped gateway config with these files instead of the test defaults
            (persistence as shipped: off).
    """

    def __init__(
        self,
        workdir: Path,
        name: str = "broker",
        port: int | None = None,
        persistence: bool = False,
        extra_config: str = "",
        tls: TlsListener | None = None,
        packaged: Packaged | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_config = extra_config
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.packaged = packaged
        self.log_path = self.workdir / f"{name}.log"
        self.conf_path = self.workdir / f"{name}.conf"
        self.pid_file = self.workdir / f"{name}.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _write_config(self) -> None:
        lines = [f"listener {self.port} 127.0.0.1", f"log_dest file {self.log_path}", f"pid_file {self.pid_file}"]
        if self.packaged is not None:
            # and "information", where Mosquitto says that it reloaded (reload() waits for it)
            lines += [*packaged_lines(self.packaged), "log_type information"]
        else:
            lines += [
                "allow_anonymous true",
                # QoS 1 queues for offline persistent sessions are never cut short in tests.
                "max_queued_messages 0",
                "max_inflight_messages 0",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "connection_messages true",
            ]
        if os.geteuid() == 0:
            # mosquitto drops root privileges to user "mosquitto" unless told otherwise;
            # stay as the current user so the log and persistence files stay writable.
            lines.append(f"user {getpass.getuser()}")
        if self.packaged is not None:
            pass  # as shipped
        elif self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                f"persistence_file {self.name}.db",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        if self.extra_config:
            lines.append(self.extra_config)
        if self.tls is not None:
            # listener options apply to the listener line above them
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._write_config()
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(f"{self.name}: mosquitto exited at start: {err}{self.log_tail()}")
            try:
                with socket.create_connection(self.address, timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise BrokerError(f"{self.name}: not listening on port {self.port} after {timeout}s")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): persistence, if on, is written out."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving anything."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    @property
    def db_path(self) -> Path:
        return self.workdir / f"{self.name}.db"

    def wait_saved(self, timeout: float = 5.0) -> None:
        """Wait until the persistent store has been written after this call (before a kill -9)."""
        if not self.persistence:
            raise BrokerError(f"{self.name}: persistence is off")
        since = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.db_path.stat().st_mtime > since:
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise BrokerError(f"{self.name}: store not written within {timeout}s")

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP, as `systemctl reload mosquitto`: password and ACL files read again; returns
        once the broker logged that it reloaded."""
        if self._proc is None:
            raise BrokerError(f"{self.name}: not running")
        before = self.log_text().count("Reloading config")
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_text().count("Reloading config") <= before:
            if time.monotonic() > deadline:
                raise BrokerError(f"{self.name}: no reload within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
