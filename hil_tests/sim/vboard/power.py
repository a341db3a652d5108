"""The board's power switch and the interpreter process it runs.

`on()` starts `micropython romboot.py` with the flash directory as its cwd and
MICROPYPATH=":lib", so `sys.path` is ['', 'lib'] like a board's ['', '/lib']; the ROM
(hil_tests/sim/romboot.py, outside the flash) runs /boot.py, then /main.py, then leaves the
interpreter at the REPL. When the interpreter exits on its own (Ctrl-D at the friendly REPL,
`sys.exit()` or `machine.soft_reset()` in the app, Ctrl-D in an empty raw REPL) that is a
soft reset: the interpreter starts again (at most 10 times a second), prints "MPY: soft
reboot" and boots; a reset taken from the raw REPL comes back in the raw REPL after boot.py
(main.py is not run), as on a board. `cut()` kills the interpreter (SIGKILL) and nothing
restarts it until `on()`. When the interpreter stops, every output drops to 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import termios
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from hil_tests.sim.vboard.console import Console
from hil_tests.sim.vboard.core import BoardError, BoardTimeout, Core, Part
from hil_tests.sim.vboard.uart import Uart

ROMBOOT = Path(__file__).resolve().parents[1] / "romboot.py"
_MIN_RESTART_INTERVAL = 0.1  # a boot loop restarts at most 10 times a second


class _Run:
    """One interpreter process."""

    __slots__ = ("pidfd", "proc", "started")

    def __init__(self, proc: subprocess.Popen[bytes], pidfd: int | None) -> None:
        self.proc = proc
        self.pidfd = pidfd  # None where pidfd_open() is missing: the loop polls the process
        self.started = time.monotonic()


def _set_ctty() -> None:
    # runs in the child between fork and exec; start_new_session made it a session leader
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Power(Part):
    """The switch, the running interpreter and its restarts."""

    def __init__(
        self,
        core: Core,
        *,
        micropython: str,
        cwd: Path,
        env: Mapping[str, str],
        console: Console,
        uart: Uart | None,
        outputs_off: Callable[[], None],
    ) -> None:
        """`env`: the interpreter's environment, without $GE_VBOARD_RESET and $GE_VBOARD_UART."""
        self._core = core
        self._micropython = micropython
        self._cwd = cwd
        self._env = dict(env)
        self._console = console
        self._uart = uart
        self._outputs_off = outputs_off
        self._run: _Run | None = None
        self._powered = False
        self._start_kind: str | None = None  # "power", "soft" or "raw" while a start is due
        self._restart_at = 0.0
        self._spawn_error: BaseException | None = None
        self._resets = 0
        self._spawns = 0

    # --- the switch --------------------------------------------------------------------

    def on(self, timeout: float) -> None:
        """Switch on and wait until the interpreter started; see VirtualBoard.power_on()."""
        with self._core.cond:
            self._core.check_open()
            if self._powered:
                return
            self._powered = True
            self._spawn_error = None
            self._start_kind = "power"
            self._restart_at = 0.0
            spawns = self._spawns
            self._core.wake()
            started = self._core.wait(lambda: self._spawns > spawns or self._spawn_error is not None, timeout)
            if self._spawn_error is not None:
                raise BoardError(f"{self._core.name}: cannot start: {self._spawn_error}")
            if not started:
                raise BoardTimeout(f"{self._core.name}: interpreter not started after {timeout}s")

    def cut(self, timeout: float) -> None:
        """SIGKILL the interpreter and wait until it is gone."""
        with self._core.cond:
            was_powered, self._powered = self._powered, False
            self._start_kind = None
            run = self._run
            if run is None:
                if was_powered:  # cut while restarting after a reset
                    self._console.marker("power cut")
                return
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signal.SIGKILL)
            self._core.wake()
            self._core.wait(lambda: self._run is not run, timeout)

    def kill(self) -> None:
        """Off for good (the board is closing): SIGKILL, no wait; the loop reaps it."""
        with self._core.cond:
            self._powered = False
            self._start_kind = None
            if self._run is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._run.proc.send_signal(signal.SIGKILL)

    @property
    def powered(self) -> bool:
        with self._core.cond:
            return self._powered

    @property
    def running(self) -> bool:
        """An interpreter runs or is about to be restarted."""
        with self._core.cond:
            return self._run is not None or self._start_kind is not None

    @property
    def pid(self) -> int | None:
        with self._core.cond:
            return self._run.proc.pid if self._run else None

    @property
    def resets(self) -> int:
        with self._core.cond:
            return self._resets

    # --- loop hooks --------------------------------------------------------------------

    def fds(self) -> list[int]:
        run = self._run
        return [run.pidfd] if run is not None and run.pidfd is not None else []

    def handle(self, fd: int) -> bool:
        run = self._run
        if run is None or fd != run.pidfd:
            return False
        self._exited(run)
        return True

    def due(self, now: float) -> float | None:
        if self._start_kind is not None and self._run is None:
            return self._restart_at - now
        if self._run is not None and self._run.pidfd is None:
            return 0.05
        return None

    def service(self, now: float) -> None:
        run = self._run
        if run is not None and run.pidfd is None and run.proc.poll() is not None:
            self._exited(run)  # no pidfd on this system: polled
        kind = self._start_kind
        if kind is not None and self._run is None and now >= self._restart_at:
            self._start_kind = None
            self._spawn(kind)

    def shutdown(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        with contextlib.suppress(ProcessLookupError):
            run.proc.kill()
        run.proc.wait()
        with contextlib.suppress(OSError):
            self._console.drain_board()
        self._detach(run)
        self._console.marker("power cut (board closed)")

    # --- the process -------------------------------------------------------------------

    def _spawn(self, kind: str) -> None:
        env = {**self._env, "GE_VBOARD_RESET": kind}
        if self._uart is not None:
            env["GE_VBOARD_UART"] = self._uart.attach()
        slave = self._console.attach(raw_entry=kind == "raw")
        try:
            proc = subprocess.Popen(
                [self._micropython, str(ROMBOOT)],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self._cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_set_ctty,  # noqa: PLW1509 - the child only calls one ioctl
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(slave)
            self._detach(None)
            self._spawn_error = exc
            self._powered = False
            self._core.cond.notify_all()
            return
        os.close(slave)
        pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(proc.pid)
        self._run = _Run(proc, pidfd)
        self._spawns += 1
        self._console.marker("power on" if kind == "power" else f"reset ({kind}), restart #{self._resets}")
        self._core.cond.notify_all()

    def _exited(self, run: _Run) -> None:
        if self._run is not run:
            return
        rc = run.proc.wait()
        self._console.drain_board()  # what it printed last (e.g. the raw REPL's "OK")
        self._detach(run)
        self._run = None
        self._outputs_off()  # the outputs drop together when the interpreter stops
        if self._powered and not self._core.closing:
            self._resets += 1
            self._start_kind = "raw" if self._console.raw_repl else "soft"
            self._restart_at = run.started + _MIN_RESTART_INTERVAL
            self._console.marker(f"interpreter exited (status {rc}): reset")
        else:
            self._console.marker("power cut")
        self._core.cond.notify_all()

    def _detach(self, run: _Run | None) -> None:
        # the interpreter's ends of the console and the UART, and its pidfd, close
        if self._uart is not None:
            self._uart.drain_board()  # what it wrote last
            self._uart.detach()
        self._console.detach()
        if run is not None and run.pidfd is not None:
            os.close(run.pidfd)
