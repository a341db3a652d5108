"""A practice venue for technicians: a tray of virtual boards on ptys (blank, as from the factory),
the venue's local broker, its gateway (with its status page) and central's broker, so every
`guardian-provision` command can be rehearsed with no hardware (`guardian-rig practice`,
`make practice`, `guardian-provision practice`; docs/provisioning.md "Practice").

The boards are the rig's virtual boards (hil_tests/sim/board.py: the MicroPython unix port,
its console on a pty), empty until flashed; a wristband's radio goes to a virtual air with one
scanner, which the gateway listens to. Everything lives in one directory; `PLAN` prints the
commands with this venue's ports, broker and files filled in.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import free_port
from provisioning.venue import Scanner, Venue, Zone, air_venue, alerts_toml

VENUE, GATEWAY = "practice", "GW-PRACTICE"

PLAN = """\
Practice venue {venue} in {dir}
  boards:   {boards}
  broker:   {broker} (the venue's local broker)   gateway: {gateway} (status page {page})

Rehearse (one terminal; GE_PROVISION_HOME={home} keeps your real station out of it):
  export GE_PROVISION_HOME={home}
  guardian-provision ports
  guardian-provision flash --kind alarm_post --venue {venue} --zone hall --zone-name 大厅 \\
      --broker {broker} --port {post} --gateway {page} --gateway-token {token}
  guardian-provision export --format gateway --gateway-key {seal} --out {dir}/inbox/devices.ge
      (the practice gateway imports what lands in {dir}/inbox/ and restarts, as an installer would)
  guardian-provision flash ... again: resumed, nothing copied, and the online check says "online"
  guardian-provision flash --kind sensor --venue {venue} --zone kitchen --broker {broker} \\
      --port {sensor} --channel smoke:smoke
  guardian-provision flash --kind wristband --venue {venue} --zone hall --port {band} --resident "Room 4"
  guardian-provision export --format gateway --gateway-key {seal} --out {dir}/inbox/devices.ge
  guardian-provision venue build {dir}/venue.yaml --out {dir}/gateway/venue.toml   (the gateway reloads)
  guardian-provision move AP-... --zone lobby --zone-name 前台
  guardian-provision labels --out {dir}/labels.pdf
  guardian-provision list
Ctrl-C here stops the practice venue.
"""

VENUE_YAML = """\
# the practice venue's description: `guardian-provision venue build` makes the gateway's file
venue: {venue}
name: Practice venue
timezone: UTC
zones:
  - {{id: hall, name: 大厅, rect: [0, 0, 10, 8]}}
  - {{id: front-door, name: Front door, kind: exit, rect: [10, 0, 12, 3]}}
scanners:
  - {{id: scan-hall, zone: hall, at: [5, 4]}}
residents:
  - {{reference: Room 4}}
"""


@dataclass(frozen=True, slots=True)
class Tray:
    posts: int = 3
    sensors: int = 1
    bands: int = 1


class PracticeVenue:
    """Brokers, the gateway and a tray of blank virtual boards in `workdir`; `close()` stops all."""

    def __init__(self, workdir: Path, tray: Tray = Tray(), micropython: str | None = None) -> None:
        self.dir = workdir
        self._closers: list[Callable[[], None]] = []
        self.local = Mosquitto(workdir / "local", name="local", persistence=True)
        self.central = Mosquitto(workdir / "central", name="central", persistence=True)
        hall = Venue(VENUE, VENUE, zones=(Zone("hall", "大厅", rect=(0, 0, 10, 8)),))
        hall = Venue(VENUE, VENUE, zones=hall.zones, scanners=(Scanner("scan-hall", "hall", (5.0, 4.0)),))
        self.air = VirtualAir(parse_venue(air_venue(hall)))
        self._closers.append(self.air.close)
        (workdir / "inbox").mkdir(parents=True, exist_ok=True)
        (workdir / "venue.yaml").write_text(VENUE_YAML.format(venue=VENUE), encoding="utf-8")
        self.venue_file = workdir / "gateway" / "venue.toml"
        self.venue_file.parent.mkdir(parents=True, exist_ok=True)
        self.venue_file.write_text(alerts_toml(hall), encoding="utf-8")  # no resident until a band is flashed
        self.page_port = free_port()
        host, port = self.air.address
        extra = (
            f'[[ble]]\nname = "scan-hall"\nbackend = "sim"\nair = "{host}:{port}"\nposition = [5.0, 4.0]\n'
            f'[wristbands]\nalerts = "{self.venue_file}"\n'
        )
        self.agent = AgentProcess(
            workdir / "gateway", self.local.address, self.central.address, [], gateway_id=GATEWAY, venue=VENUE,
            extra_config=extra,
        )  # fmt: skip
        self.token_file = self._status_page()
        self.seal_key = self._seal_key()
        self._seen: dict[Path, int] = {}
        self.boards: dict[str, VirtualBoard] = {}
        for kind, n in (("post", tray.posts), ("sensor", tray.sensors), ("band", tray.bands)):
            for i in range(1, n + 1):
                name = f"{kind}-{i}"
                self.boards[name] = VirtualBoard(
                    name,
                    workdir / "boards" / name,
                    micropython=micropython,
                    air=self.air.address if kind == "band" else None,
                    sensors=("smoke", "gas", "door") if kind == "sensor" else (),
                )
                self._closers.append(self.boards[name].close)

    def _agent_cli(self, *args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60, check=False
        )
        if run.returncode != 0:
            raise RuntimeError(f"guardian-agent {args[0]}: {run.stderr.strip()}")
        return run.stdout

    def _status_page(self) -> Path:
        hash_line = self._agent_cli("status-token", "--config", str(self.agent.config_file)).splitlines()[-1]
        with self.agent.config_file.open("a") as f:
            f.write(f'[status_page]\nlisten = "127.0.0.1:{self.page_port}"\n{hash_line}\n')
        return self.agent.config_file.parent / "status.token"

    def _seal_key(self) -> Path:
        out = self._agent_cli("devices", "key", "--config", str(self.agent.config_file))
        return Path(out.split(":", 1)[0])

    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.page_port}"

    def start(self) -> None:
        for broker in (self.local, self.central):
            broker.start()
            self._closers.append(broker.kill)
        self.agent.start()
        self._closers.append(self.agent.kill)
        self.agent.wait_log("status_page_listening")
        for board in self.boards.values():
            board.power_on()

    def watch(self, say: Callable[[str], None]) -> None:
        """The gateway's side, once: a sealed export new in inbox/ is imported, a venue file
        rebuilt is loaded (each restarts the agent)."""
        inbox = self.dir / "inbox"
        inbox.mkdir(exist_ok=True)
        changed = False
        for path in sorted(inbox.glob("*.ge")):
            stamp = path.stat().st_mtime_ns
            if self._seen.get(path) != stamp:
                self._seen[path] = stamp
                try:
                    out = self._agent_cli("devices", "import", "--config", str(self.agent.config_file), str(path))
                    say(f"gateway: {path.name}: {out.strip()}")
                    changed = True
                except RuntimeError as exc:
                    say(f"gateway: {path.name}: {exc}")
        stamp = self.venue_file.stat().st_mtime_ns
        if self._seen.get(self.venue_file, stamp) != stamp:
            say(f"gateway: {self.venue_file.name} changed: loading it")
            changed = True
        self._seen[self.venue_file] = stamp
        if changed:
            self.agent.stop()
            self.agent.start()
            self.agent.wait_log("status_page_listening")
            say("gateway: restarted")

    def plan(self, home: Path) -> str:
        ports = {name: b.console_path for name, b in self.boards.items()}
        return PLAN.format(
            venue=VENUE, dir=self.dir, home=home, broker=f"{self.local.address[0]}:{self.local.address[1]}",
            gateway=GATEWAY, page=self.page, token=self.token_file, seal=self.seal_key,
            boards="  ".join(f"{n} {p}" for n, p in ports.items()),
            post=ports.get("post-1", "PORT"), sensor=ports.get("sensor-1", "PORT"), band=ports.get("band-1", "PORT"),
        )  # fmt: skip

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()

    def __enter__(self) -> PracticeVenue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
