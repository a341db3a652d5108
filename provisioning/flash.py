"""Flashing devices: one resumable transaction per board, keyed by the board's unique id.

Per port, in this order (the step names are what a failure reports):

    image     optional: base image by the board's route: esptool (erase, write, verify)
              or a UF2 copy to the bootloader drive                         provisioning/image.py
    connect   the console in the raw REPL (mpremote's SerialTransport)     provisioning/device.py
    identify  the board's unique id -> its inventory record; a new board gets its device id
              (kind prefix + unique id) and a key generated here, saved (encrypted) before
              anything is written to the board
    copy      bundle files whose SHA-256 on the board differs; files the bundle does not own
              in lib/, hal/, apps/ (and left-over .tmp files) removed
    key       config.json with identity, key and settings (a sensor's channels, the board
              file's name, the Wi-Fi credentials of an MQTT board on Wi-Fi), when its
              SHA-256 differs
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

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from provisioning.boards import VIRTUAL, BoardFile
from provisioning.bundle import MANIFEST, Bundle
from provisioning.channels import SensorChannel
from provisioning.device import MANAGED_DIRS, DeviceLink
from provisioning.errors import DeviceError, ProvisionError
from provisioning.image import ImagePlan, Uf2Plan, write_image, write_uf2
from provisioning.labels import Label, make_label, write_label
from provisioning.wifi import WifiCredentials
from provisioning.workspace import Workspace

KIND_PREFIX = {"alarm_post": "AP", "wristband": "WB", "sensor": "VS"}
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


def device_config(rec: dict[str, Any], opts: FlashOptions) -> bytes:
    """config.json for the board (docs: firmware/apps/<kind>/app.py load_config)."""
    cfg: dict[str, Any] = {"kind": rec["kind"], "id": rec["id"], "key": rec["key"]}
    if rec["kind"] != "wristband":  # a band only advertises: it has no link to the gateway
        cfg["transport"] = opts.transport
    if opts.broker is not None:
        cfg["broker"], cfg["port"] = opts.broker
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


def flash_one(ws: Workspace, bundle: Bundle, opts: FlashOptions, port: str, progress: Progress) -> Outcome:
    """Run (or complete) one board's transaction; never raises for the board's own failures."""
    out = Outcome(port)
    step = "connect"
    rec: dict[str, Any] | None = None
    try:
        plan = opts.image_plans.get(port)
        if plan is not None:
            step = "image"
            progress.step(step)
            if isinstance(plan, Uf2Plan):
                write_uf2(plan)
            else:
                write_image(plan)
        step = "connect"
        progress.step(step)
        with DeviceLink(port, opts.chunk) as link:
            step = "identify"
            progress.step(step)
            uid = link.uid().hex()
            out.uid = uid
            rec, out.resumed = _begin(ws, uid, opts, bundle, opts.residents.get(port))
            out.device = rec["id"]

            step = "copy"
            progress.step(step, rec["id"])
            have = link.file_hashes()
            want = {f.path: f.sha256 for f in bundle.files}
            want[MANIFEST] = hashlib.sha256(bundle.manifest).hexdigest()
            config = device_config(rec, opts)
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

            step = "key"
            progress.step(step, rec["id"])
            if config_due:
                link.put(CONFIG, config, progress.advance)
                out.copied += 1
            _done(ws, rec, "key", written=config_due)

            if rec["kind"] == "wristband":
                step = "clock"
                progress.step(step, rec["id"])
                now = int(time.time())
                link.run("clock", _CLOCK_CODE % {"dir": BAND_DATA_DIR, "k": BAND_K, "now": now})
                _done(ws, rec, "clock", unix=now)

            step = "selftest"
            progress.step(step, rec["id"])
            info = link.selftest()
            got = (info.get("id"), info.get("kind"), info.get("bundle"), info.get("uid"))
            expect = (rec["id"], rec["kind"], bundle.bundle_id, uid)
            if got != expect:
                raise DeviceError(
                    "selftest",
                    "board reads back id={} kind={} bundle={} uid={}, expected {} {} {} {}".format(*got, *expect),
                )
            out.kind = info["kind"]

            step = "register"
            progress.step(step, rec["id"])
            with ws.inventory.lock:
                rec.update(
                    state="provisioned",
                    bundle=bundle.bundle_id,
                    fw=info.get("fw", "?"),
                    mpy=info.get("mpy", "?"),
                    provisioned=int(time.time()),
                )
                _done(ws, rec, "register", bundle=bundle.bundle_id, fw=rec["fw"], mpy=rec["mpy"])

            step = "label"
            progress.step(step, rec["id"])
            label = make_label(uid, rec["id"], rec["kind"], rec["venue"], rec["zone"])
            write_label(ws.labels_dir, label)
            out.label = label
            _done(ws, rec, "label", check=label.check)

            step = "restart"
            progress.step(step, rec["id"])
            link.restart()
        out.ok = True
        out.step = "done"
    except DeviceError as exc:
        out.step, out.reason = exc.step, exc.reason
    except ProvisionError as exc:
        out.step, out.reason = step, str(exc)
    except OSError as exc:
        out.step, out.reason = step, f"{port}: {exc}"
    if not out.ok:
        try:
            ws.commit("flash.failed", out.device, uid=out.uid, port=port, step=out.step, reason=out.reason)
        except (ProvisionError, OSError):
            pass
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
