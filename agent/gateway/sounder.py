"""What staff on site hear while the gateway tells people itself: a command, a relay, or both.

    Sounder.alert(alert, place)  the fallback took an alert on: the command runs once for it
                                 (an argument list, no shell; {type} {alert} {device} {place}
                                 {venue} filled in), and the relay is switched on
    Sounder.update(open_ids)     the alerts still unacknowledged: the relay is switched off when
                                 none of them is younger than sound_s
    Sounder.close()              relay off (the agent stops)

The command is for a staff pager, a paging gateway or a PA system (`[notify.sounder] command`);
it gets 10 s (`command_timeout_s`) and is killed after that; its exit status is logged and
counted, its output is discarded. The relay drives a sounder or a beacon on a GPIO line: a
small hardware layer with one real backend, `SysfsRelay` (the Linux GPIO sysfs interface: the
line's directory with its `direction` and `value` files, exported by the deployment,
docs/notifications.md), and `SimRelay` (in memory, for tests). Written here rather than taken
from a GPIO library: two file writes need no dependency, and the sysfs interface is what the
Raspberry Pi OS kernels expose; a libgpiod-only system can use the command with `gpioset`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from agent.gateway.config import SounderConfig
from agent.gateway.stats import FallbackCounters
from agent.notify.alert import Alert
from agent.shared.log import Throttle

log = logging.getLogger(__name__)


class Relay(Protocol):
    """A switched output: a relay, a sounder, a beacon."""

    def set(self, on: bool) -> None:
        """Switch it; OSError when the line cannot be written."""


class SysfsRelay:
    """A GPIO line in the Linux sysfs interface (/sys/class/gpio/gpioN): `direction`, `value`."""

    def __init__(self, line: Path, active_low: bool = False) -> None:
        self.line = Path(line)
        self.active_low = active_low
        direction = self.line / "direction"
        if direction.exists() and direction.read_text().strip() != "out":
            # "low": an output, and off at once (what the line's pull left it at does not matter)
            direction.write_text("high" if active_low else "low")

    def set(self, on: bool) -> None:
        (self.line / "value").write_text("1" if on != self.active_low else "0")


class SimRelay:
    """A relay in memory: what it was switched to, and when (tests)."""

    def __init__(self) -> None:
        self.on = False
        self.changes: list[tuple[float, bool]] = []

    def set(self, on: bool) -> None:
        if on != self.on or not self.changes:
            self.changes.append((time.monotonic(), on))
        self.on = on


def open_relay(cfg: SounderConfig) -> Relay | None:
    """The relay `[notify.sounder] gpio` names, None without one."""
    return SysfsRelay(cfg.gpio, cfg.active_low) if cfg.gpio is not None else None


class Sounder:
    def __init__(
        self,
        cfg: SounderConfig,
        *,
        relay: Relay | None,
        counters: FallbackCounters,
        venue: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.relay = relay
        self.counters = counters
        self.venue = venue
        self.clock = clock
        self._sounding: dict[str, float] = {}  # alert id -> when the relay was switched on for it
        self._on = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._throttle = Throttle()

    def alert(self, alert: Alert, place: str | None) -> None:
        """An alert the gateway took on: run the command once, switch the relay on."""
        if alert.id in self._sounding:
            return
        self._sounding[alert.id] = self.clock()
        if self.cfg.command is not None:
            fields = {
                "type": alert.name,
                "alert": alert.id,
                "device": alert.device,
                "place": place or "",
                "venue": self.venue,
            }
            argv = [arg.format_map(fields) for arg in self.cfg.command]
            task = asyncio.create_task(self._run(argv, alert.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._switch(True)

    def update(self, open_ids: Iterable[str]) -> None:
        """Keep sounding only for alerts still open and taken on less than sound_s ago."""
        still = set(open_ids)
        now = self.clock()
        for alert_id, since in list(self._sounding.items()):
            if alert_id not in still or now - since >= self.cfg.sound_s:
                del self._sounding[alert_id]
        self._switch(bool(self._sounding))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sounding.clear()
        self._switch(False, force=True)

    def _switch(self, on: bool, force: bool = False) -> None:
        if self.relay is None or (on == self._on and not force):
            return
        try:
            self.relay.set(on)
        except OSError as exc:
            self._failed("relay", f"{type(exc).__name__}: {exc.strerror}")
            return
        self._on = on
        log.info("sounder_relay on=%s", on)

    async def _run(self, argv: list[str], alert_id: str) -> None:
        program = Path(argv[0]).name
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            self._failed("command", f"{program}: {type(exc).__name__}: {exc.strerror}")
            return
        self.counters.sounder_runs += 1
        try:
            async with asyncio.timeout(self.cfg.command_timeout_s):
                rc = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self._failed("command", f"{program}: still running after {self.cfg.command_timeout_s:.0f} s, killed")
            return
        except asyncio.CancelledError:
            proc.kill()  # the agent stops: no command outlives it
            raise
        if rc != 0:
            self._failed("command", f"{program}: exit status {rc}")
            return
        log.info("sounder_command program=%s alert=%s rc=0", program, alert_id)

    def _failed(self, what: str, detail: str) -> None:
        self.counters.sounder_failures += 1
        suppressed = self._throttle.allow(what)
        if suppressed is not None:
            log.error("sounder_failed what=%s detail=%r suppressed_since_last=%d", what, detail, suppressed)
