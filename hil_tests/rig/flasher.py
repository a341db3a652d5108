"""The flasher driver: a device flashed through the provisioning code, on real and simulated rigs.

`FlasherDriver.flash()` runs the device's flash transaction (provisioning/flash.py
`flash_one`: image, connect, identify, copy, key, selftest, switch, clock, register, label,
restart) on the device's console port, found again by its USB serial number. The port has one
user at a time: the device's `ConsoleDriver` lets go of it before the flash (provisioning's raw
REPL holds it, provisioning/rawrepl.py) and takes it again after a flash that succeeded.
Output the board prints between its restart and that reopening may be lost (opening a serial
port discards what is pending), so a test that must see the app start waits for something
later, or asks central.

A `Station` is the provisioning side of a rig: one workspace (inventory, audit log, labels)
and one bundle, opened on first use and shared by every device's flasher.

Failures are classified by the step that reported them (`INFRA_STEPS`, `PRODUCT_STEPS`):
the rig's own failures raise `RigInfraError` (retried once by the plugin, on record); a board
whose self-test fails raises `SelftestFailure`, an AssertionError (a product failure, never
retried). Messages name the device, the step and the reason; device keys never appear in
them (provisioning keeps keys out of its reasons, and they are redacted here as well).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hil_tests.rig.drivers import ConsoleDriver
from hil_tests.rig.errors import RigInfraError, SelftestFailure
from hil_tests.rig.resources import SerialPort
from provisioning.bundle import Bundle
from provisioning.errors import ProvisionError
from provisioning.flash import STEPS, FlashOptions, Outcome, Progress, flash_one
from provisioning.image import plan_image
from provisioning.workspace import Workspace

# Whose failure a failing flash step is (the step names of provisioning/flash.py):
#   image      esptool on the port: the port, the USB-UART, the chip's bootloader      infra
#   connect    the port cannot be found or opened, or no raw REPL answers on it         infra
#   identify   the board's unique id against the workspace's inventory: a board revoked
#              or keyed for another kind, venue or zone, or an id already taken         infra
#              (the rig's set-up, not the product; a retry fails the same way, on record)
#   copy, key  a transfer over the console broke (the new set is staged, not yet running) infra
#   selftest   the board ran `selftest.run()` on the firmware just written and it failed,
#              or its identity read back differs from what was written, or the board     product
#              stopped answering while testing itself (from the host a board that crashes
#              in its self-test and a console that breaks then look the same; the board
#              was running its own code, so it counts against the board)
#   switch     committing the staged set over the console (firmware/fwswitch.py)         infra
#   clock      a band's clock set over the console                                      infra
#   register, label  the workspace on the host: inventory, audit log, label files       infra
#   restart    leaving the raw REPL over the console; an app that does not start is
#              rolled back to the fallback and reported here                              infra
PRODUCT_STEPS = frozenset({"selftest"})
INFRA_STEPS = frozenset(STEPS) - PRODUCT_STEPS


@dataclass(frozen=True, slots=True)
class FlashResult:
    """What a flash leaves for the test: who the board is and what it runs, read back by its self-test."""

    device: str  # device id (kind prefix + unique id, or the id the inventory already had)
    uid: str  # the board's unique id, hex
    fw: str  # firmware version of the bundle on the board
    bundle: str  # bundle id on the board
    mpy: str  # MicroPython version of the board
    copied: int  # files written (bundle files, manifest, config.json)
    removed: int  # stale files removed
    resumed: bool  # the workspace knew the board already

    @property
    def changed(self) -> bool:
        """Whether the flash wrote or removed anything on the board."""
        return bool(self.copied or self.removed)


class _Steps(Progress):
    """Each step goes into the device's console log as a marker (names and ids only)."""

    def __init__(self, console: ConsoleDriver | None) -> None:
        self.console = console
        self.steps: list[str] = []

    def step(self, name: str, device: str | None = None) -> None:
        self.steps.append(name)
        if self.console is not None:
            self.console.marker(f"flash: {name}" + (f" ({device})" if device else ""))


class FlasherDriver:
    """Flashes one device on its console port through provisioning's flash transaction.

    Args:
        name: the device as the rig names it (every message starts with it).
        console: the device's ConsoleDriver (released for the flash, reopened after), or its
            bare SerialPort when nothing else uses the port.
        workspace: the provisioning workspace (inventory, audit log, labels).
        bundle: the firmware bundle `flash()` writes unless it is given another.
        options: kind, venue, zone, broker and transport of the device's config.json;
            `image_plans` is ignored (see `image`).
        expect_id: the device id the board must have; a board the inventory knows under
            another id means the rig names the wrong port for the device (RigInfraError).
        image: a MicroPython image written with esptool before the files (the image step).
        find_timeout: how long to wait for the port to appear (a board still enumerating).
    """

    def __init__(
        self,
        name: str,
        console: ConsoleDriver | SerialPort,
        workspace: Workspace,
        bundle: Bundle,
        options: FlashOptions,
        expect_id: str | None = None,
        image: Path | None = None,
        find_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.console = console if isinstance(console, ConsoleDriver) else None
        self.port = console.port if isinstance(console, ConsoleDriver) else console
        self.workspace = workspace
        self.bundle = bundle
        self.options = replace(options, image_plans={})
        self.expect_id = expect_id
        self.image = image
        self.find_timeout = find_timeout
        self.last_steps: list[str] = []  # the steps the last flash reached, for diagnosis

    def flash(self, bundle: Bundle | None = None) -> FlashResult:
        """Flash the board (or complete its flash); it restarts into its app.

        Raises:
            RigInfraError: the rig failed (port, transfer, workspace); see INFRA_STEPS.
            SelftestFailure: the board failed its self-test: a product failure.
        """
        bundle = bundle if bundle is not None else self.bundle
        if self.console is not None:
            self.console.release()
        progress = _Steps(self.console)
        self.last_steps = progress.steps
        try:
            path = self.port.find(self.find_timeout)
        except RigInfraError as exc:
            raise RigInfraError(f"{self.name}: flash failed at connect: {exc}") from exc
        opts = self.options
        if self.image is not None:
            try:
                opts = replace(opts, image_plans={path: plan_image(path, self.image)})
            except ProvisionError as exc:
                raise RigInfraError(f"{self.name}: flash failed at image: {exc}") from exc
        out = flash_one(self.workspace, bundle, opts, path, progress)
        if self.expect_id is not None and out.device is not None and out.device != self.expect_id:
            # another device on this port: whatever happened to it says nothing about this one
            raise RigInfraError(
                f"{self.name}: flash found board {out.uid} at {path}, which the inventory names {out.device}, "
                f"not {self.expect_id} (flash {'done' if out.ok else 'failed at ' + out.step}): "
                "does the rig name the right port for the device?"
            )
        if not out.ok:
            self._failed(out)
        result = self._result(out)
        if self.console is not None:
            self.console.open()
        return result

    def _result(self, out: Outcome) -> FlashResult:
        assert out.uid is not None and out.device is not None  # set by identify, before any success
        inv = self.workspace.inventory
        with inv.lock:
            rec = inv.device(out.uid) or {}
            fw, bundle, mpy = (str(rec.get(k, "?")) for k in ("fw", "bundle", "mpy"))
        return FlashResult(out.device, out.uid, fw, bundle, mpy, out.copied, out.removed, out.resumed)

    def _failed(self, out: Outcome) -> None:
        reason = self._redact(out)
        who = self.name if out.device in (None, self.name) else f"{self.name} ({out.device})"
        if out.step in PRODUCT_STEPS:
            # the board's own line is "selftest: FAIL <check>: <reason>"
            raise SelftestFailure(f"{who}: self-test failed after flashing: {reason.removeprefix('FAIL ')}")
        raise RigInfraError(f"{who}: flash failed at {out.step}: {reason}")

    def _redact(self, out: Outcome) -> str:
        reason = out.reason
        if out.uid is None:
            return reason
        inv = self.workspace.inventory
        with inv.lock:
            key = str((inv.device(out.uid) or {}).get("key") or "")
        if len(key) >= 16:
            for form in (key, key.upper()):
                reason = reason.replace(form, "<key>")
        return reason


class Station:
    """The provisioning side of a rig: one workspace and one bundle for every device's flasher.

    Both are made on first use (`open()`), by the callables given: a bench opens its
    technician's home and a built bundle, the simulated bench makes its own. `close()`
    releases the workspace (its lock) with the rig.
    """

    def __init__(
        self,
        open_workspace: Callable[[], Workspace],
        load_bundle: Callable[[], Bundle],
        options: FlashOptions,
        image: Path | None = None,
    ) -> None:
        self._open_workspace = open_workspace
        self._load_bundle = load_bundle
        self.options = options
        self.image = image
        self._workspace: Workspace | None = None
        self._bundle: Bundle | None = None

    def open(self) -> None:
        """Open the workspace and load the bundle if not done yet (ProvisionError as raised)."""
        if self._workspace is None:
            self._workspace = self._open_workspace()
        if self._bundle is None:
            self._bundle = self._load_bundle()

    @property
    def workspace(self) -> Workspace:
        self.open()
        assert self._workspace is not None
        return self._workspace

    @property
    def bundle(self) -> Bundle:
        self.open()
        assert self._bundle is not None
        return self._bundle

    def flasher(self, device: str, console: ConsoleDriver) -> FlasherDriver:
        """The flasher for `device` on `console`; RigInfraError when the station cannot open."""
        try:
            self.open()
        except (ProvisionError, OSError) as exc:
            raise RigInfraError(f"{device}: the flash station cannot open: {exc}") from exc
        return FlasherDriver(
            device, console, self.workspace, self.bundle, self.options, expect_id=device, image=self.image
        )

    def close(self) -> None:
        if self._workspace is not None:
            with contextlib.suppress(OSError):
                self._workspace.close()
            self._workspace = None
