"""Flashing devices: one resumable transaction per board, keyed by the board's unique id.

Per port, in this order (the step names are what a failure reports):

    image     optional: base image by the board's route: esptool (erase, write, verify)
              or a UF2 copy to the bootloader drive                         provisioning/image.py
    connect   the console in the raw REPL (mpremote's SerialTransport)     provisioning/console.py
    identify  the board's unique id -> its inventory record; a new board gets its device id
              (kind prefix + unique id), a key and, when it speaks MQTT, a broker password
              (agent/shared/broker_auth.py) generated here, saved (encrypted) before anything
              is written to the board
    copy      bundle files whose SHA-256 on the board differs; files the bundle does not own
              in lib/, hal/, apps/ (and left-over .tmp files) removed
    key       config.json with identity, key, broker password and settings (a sensor's
              channels, the board file's name, the Wi-Fi credentials of an MQTT board on
              Wi-Fi), when its SHA-256 differs
    clock     wristbands: the band clock set to the host's unix time (lib/bandclock.py
              BandClock.set: never moved back), as the gateway's resolver expects
    selftest  soft reset, `selftest.run()` on the board; identity and versions read back
    register  the inventory record becomes "provisioned"
    label     QR code (PNG, SVG) and text line
    restart   the board leaves the REPL and starts its app

Re-running finds the same record through the unique id, so it keeps the id and key, copies
only what differs and completes the steps that are missing; a board that is complete
copies nothing. Each step is audited. Boards run in parallel, one thread each, with a rich
progress bar per board; a failing board is reported with its step and reason and the others
go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.shared.broker_auth import new_password
from agent.shared.protocol import ALARM_POST, SENSOR, WRISTBAND
from provisioning.boards import VIRTUAL, BoardFile
from provisioning.bundle import MANIFEST, Bundle
from provisioning.channels import SensorChannel
from provisioning.console import MANAGED_DIRS, DeviceLink
from provisioning.errors import DeviceError, ProvisionError
from provisioning.image import ImagePlan, Uf2Plan, write_image, write_uf2
from provisioning.labels import Label, make_label, write_label
from provisioning.wifi import WifiCredentials
from provisioning.workspace import Workspace

KIND_PREFIX = {ALARM_POST: "AP", WRISTBAND: "WB", SENSOR: "VS"}  # of the device ids a station gives
KEY_BYTES = 32
CONFIG = "config.json"
STEPS = ("image", "connect", "identify", "copy", "key", "clock", "selftest", "register", "label", "restart")
BAND_DATA_DIR = "data"  # firmware/apps/wristband/app.py DEFAULTS["data_dir"]
BAND_K = 10  # DEFAULTS["k"]; the gateway's [wristbands] k must match


@dataclass(frozen=True, slots=True)
class FlashOptions:
    kind: str
    venue: str
    zone: str
    broker: tuple[str, int] | None = None  # local MQTT broker; None with transport "uart"
    transport: str = "mqtt"
    chunk: int = 512
    image_plans: dict[str, ImagePlan | Uf2Plan] = field(default_factory=dict)  # by port
    channels: tuple[SensorChannel, ...] = ()  # kind "sensor" only (provisioning/channels.py)
    board: BoardFile = VIRTUAL
    residents: dict[str, str] = field(default_factory=dict)  # kind "wristband": reference by port
    wifi: WifiCredentials | None = None  # an MQTT board on Wi-Fi (provisioning/wifi.py)


@dataclass(slots=True)
class Outcome:
    port: str
    ok: bool = False
    step: str = ""
    reason: str = ""
    device: str | None = None
    kind: str | None = None  # as the board's self-test reports it
    uid: str | None = None
    copied: int = 0
    removed: int = 0
    resumed: bool = False
    label: Label | None = None


class Progress:
    """What a transaction reports while it runs (the CLI draws it with rich)."""

    def step(self, name: str, device: str | None = None) -> None:
        """A new step begins."""

    def total(self, nbytes: int) -> None:
        """Bytes the copy will write."""

    def advance(self, nbytes: int) -> None:
        """Bytes written since the last call."""


def device_id(kind: str, uid: str) -> str:
    return f"{KIND_PREFIX[kind]}-{uid.upper()}"


def needs_broker_password(kind: str, transport: str) -> bool:
    """A device that speaks MQTT to the gateway's local broker has its own broker password."""
    return kind != WRISTBAND and transport == "mqtt"  # a band only advertises; a UART needs none


def device_config(rec: dict[str, Any], opts: FlashOptions) -> bytes:
    """config.json for the board (docs: firmware/apps/<kind>/app.py load_config)."""
    cfg: dict[str, Any] = {"kind": rec["kind"], "id": rec["id"], "key": rec["key"]}
    if rec["kind"] != "wristband":  # a band only advertises: it has no link to the gateway
        cfg["transport"] = opts.transport
    if opts.broker is not None:
        cfg["broker"], cfg["port"] = opts.broker
    if "broker_password" in rec and needs_broker_password(rec["kind"], opts.transport):
        cfg["password"] = rec["broker_password"]  # the user name is the device id
    if opts.channels:
        cfg["channels"] = [ch.config() for ch in opts.channels]
    if opts.board.name:
        cfg["board"] = opts.board.name
    if opts.wifi is not None:
        cfg["wifi"] = opts.wifi.config()
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def new_record(dev: str, uid: str, opts: FlashOptions, key: bytes, resident: str | None = None) -> dict[str, Any]:
    """A board's inventory record as the identify step creates it: keyed, no step done yet."""
    rec: dict[str, Any] = {
        "id": dev,
        "uid": uid,
        "kind": opts.kind,
        "venue": opts.venue,
        "zone": opts.zone,
        "key": key.hex(),
        "state": "pending",
        "steps": [],
        "created": int(time.time()),
    }
    if resident is not None:
        rec["resident"] = resident  # kept in the encrypted inventory only, never in labels or logs
    if needs_broker_password(opts.kind, opts.transport):
        rec["broker_password"] = new_password()  # like the key: inventory and config.json only
    return rec


def _begin(
    ws: Workspace, uid: str, opts: FlashOptions, bundle: Bundle, resident: str | None = None
) -> tuple[dict[str, Any], bool]:
    """The board's inventory record (created with a fresh key for a new board); resumed or not."""
    inv = ws.inventory
    with inv.lock:
        gone = inv.revoked(uid)
        if gone is not None:
            raise DeviceError(
                "identify", f"board {uid} was revoked as {gone.get('id')} on {gone.get('revoked_at')}; not keyed again"
            )
        rec = inv.device(uid)
        if rec is not None:
            if (rec["kind"], rec["venue"], rec["zone"]) != (opts.kind, opts.venue, opts.zone):
                raise DeviceError(
                    "identify",
                    f"board {uid} is {rec['id']} ({rec['kind']}, {rec['venue']}/{rec['zone']}); "
                    "revoke it before keying it for another kind, venue or zone",
                )
            if rec.get("resident") != resident:
                # a band worn by one resident never silently becomes another's
                raise DeviceError(
                    "identify",
                    f"board {uid} is {rec['id']} for another resident; revoke it before giving it to someone else",
                )
            if "broker_password" not in rec and needs_broker_password(opts.kind, opts.transport):
                rec["broker_password"] = new_password()  # keyed before broker passwords existed
            ws.commit("flash.resume", rec["id"], uid=uid, state=rec["state"], bundle=bundle.bundle_id)
            return rec, True
        dev = device_id(opts.kind, uid)
        if inv.by_id(dev) is not None:
            raise DeviceError("identify", f"device id {dev} is already in the inventory under another board")
        rec = new_record(dev, uid, opts, os.urandom(KEY_BYTES), resident)
        inv.data["devices"][uid] = rec
        ws.commit(
            "flash.begin", dev, uid=uid, kind=opts.kind, venue=opts.venue, zone=opts.zone, bundle=bundle.bundle_id
        )
        return rec, False


_CLOCK_CODE = """\
import bandclock
bandclock.BandClock(%(dir)r, %(k)d).set(%(now)d)
"""


def _done(ws: Workspace, rec: dict[str, Any], step: str, **detail: Any) -> None:
    with ws.inventory.lock:
        if step not in rec["steps"]:
            rec["steps"].append(step)
        ws.commit(f"flash.{step}", rec["id"], uid=rec["uid"], **detail)


def _copy(
    ws: Workspace,
    link: DeviceLink,
    rec: dict[str, Any],
    bundle: Bundle,
    config: bytes,
    progress: Progress,
    out: Outcome,
) -> bool:
    """The copy step: remove what the bundle does not have, copy what differs, the manifest
    last; returns whether the config must be written (the key step)."""
    have = link.file_hashes()
    want = {f.path: f.sha256 for f in bundle.files}
    want[MANIFEST] = hashlib.sha256(bundle.manifest).hexdigest()
    stale = [
        p
        for p in sorted(have)
        if p.endswith(".tmp")
        or (p.split("/", 1)[0] in MANAGED_DIRS and "/" in p and p not in want)
        or (p.endswith(".py") and p[:-3] + ".mpy" in want)  # a .py shadows its .mpy
    ]
    todo = [p for p in sorted(want) if have.get(p) != want[p] and p != MANIFEST]
    manifest_due = have.get(MANIFEST) != want[MANIFEST]
    config_due = have.get(CONFIG) != hashlib.sha256(config).hexdigest()
    progress.total(
        sum(len(bundle.read(p)) for p in todo)
        + (len(bundle.manifest) if manifest_due else 0)
        + (len(config) if config_due else 0)
    )
    for p in stale:
        link.remove(p)
    for p in todo:
        link.put(p, bundle.read(p), progress.advance)
    if manifest_due:  # last: it names the version the board now holds
        link.put(MANIFEST, bundle.manifest, progress.advance)
    out.copied = len(todo) + int(manifest_due)
    out.removed = len(stale)
    _done(ws, rec, "copy", bundle=bundle.bundle_id, copied=todo + [MANIFEST] * manifest_due, removed=stale)
    return config_due


def _selftest(link: DeviceLink, rec: dict[str, Any], bundle: Bundle, uid: str) -> dict[str, str]:
    """The selftest step: the board must read back the identity it was given."""
    info = link.selftest()
    got = (info.get("id"), info.get("kind"), info.get("bundle"), info.get("uid"))
    expect = (rec["id"], rec["kind"], bundle.bundle_id, uid)
    if got != expect:
        raise DeviceError(
            "selftest",
            "board reads back id={} kind={} bundle={} uid={}, expected {} {} {} {}".format(*got, *expect),
        )
    return info


def _register(ws: Workspace, rec: dict[str, Any], bundle: Bundle, info: dict[str, str]) -> None:
    """The register step: the inventory records the board as provisioned with this bundle."""
    with ws.inventory.lock:
        rec.update(
            state="provisioned",
            bundle=bundle.bundle_id,
            fw=info.get("fw", "?"),
            mpy=info.get("mpy", "?"),
            provisioned=int(time.time()),
        )
        _done(ws, rec, "register", bundle=bundle.bundle_id, fw=rec["fw"], mpy=rec["mpy"])


class _Transaction:
    """One board's steps in order; `step` is the one under way, where a failure is reported."""

    def __init__(self, ws: Workspace, bundle: Bundle, opts: FlashOptions, port: str, progress: Progress) -> None:
        self.ws = ws
        self.bundle = bundle
        self.opts = opts
        self.progress = progress
        self.out = Outcome(port)
        self.step = "connect"

    def enter(self, step: str, device: str | None = None) -> None:
        self.step = step
        self.progress.step(step, device)

    def run(self) -> None:
        ws, bundle, opts, out = self.ws, self.bundle, self.opts, self.out
        plan = opts.image_plans.get(out.port)
        if plan is not None:
            self.enter("image")
            if isinstance(plan, Uf2Plan):
                write_uf2(plan)
            else:
                write_image(plan)
        self.enter("connect")
        with DeviceLink(out.port, opts.chunk) as link:
            self.enter("identify")
            uid = out.uid = link.uid().hex()
            rec, out.resumed = _begin(ws, uid, opts, bundle, opts.residents.get(out.port))
            dev = out.device = rec["id"]

            self.enter("copy", dev)
            config = device_config(rec, opts)
            config_due = _copy(ws, link, rec, bundle, config, self.progress, out)

            self.enter("key", dev)
            if config_due:
                link.put(CONFIG, config, self.progress.advance)
                out.copied += 1
            _done(ws, rec, "key", written=config_due)

            if rec["kind"] == WRISTBAND:
                self.enter("clock", dev)
                now = int(time.time())
                link.run("clock", _CLOCK_CODE % {"dir": BAND_DATA_DIR, "k": BAND_K, "now": now})
                _done(ws, rec, "clock", unix=now)

            self.enter("selftest", dev)
            info = _selftest(link, rec, bundle, uid)
            out.kind = info["kind"]

            self.enter("register", dev)
            _register(ws, rec, bundle, info)

            self.enter("label", dev)
            out.label = make_label(uid, dev, rec["kind"], rec["venue"], rec["zone"])
            write_label(ws.labels_dir, out.label)
            _done(ws, rec, "label", check=out.label.check)

            self.enter("restart", dev)
            link.restart()


def flash_one(ws: Workspace, bundle: Bundle, opts: FlashOptions, port: str, progress: Progress) -> Outcome:
    """Run (or complete) one board's transaction; never raises for the board's own failures."""
    run = _Transaction(ws, bundle, opts, port, progress)
    out = run.out
    try:
        run.run()
        out.ok = True
        out.step = "done"
    except DeviceError as exc:
        out.step, out.reason = exc.step, exc.reason
    except ProvisionError as exc:
        out.step, out.reason = run.step, str(exc)
    except OSError as exc:
        out.step, out.reason = run.step, f"{port}: {exc}"
    if not out.ok:
        with contextlib.suppress(ProvisionError, OSError):
            ws.commit("flash.failed", out.device, uid=out.uid, port=port, step=out.step, reason=out.reason)
    progress.step("done" if out.ok else "failed", out.device)
    return out


def flash_all(
    ws: Workspace,
    bundle: Bundle,
    opts: FlashOptions,
    ports: list[str],
    make_progress: Callable[[str], Progress],
) -> list[Outcome]:
    """Flash every port in parallel; outcomes in the order of `ports`."""
    with ThreadPoolExecutor(max_workers=max(1, len(ports)), thread_name_prefix="flash") as pool:
        futures = [pool.submit(flash_one, ws, bundle, opts, port, make_progress(port)) for port in ports]
        return [f.result() for f in futures]
