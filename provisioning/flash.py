"""Flashing devices: one resumable transaction per board, keyed by the board's unique id.

Per port, in this order (the step names are what a failure reports):

    image     optional: base image by the board's route: esptool (erase, write, verify)
              or a UF2 copy to the bootloader drive                         provisioning/image.py
    connect   the console in the raw REPL                                  provisioning/console.py
    identify  the board's unique id -> its inventory record; a new board gets its device id
              (kind prefix + unique id), a key and, when it speaks MQTT, a broker password
              (agent/shared/broker_auth.py) generated here, saved (encrypted) before anything
              is written to the board
    copy      what the board holds is read (and written into the inventory); unless the
              running set already is this bundle and config, the new set is staged in fw_new/:
              files the board holds are copied there on the board, the others sent, stale
              ones removed
    key       config.json (identity, key, broker password, a sensor's channels, the board
              file's name, an MQTT board's Wi-Fi) into the staged set
    selftest  soft reset, `selftest.run()` on the staged set (run from fw_new/, the app not
              started) or on the running one when nothing was staged; identity read back
    switch    the inventory records the switch it is about to make; the loader (boot.py,
              main.py, fwswitch.mpy) updated; fw.switch committed: the staged set becomes
              the running one, the one it replaces becomes fw_old/ (firmware/fwswitch.py;
              boot.py finishes it after a power cut); the result read back
    clock     wristbands: the band clock set to the host's unix time (lib/bandclock.py
              BandClock.set: never moved back), as the gateway's resolver expects
    register  the inventory record becomes "provisioned" with what the board now runs
    label     QR code and readable label (provisioning/labels.py)
    restart   the board leaves the REPL and starts its app; a start that fails is reported

Until the switch the board's running set is untouched: a failure at any step (a vanished
port, a bad channel, a failed self-test, Ctrl-C) restarts the board into what it ran before
when the port still answers, and a board left behind in the raw REPL restarts into it on
its next reset. The record keeps what the board runs (`bundle`, `config`), the fallback and
the failed attempt, read from the board whenever it answers. Re-running finds the same record
through the unique id, keeps the id and key, and stages only what is missing; a board that
runs this bundle and config copies nothing. Each step is audited. Boards run in parallel, one
thread each, with a rich progress bar per board; a failing board is reported with its step
and reason and the others go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
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
from provisioning.console import (
    CONFIG,
    FALLBACK,
    LOADER,
    MANAGED_DIRS,
    NOT_A_SET,
    STAGE,
    BoardFiles,
    DeviceLink,
    sha16,
)
from provisioning.errors import DeviceError, ProvisionError
from provisioning.image import ImagePlan, Uf2Plan, write_image, write_uf2
from provisioning.labels import Label, label_for, write_label
from provisioning.times import local_time
from provisioning.wifi import WifiCredentials
from provisioning.workspace import Workspace

KIND_PREFIX = {ALARM_POST: "AP", WRISTBAND: "WB", SENSOR: "VS"}  # of the device ids a station gives
KEY_BYTES = 32
STEPS = (
    "image", "connect", "identify", "copy", "key", "selftest", "switch", "clock", "register", "label", "restart",
)  # fmt: skip
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
    zone_name: str | None = None  # what people read for the zone (UTF-8); the zone id stays ASCII
    venue_name: str | None = None


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
    reused: int = 0  # files copied on the board instead of sent
    staged: bool = False  # a new set was staged and switched to
    retries: int = 0  # line errors recovered from (a noisy cable)
    restarted: bool = False  # the board was sent back to its app after a failure
    blank: bool = False  # after a failure: the board holds no app to go back to (a first flash)
    started_at: float | None = None  # host unix time the app was started (the online check)


class Progress:
    """What a transaction reports while it runs (the CLI draws it with rich)."""

    def step(self, name: str, device: str | None = None) -> None:
        """A new step begins."""

    def total(self, nbytes: int) -> None:
        """Bytes the copy will write."""

    def advance(self, nbytes: int) -> None:
        """Bytes written since the last call."""

    def retry(self, why: str) -> None:
        """A line error was recovered from (lost or garbled bytes)."""

    cancel: threading.Event | None = None  # set: stop at the next safe point (Ctrl-C)


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
    for field_name, name in (("zone_name", opts.zone_name), ("venue_name", opts.venue_name)):
        if name is not None:
            rec[field_name] = name
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
                "identify",
                f"board {uid} was revoked as {gone.get('id')} on {local_time(gone.get('revoked_at'))}; not keyed again",
            )
        rec = inv.device(uid)
        if rec is not None:
            if rec["kind"] != opts.kind:
                raise DeviceError(
                    "identify",
                    f"board {uid} is {rec['id']}, a {rec['kind']}; revoke it before keying it as a {opts.kind}",
                )
            if (rec["venue"], rec["zone"]) != (opts.venue, opts.zone):
                raise DeviceError(
                    "identify",
                    f"board {uid} is {rec['id']} in {rec['venue']}/{rec['zone']}; to put it in "
                    f"{opts.venue}/{opts.zone} run: guardian-provision move {rec['id']} --zone {opts.zone}"
                    + (f" --venue {opts.venue}" if opts.venue != rec["venue"] else ""),
                )
            if rec.get("resident") != resident:
                # a band worn by one resident never silently becomes another's
                raise DeviceError(
                    "identify",
                    f"board {uid} is {rec['id']} for another resident; revoke it before giving it to someone else",
                )
            if "broker_password" not in rec and needs_broker_password(opts.kind, opts.transport):
                rec["broker_password"] = new_password()  # keyed before broker passwords existed
            for key, name in (("zone_name", opts.zone_name), ("venue_name", opts.venue_name)):
                if name is not None:
                    rec[key] = name  # a name people read; the ids are unchanged
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


@dataclass(slots=True)
class _Stage:
    """A set staged in fw_new/: its top-level entries, the running ones it drops, and the
    bundle it replaces."""

    names: list[str]
    drop: list[str]
    previous: str


def _set_files(bundle: Bundle) -> dict[str, bytes]:
    """The set a bundle makes (its files but the loader, and its manifest); config.json aside."""
    files = {f.path: bundle.read(f.path) for f in bundle.files if f.path not in LOADER}
    files[MANIFEST] = bundle.manifest
    return files


def _observe(ws: Workspace, rec: dict[str, Any], seen: BoardFiles) -> None:
    """The record learns what the board holds: what it runs, its fallback, a staged set."""
    truth = {
        "bundle": seen.bundles.get("running") or None,
        "config": seen.running.get(CONFIG),
        "fallback": seen.bundles.get("fallback") or None,
        "staged": seen.bundles.get("staged") or (STAGE if seen.staged else None),
    }
    with ws.inventory.lock:
        before = {k: rec.get(k) for k in truth}
        switching = rec.pop("switching", None)
        rec.update(truth)
        rec["checked"] = int(time.time())
        if before != truth or switching:
            ws.commit("flash.observed", rec["id"], uid=rec["uid"], **truth, switch_was_due=switching)


def _stale(path: str, names: set[str]) -> bool:
    """A running-set entry the new set does not have, that looks like firmware (never data)."""
    top = path.split("/", 1)[0]
    if top in NOT_A_SET or top in names:
        return False
    return top in MANAGED_DIRS or top.endswith((".py", ".mpy")) or top in (CONFIG, MANIFEST)


def _running_is(seen: BoardFiles, want: dict[str, bytes], config: bytes) -> bool:
    """The running set is exactly this bundle and config (nothing to stage)."""
    if seen.running.get(CONFIG) != sha16(config) or seen.switch_pending:
        return False
    if any(seen.running.get(p) != sha16(d) for p, d in want.items()):
        return False
    extra = [p for p in seen.running if "/" in p and p.split("/", 1)[0] in MANAGED_DIRS and p not in want]
    return not extra


def _copy(
    ws: Workspace,
    link: DeviceLink,
    rec: dict[str, Any],
    bundle: Bundle,
    config: bytes,
    progress: Progress,
    out: Outcome,
) -> _Stage | None:
    """The copy step: the new set staged in fw_new/ (None: the board already runs it)."""
    seen = link.files("copy")
    _observe(ws, rec, seen)
    want = _set_files(bundle)
    _loader(link, seen, bundle, progress, out)
    if _running_is(seen, want, config):
        if STAGE in seen.root_dirs:
            link.remove("copy", STAGE)  # a set staged by a flash that did not finish
        _done(ws, rec, "copy", bundle=bundle.bundle_id, staged=False, copied=[])
        return None
    send = [p for p, d in want.items() if seen.staged.get(p) != sha16(d) and seen.running.get(p) != sha16(d)]
    progress.total(sum(len(want[p]) for p in send) + len(config))
    for p in sorted(set(seen.staged) - set(want) - {CONFIG}):
        link.remove("copy", f"{STAGE}/{p}")
        out.removed += 1
    for p, data in sorted(want.items(), key=lambda item: item[0] == MANIFEST):  # the manifest last
        if seen.staged.get(p) == sha16(data):
            continue
        if seen.running.get(p) == sha16(data):
            link.copy_on_board("copy", p, f"{STAGE}/{p}", hashlib.sha256(data).hexdigest())
            out.reused += 1
        else:
            link.put("copy", f"{STAGE}/{p}", data, progress.advance)
            out.copied += 1
    names = sorted({p.split("/", 1)[0] for p in want} | {CONFIG})
    top = {p.split("/", 1)[0] for p in seen.running} | set(seen.root_dirs)
    drop = sorted(e for e in top if _stale(e, set(names)))
    _done(ws, rec, "copy", bundle=bundle.bundle_id, staged=True, sent=sorted(send), reused=out.reused, drop=drop)
    return _Stage(names, drop, seen.bundles.get("running", ""))


def _loader(link: DeviceLink, seen: BoardFiles, bundle: Bundle, progress: Progress, out: Outcome) -> None:
    """boot.py, main.py and fwswitch.mpy: written in place (each atomically) when they differ;
    every version of them starts either set."""
    for f in bundle.files:
        if f.path in LOADER and seen.running.get(f.path) != f.sha256[:16]:
            link.put("copy", f.path, bundle.read(f.path), progress.advance)
            out.copied += 1


def _selftest(link: DeviceLink, rec: dict[str, Any], bundle: Bundle, uid: str, staged: bool) -> dict[str, str]:
    """The selftest step: the board must read back the identity it was given."""
    info = link.selftest(staged)
    got = (info.get("id"), info.get("kind"), info.get("bundle"), info.get("uid"))
    expect = (rec["id"], rec["kind"], bundle.bundle_id, uid)
    if got != expect:
        raise DeviceError(
            "selftest",
            "board reads back id={} kind={} bundle={} uid={}, expected {} {} {} {}".format(*got, *expect),
        )
    return info


def _switch(ws: Workspace, link: DeviceLink, rec: dict[str, Any], bundle: Bundle, stage: _Stage) -> None:
    """The switch step: intent recorded, the fallback made room for, fw.switch committed and
    finished, the result read back into the record."""
    with ws.inventory.lock:
        rec["switching"] = bundle.bundle_id
        ws.commit("flash.switch.begin", rec["id"], uid=rec["uid"], bundle=bundle.bundle_id, replaces=stage.previous)
    link.remove("switch", FALLBACK)  # the set running now becomes the fallback
    moved = link.switch(stage.names, stage.drop)
    running = link.run("switch", "_r = _gman('')")
    config = link.sha256("switch", CONFIG)[:16]
    if running != bundle.bundle_id:
        raise DeviceError(
            "switch", f"the board runs bundle {running or 'none'} after the switch, not {bundle.bundle_id}"
        )
    with ws.inventory.lock:
        rec.pop("switching", None)
        rec.update(bundle=running, config=config, fallback=stage.previous or None, staged=None)
        ws.commit("flash.switch", rec["id"], uid=rec["uid"], bundle=running, moved=moved, fallback=stage.previous)


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
        rec.pop("attempt", None)
        _done(ws, rec, "register", bundle=bundle.bundle_id, fw=rec["fw"], mpy=rec["mpy"])


_START_FAILURES = ("main: config.json", "main: hal", "main: no app", "main: app crashed")


def _started(text: str) -> None:
    """The restart step's check of what the app printed first: one line when it did not start
    (launch.py's `main: ...` line, with the exception before it, never the traceback)."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith(_START_FAILURES):
            cause = lines[i - 1] if i and not lines[i - 1].startswith((" ", "Traceback")) else ""
            raise DeviceError(
                "restart", f"the board did not start its app: {line[:120]}" + (f" ({cause[:120]})" if cause else "")
            )


class _Transaction:
    """One board's steps in order; `step` is the one under way, where a failure is reported."""

    def __init__(self, ws: Workspace, bundle: Bundle, opts: FlashOptions, port: str, progress: Progress) -> None:
        self.ws = ws
        self.bundle = bundle
        self.opts = opts
        self.progress = progress
        self.out = Outcome(port)
        self.step = "connect"
        self.rec: dict[str, Any] | None = None
        self.switched = False

    def enter(self, step: str, device: str | None = None) -> None:
        self.step = step
        self.progress.step(step, device)

    def run(self) -> None:
        plan = self.opts.image_plans.get(self.out.port)
        if plan is not None:
            self.enter("image")
            if isinstance(plan, Uf2Plan):
                write_uf2(plan)
            else:
                write_image(plan)
        self.enter("connect")
        with DeviceLink(self.out.port, self.opts.chunk, self.progress.retry, self.progress.cancel) as link:
            try:
                self._steps(link)
            except (ProvisionError, OSError):
                self.out.retries = link.retries
                self._back_to_app(link)
                raise
            self.out.retries = link.retries

    def _steps(self, link: DeviceLink) -> None:
        ws, bundle, opts, out = self.ws, self.bundle, self.opts, self.out
        self.enter("identify")
        uid = out.uid = link.uid().hex()
        rec, out.resumed = _begin(ws, uid, opts, bundle, opts.residents.get(out.port))
        self.rec = rec
        dev = out.device = rec["id"]

        self.enter("copy", dev)
        config = device_config(rec, opts)
        stage = _copy(ws, link, rec, bundle, config, self.progress, out)

        self.enter("key", dev)
        if stage is not None:
            link.put("key", f"{STAGE}/{CONFIG}", config, self.progress.advance)
            out.copied += 1
        _done(ws, rec, "key", written=stage is not None)

        self.enter("selftest", dev)
        info = _selftest(link, rec, bundle, uid, staged=stage is not None)
        out.kind = info["kind"]

        if stage is not None:
            self.enter("switch", dev)
            with link.holding_cancel():  # a switch once begun is finished
                _switch(ws, link, rec, bundle, stage)
            self.switched = out.staged = True

        if rec["kind"] == WRISTBAND:
            self.enter("clock", dev)
            now = int(time.time())
            link.run("clock", _CLOCK_CODE % {"dir": BAND_DATA_DIR, "k": BAND_K, "now": now})
            _done(ws, rec, "clock", unix=now)

        self.enter("register", dev)
        _register(ws, rec, bundle, info)

        self.enter("label", dev)
        out.label = label_for(uid, rec)
        write_label(ws.labels_dir, out.label)
        _done(ws, rec, "label", check=out.label.check)

        self.enter("restart", dev)
        with link.holding_cancel():
            out.started_at = time.time()
            try:
                _started(link.restart())
            except DeviceError:
                if self.switched:
                    self._roll_back(link)
                raise

    def _roll_back(self, link: DeviceLink) -> None:
        """The new set passed its self-test but its app does not start: the fallback goes back
        into place (the same switch, fw_old/ -> running, the failed set kept in fw_new/)."""
        if self.rec is None:
            return
        try:
            link.repl.enter(tries=5)
            seen = link.files("restart")
            names = sorted({p.split("/", 1)[0] for p in seen.fallback})
            if not names:
                return  # a first flash: there is nothing to go back to
            top = {p.split("/", 1)[0] for p in seen.running} | set(seen.root_dirs)
            drop = sorted(e for e in top if _stale(e, set(names)))
            link.remove("restart", STAGE)
            link.switch(names, drop, src=FALLBACK, keep=STAGE)
            _observe(self.ws, self.rec, link.files("restart"))
            with self.ws.inventory.lock:
                self.ws.commit("flash.rollback", self.rec["id"], uid=self.rec["uid"], bundle=self.rec.get("bundle"))
            link.restart()
            self.out.restarted = True
        except (ProvisionError, OSError):
            pass

    def _back_to_app(self, link: DeviceLink) -> None:
        """After a failure: the board is sent back to its app (the set it runs) and the record
        learns what it holds, as far as the port still answers."""
        if self.out.restarted:
            return  # rolled back and restarted already
        with link.holding_cancel():
            try:
                if self.rec is not None:
                    link.repl.enter(tries=3)
                    seen = link.files(self.step)
                    _observe(self.ws, self.rec, seen)
                    self.out.blank = not seen.bundles.get("running")
                link.restart()
                self.out.restarted = self.step != "restart"
            except (ProvisionError, OSError):
                pass


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
            _attempt(ws, run.rec, out, bundle)
    progress.step("done" if out.ok else "failed", out.device)
    return out


def _attempt(ws: Workspace, rec: dict[str, Any] | None, out: Outcome, bundle: Bundle) -> None:
    """A failed flash goes into the audit log and, for a known board, its record."""
    with ws.inventory.lock:
        if rec is not None:
            rec["attempt"] = {
                "bundle": bundle.bundle_id,
                "step": out.step,
                "reason": out.reason,
                "at": int(time.time()),
            }
        ws.commit(
            "flash.failed", out.device, uid=out.uid, port=out.port, step=out.step, reason=out.reason,
            restarted=out.restarted,
        )  # fmt: skip


def flash_all(
    ws: Workspace,
    bundle: Bundle,
    opts: FlashOptions,
    ports: list[str],
    make_progress: Callable[[str], Progress],
) -> list[Outcome]:
    """Flash every port in parallel; outcomes in the order of `ports`.

    Ctrl-C (KeyboardInterrupt) stops every board at its next safe point (a switch under way is
    finished), sends it back to its app, and is raised again once all have stopped, with the
    outcomes in `Interrupted.outcomes`.
    """
    cancel = threading.Event()
    progresses = [make_progress(port) for port in ports]
    for p in progresses:
        p.cancel = cancel
    with ThreadPoolExecutor(max_workers=max(1, len(ports)), thread_name_prefix="flash") as pool:
        futures = [pool.submit(flash_one, ws, bundle, opts, port, p) for port, p in zip(ports, progresses, strict=True)]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            cancel.set()
            raise Interrupted([f.result() for f in futures]) from None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a flash: every board stopped at a safe point; what each one reached."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("stopped")
        self.outcomes = outcomes
