"""A serial cable between a host tool and a board's console: a pty pair that copies bytes to
the console's port, loses some of them, and can be unplugged.

`SerialRelay(target).path` is a port a tool opens like any other; every byte either way is
dropped with probability `loss` (one random.Random(seed), so a run repeats), which is what a
noisy USB-UART cable does to a raw REPL, and `rate` (bytes a second, 0: as fast as the ptys
go) holds it to a serial line's speed (115200 baud is about 11,500 bytes a second). `cut`
drops the first byte of the first occurrence of those bytes on the way to the board (within
one read), once: a chosen loss, for a test that must hit one byte. `hold_when` (a check,
called between reads) stops the bytes to the board once it is true: the tool's next command
waits in the cable, so a test can act at a chosen point of a transfer however slow the
machine; `holding` is set then, and `release()` lets the bytes go on.
`unplug()` closes the relay's side: the tool's next read or write fails as on a vanished
/dev/ttyUSB0, and the board keeps running, its console untouched. Simulation at the
hardware boundary only (the cable); the tool and the board are the real ones.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from types import TracebackType


class SerialRelay:
    """A lossy, unpluggable cable from a new pty (`path`) to the serial port `target`."""

    def __init__(
        self,
        target: str,
        loss: float = 0.0,
        seed: int = 1,
        rate: float = 0.0,
        cut: bytes | None = None,
        hold_when: Callable[[], bool] | None = None,
    ) -> None:
        self.loss = loss
        self.cut = cut
        self.hold_when = hold_when
        self.holding = threading.Event()
        self.rate = rate
        self.dropped = 0
        self.copied = 0
        self._rng = random.Random(seed)
        self._far = os.open(target, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._far)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="serial-relay", daemon=True)
        self._thread.start()

    def _keep(self, data: bytes, to_board: bool) -> bytes:
        at = data.find(self.cut) if to_board and self.cut else -1
        if at >= 0:
            self.cut = None
            self.dropped += 1
            data = data[:at] + data[at + 1 :]
        if self.loss <= 0:
            return data
        kept = bytes(b for b in data if self._rng.random() >= self.loss)
        self.dropped += len(data) - len(kept)
        return kept

    def _copy(self, src: int, dst: int) -> bool:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        with self._lock:
            data = self._keep(data, src == self._master)
            self.copied += len(data)
        view = memoryview(data)
        while view:
            try:
                n = os.write(dst, view)
            except BlockingIOError:
                select.select([], [dst], [], 0.05)
                continue
            except OSError:
                return False
            view = view[n:]
        if self.rate > 0:
            time.sleep(len(data) / self.rate)  # the line's own pace, not a synchronisation
        return True

    def _held(self) -> bool:
        if not self.holding.is_set() and self.hold_when is not None and self.hold_when():
            self.holding.set()
        return self.holding.is_set()

    def _run(self) -> None:
        while True:
            watched = [self._far, self._stop_r] if self._held() else [self._master, self._far, self._stop_r]
            try:
                # while a hold is possible, look again soon: release() has no byte to wake this
                ready, _, _ = select.select(watched, [], [], 1.0 if self.hold_when is None else 0.02)
            except (OSError, ValueError):
                return
            if self._stop_r in ready:
                return
            if self._master in ready and not self._held() and not self._copy(self._master, self._far):
                continue  # nobody has the port open: Linux reports EIO until someone does
            if self._far in ready and not self._copy(self._far, self._master):
                return

    def release(self) -> None:
        """Bytes to the board flow again (after `hold_when` held them), and are not held again."""
        self.hold_when = None
        self.holding.clear()

    def unplug(self) -> None:
        """The cable is pulled: the tool's side of the port is gone, the board keeps running."""
        self.close()

    def close(self) -> None:
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._master, self._slave, self._far, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_w = -1

    def __enter__(self) -> SerialRelay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
