"""guardian-provision: what a field technician runs to flash, key, self-test, register and label devices.

    guardian-provision bundle --kind KIND --out DIR [--board NAME] [--transport mqtt|uart]
    guardian-provision flash --kind KIND --port PORT [--port PORT ...] --venue V --zone Z
        (--broker HOST:PORT | --transport uart) [--board NAME] [--image IMG [--drive DIR ...]]
        [--wifi FILE]          (an MQTT --board on Wi-Fi; or $GE_WIFI_SSID and $GE_WIFI_PASSWORD)
        [--bundle DIR] [--channel NAME:TYPE[:key=value,...] ...]   (kind sensor: required, 1 to 8)
        [--resident REF ...]                         (kind wristband: one per --port, in order)
    guardian-provision list
    guardian-provision export --format csv|json [--out FILE]
    guardian-provision export --format gateway --gateway-key GW.x25519.pub --out FILE
    guardian-provision label DEVICE
    guardian-provision audit verify
    guardian-provision revoke DEVICE --broker HOST:PORT --central-key KEY --gateway GW --venue V
    guardian-provision enroll-server --state DIR init|claim|allow|serve|revoke|list ...

State lives in --home (default $GE_PROVISION_HOME, else ~/.local/share/guardian-provision):
the encrypted inventory (passphrase from $GE_PROVISION_PASSPHRASE or the terminal), the audit
log and the labels. User errors are printed as `guardian-provision: message` with exit
status 1 and no traceback; `flash` exits 1 when any device failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.shared.cli_table import Command, add_commands, address, handler_of, ident, no_arguments
from agent.shared.errors import AgentError
from agent.shared.protocol import WRISTBAND
from provisioning.bundle import KINDS
from provisioning.errors import ProvisionError

PROG = "guardian-provision"
EXPORT_FIELDS = (
    "id", "kind", "uid", "venue", "zone", "state", "bundle", "fw", "mpy", "provisioned", "resident",
    "venue_name", "zone_name", "fallback", "last_failure",
)  # fmt: skip


def _ttl(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds in 1..86400, got {text!r}")
    return int(text)


def _workspace(args: argparse.Namespace, create: bool = False) -> Any:
    from provisioning.workspace import Workspace, default_home

    return Workspace(args.home or default_home(), create=create)


# ------------------------------------------------------------------------------- commands


def _board(args: argparse.Namespace) -> Any:
    from provisioning.boards import VIRTUAL, load_board
    from provisioning.bundle import FIRMWARE_DIR

    if not args.board:
        return VIRTUAL
    return load_board(args.board, getattr(args, "firmware", None) or FIRMWARE_DIR)


def cmd_bundle(args: argparse.Namespace) -> int:
    from provisioning.bundle import FIRMWARE_DIR, build_bundle

    b = build_bundle(
        args.kind, args.out, root=args.firmware or FIRMWARE_DIR, board=_board(args), transport=args.transport
    )
    on = f" on board {b.board} ({b.port})" if b.board else ""
    on += f", {b.transport} link only" if b.transport else ""
    print(f"{b.root}: bundle {b.bundle_id} for {b.kind}{on}, version {b.version}, {len(b.files)} files")
    return 0


RESIDENT_MAX = 80  # agent/gateway/wristbands/venue.py: a resident's reference is 1-80 characters


def _residents(args: argparse.Namespace) -> dict[str, str]:
    if args.kind != WRISTBAND:
        if args.resident:
            raise ProvisionError(f"flash: --resident is for --kind wristband only, not {args.kind}")
        return {}
    if len(args.resident) != len(args.port):
        raise ProvisionError(
            f"flash: --kind wristband needs one --resident REF per --port, in the same order "
            f"({len(args.port)} ports, {len(args.resident)} residents)"
        )
    for ref in args.resident:
        if not ref.strip() or len(ref) > RESIDENT_MAX or not ref.isprintable():
            raise ProvisionError(f"flash: --resident: expected 1-{RESIDENT_MAX} printable characters")
    return dict(zip(args.port, args.resident, strict=True))


def _image_plans(args: argparse.Namespace, board: Any) -> dict[str, Any]:
    from provisioning.image import plan_image, plan_uf2

    if args.drive and (not args.image or board.image_route != "uf2"):
        raise ProvisionError("flash: --drive is for a UF2 --image (a --board whose port is rp2 or zephyr)")
    if not args.image:
        return {}
    if board.image_route == "uf2":
        if args.drive and len(args.drive) != len(args.port):
            raise ProvisionError("flash: give one --drive per --port, in the same order")
        drives = args.drive or [None] * len(args.port)
        return {port: plan_uf2(port, args.image, board.port, d) for port, d in zip(args.port, drives, strict=True)}
    # esptool: ESP boards, and the default when no --board names the route
    return {port: plan_image(port, args.image) for port in args.port}


def _check_link(args: argparse.Namespace) -> None:
    """How the device reaches its gateway: a broker for MQTT, nothing for a wristband."""
    if args.kind == WRISTBAND:
        if args.broker is not None or args.transport != "mqtt":
            raise ProvisionError("flash: a wristband only advertises; --broker and --transport are not for it")
    elif args.transport == "mqtt" and args.broker is None:
        raise ProvisionError("flash: --broker HOST:PORT is required with --transport mqtt")


def _wifi(args: argparse.Namespace, board: Any) -> Any:
    """The Wi-Fi credentials an MQTT board on Wi-Fi gets (provisioning/wifi.py), else None."""
    from provisioning.wifi import ENV_PASSWORD, ENV_SSID, credentials

    needs = board.wifi and args.kind != WRISTBAND and args.transport == "mqtt"
    if not needs:
        if args.wifi is not None:
            raise ProvisionError(
                "flash: --wifi is for a board that reaches the broker over Wi-Fi "
                "(--board on the esp32 or rp2 port with --transport mqtt)"
            )
        return None  # variables left in the environment are not for this board
    wifi = credentials(args.wifi)
    if wifi is None:
        raise ProvisionError(
            f"flash: board {board.name} reaches the broker over Wi-Fi: give the network with --wifi FILE "
            f'(TOML: ssid = "...", password = "...", mode 0600) or ${ENV_SSID} and ${ENV_PASSWORD}'
        )
    return wifi


def _checked(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Everything about a flash that can be judged before a board is touched: (channels,
    broker, the status page for the online check)."""
    from provisioning.bundle import FIRMWARE_DIR
    from provisioning.channels import channels_for
    from provisioning.online import StatusPage
    from provisioning.ports import check_ports
    from provisioning.validate import broker_address, broker_answers, check_channels, display_name

    _check_link(args)
    try:
        channels = channels_for(args.kind, args.channel)
        if channels:
            check_channels(channels, args.channel, args.firmware or FIRMWARE_DIR)
        broker = broker_address(args.broker) if args.broker is not None else None
        for what in ("zone_name", "venue_name"):
            if getattr(args, what) is not None:
                display_name(getattr(args, what), "--" + what.replace("_", "-"))
    except ProvisionError as exc:
        raise ProvisionError(f"flash: {exc}") from None
    if len(set(args.port)) != len(args.port):
        raise ProvisionError("flash: a port is named twice")
    check_ports(args.port)
    page = None
    if args.gateway is not None:
        if args.gateway_token is None:
            raise ProvisionError("flash: --gateway needs --gateway-token FILE (a copy of the page's token file)")
        page = StatusPage(args.gateway, args.gateway_token, args.gateway_ca)
        page.view()  # the page answers, with this token
        if broker is not None:
            why = broker_answers(*broker)
            if why is not None:
                raise ProvisionError(
                    f"flash: no MQTT broker answers at {broker[0]}:{broker[1]} from here ({why}); "
                    "check --broker; nothing was flashed"
                )
    return channels, broker, page


def cmd_flash(args: argparse.Namespace) -> int:
    from provisioning.bundle import build_bundle, load_bundle
    from provisioning.flash import FlashOptions, Interrupted, flash_all

    channels, broker, page = _checked(args)
    residents = _residents(args)
    board = _board(args)
    wifi = _wifi(args, board)
    plans = _image_plans(args, board)
    with _workspace(args, create=True) as ws:
        if args.bundle:
            bundle = load_bundle(args.bundle)
            if bundle.kind != args.kind:
                raise ProvisionError(f"{args.bundle}: bundle is for {bundle.kind}, not {args.kind}")
            if bundle.board != board.name:
                have = bundle.board or "the virtual board"
                raise ProvisionError(f"{args.bundle}: bundle is for {have}, not {board.name or 'the virtual board'}")
            if bundle.transport and args.kind != WRISTBAND and bundle.transport != args.transport:
                raise ProvisionError(
                    f"{args.bundle}: bundle carries only the {bundle.transport} link, not {args.transport}"
                )
        else:
            # the device's one link only (a band has none)
            transport = None if args.kind == WRISTBAND else args.transport
            name = "-".join(x for x in (args.kind, board.name, transport) if x)
            bundle = build_bundle(args.kind, ws.home / "bundles" / name, board=board, transport=transport)
        opts = FlashOptions(
            args.kind,
            args.venue,
            args.zone,
            broker,
            args.transport,
            args.chunk,
            plans,
            channels,
            board,
            residents,
            wifi,
            args.zone_name,
            args.venue_name,
        )
        try:
            outcomes = _run_flash(lambda make: flash_all(ws, bundle, opts, args.port, make), args.port)
        except Interrupted as stop:
            _report(stop.outcomes)
            print(
                f"{PROG}: stopped (Ctrl-C); every board not done keeps the firmware it ran before "
                "(`guardian-provision list` shows what each one runs); run the same command again to finish",
                file=sys.stderr,
            )
            return 130
    failed = _report(outcomes)
    if failed:
        print(
            f"{PROG}: {failed} of {len(outcomes)} devices failed; each failed board keeps the firmware it ran "
            "before; run the same command again to complete them",
            file=sys.stderr,
        )
        return 1
    if page is not None and not _online(page, outcomes, args):
        return 1
    return 0


def _online(page: Any, outcomes: list[Any], args: argparse.Namespace) -> bool:
    """The online check: each flashed device's first frame at the gateway, or why not."""
    from provisioning.online import wait_heard

    restarts = {o.device: o.started_at for o in outcomes if o.ok and o.kind != WRISTBAND and o.started_at}
    if not restarts:
        return True
    heard = wait_heard(page, restarts, args.broker or "-", args.online_timeout)
    for h in heard:
        if h.ok:
            print(f"{h.device}: online: its first frame reached the gateway {h.after_s:.1f} s after its restart")
        else:
            print(f"{h.device}: flashed, but not heard by the gateway within {args.online_timeout:g} s: {h.why}")
    missing = sum(1 for h in heard if not h.ok)
    if missing:
        print(f"{PROG}: {missing} of {len(heard)} flashed devices not heard by the gateway", file=sys.stderr)
    return not missing


def _report(outcomes: list[Any]) -> int:
    """One line per board (and its label); how many failed."""
    failed = 0
    for o in outcomes:
        cable = f"; {o.retries} line errors recovered: check the cable" if o.retries else ""
        if o.ok:
            how = "resumed" if o.resumed else "new"
            print(f"{o.port}: {o.device} ok ({how}; {o.copied} files copied, {o.removed} removed{cable})")
            if o.label is not None:
                print(f"  label: {o.label.text}")
        else:
            failed += 1
            who = o.device or (f"board {o.uid}" if o.uid else "no device")
            back = (
                "; the board holds no firmware yet: flash it again once this is fixed"
                if o.blank
                else "; the board was restarted into the firmware it ran before"
                if o.restarted
                else ""
            )
            print(f"{o.port}: {who} FAILED at {o.step}: {o.reason}{back}{cable}")
    return failed


def _run_flash(run: Callable[[Callable[[str], Any]], list[Any]], ports: list[str]) -> list[Any]:
    """Run the flash with one rich progress bar per port."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from provisioning.flash import Progress as FlashProgress

    console = Console(stderr=True)
    bars = Progress(
        TextColumn("{task.fields[port]:<14} {task.fields[device]:<22}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[step]}"),
        console=console,
        transient=False,
    )

    class Bar(FlashProgress):
        def __init__(self, port: str) -> None:
            self.task = bars.add_task(port, total=None, port=port, device="", step="waiting")

        def step(self, name: str, device: str | None = None) -> None:
            fields: dict[str, Any] = {"step": name}
            if device:
                fields["device"] = device
            if name == "done":
                bars.update(self.task, completed=bars.tasks[self.task].total or 0, **fields)
            else:
                bars.update(self.task, **fields)

        def total(self, nbytes: int) -> None:
            bars.update(self.task, total=nbytes, completed=0)

        def advance(self, nbytes: int) -> None:
            bars.advance(self.task, nbytes)

    with bars:
        return run(Bar)


def cmd_list(args: argparse.Namespace) -> int:
    with _workspace(args) as ws:
        rows = _rows(ws.inventory.data)
    for r in rows:
        where = f"{r['venue_name'] or r['venue']}/{r['zone_name'] or r['zone']}"
        line = f"{r['id']:<22} {r['kind']:<11} {where:<24} {r['state']:<12} bundle {r['bundle'] or '-'}"
        line += f" (fallback {r['fallback']})" if r["fallback"] else ""
        line += f" since {r['provisioned']}" if r["provisioned"] else ""
        print(line)
        if r["last_failure"]:
            print(f"  last flash failed: {r['last_failure']}")
    print(f"{len(rows)} devices")
    return 0


def _row(rec: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    """A record as people read it: names next to ids, local times, no secret."""
    from provisioning.times import local_time

    row = {f: rec.get(f) or "" for f in EXPORT_FIELDS}
    row["provisioned"] = local_time(rec.get("provisioned")) if rec.get("provisioned") else ""
    failed = rec.get("attempt")
    if isinstance(failed, dict):
        row["last_failure"] = f"{local_time(failed.get('at'))} at {failed.get('step')}: {failed.get('reason')}"
    if state is not None:
        row["state"] = state
    return row


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [_row(rec) for rec in data["devices"].values()]
    rows += [_row(rec, "revoked") for rec in data["revoked"].values()]
    return sorted(rows, key=lambda r: str(r["id"]))


def cmd_export(args: argparse.Namespace) -> int:
    with _workspace(args) as ws:
        data = ws.inventory.data
        if args.format == "gateway":
            return _export_gateway(args, ws)
        rows = _rows(data)
        if args.venue:
            rows = [r for r in rows if r["venue"] == args.venue]
        if args.format == "json":
            text = json.dumps(rows, indent=2, sort_keys=True) + "\n"
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            text = buf.getvalue()
        if args.out:
            args.out.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        ws.commit("export", None, format=args.format, devices=len(rows), out=str(args.out or "-"))
    return 0


def _export_gateway(args: argparse.Namespace, ws: Any, only: str | None = None) -> int:
    from agent.shared.device_bundle import fingerprint, load_seal_public_key, seal_devices
    from agent.shared.registry import Device

    if args.gateway_key is None or args.out is None:
        raise ProvisionError("export --format gateway needs --gateway-key GW.x25519.pub and --out FILE")
    try:
        gateway, public = load_seal_public_key(args.gateway_key)
    except AgentError as exc:
        raise ProvisionError(str(exc)) from None
    from agent.shared.broker_auth import password_hash

    # the gateway gets each device's broker password only as Mosquitto's hash
    devices = [
        Device(
            r["id"],
            r["kind"],
            bytes.fromhex(r["key"]),
            r["venue"],
            r["zone"],
            password_hash(r["broker_password"]) if "broker_password" in r else None,
        )
        for r in sorted(ws.inventory.data["devices"].values(), key=lambda r: str(r["id"]))
        if r.get("state") == "provisioned"
        and (only is None or r["id"] == only)
        and (only is not None or args.venue is None or r["venue"] == args.venue)
    ]
    if not devices:
        raise ProvisionError("no provisioned devices to export" + (f" for venue {args.venue}" if args.venue else ""))
    blob = seal_devices(public, gateway, devices, int(time.time()))
    args.out.write_bytes(blob)
    ws.commit(
        "export.gateway",
        None,
        gateway=gateway,
        recipient=fingerprint(public),
        devices=[d.id for d in devices],
        out=str(args.out),
    )
    print(f"{args.out}: {len(devices)} devices sealed to gateway {gateway}")
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    from provisioning.ports import list_ports

    ports = list_ports()
    for p in ports:
        print(p.line())
    print(f"{len(ports)} serial ports" + ("" if ports else " (is the board plugged in, the cable a data cable?)"))
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    """A device to another zone (or venue) without revoking it: inventory, audit log, label,
    and the gateway's registry through a sealed export of the device."""
    from provisioning.labels import label_for, write_label
    from provisioning.validate import display_name

    for what in ("zone_name", "venue_name"):
        if getattr(args, what) is not None:
            display_name(getattr(args, what), "--" + what.replace("_", "-"))
    if (args.gateway_key is None) != (args.out is None):
        raise ProvisionError("move: --gateway-key and --out go together (the sealed export for the gateway)")
    with _workspace(args) as ws:
        found = ws.inventory.by_id(args.device)
        if found is None:
            raise ProvisionError(f"move: no device {args.device} in the inventory (revoked devices cannot move)")
        uid, rec = found
        before = {k: rec.get(k) for k in ("venue", "zone", "venue_name", "zone_name")}
        venue = args.venue or rec["venue"]
        with ws.inventory.lock:
            rec["venue"], rec["zone"] = venue, args.zone
            if venue != before["venue"]:
                rec.pop("venue_name", None)  # another venue's name is not this one's
            for key in ("zone_name", "venue_name"):
                if getattr(args, key) is not None:
                    rec[key] = getattr(args, key)
                elif key == "zone_name" and args.zone != before["zone"]:
                    rec.pop(key, None)
            after = {k: rec.get(k) for k in before}
            ws.commit("move", rec["id"], uid=uid, before=before, after=after)
        label = label_for(uid, rec)
        write_label(ws.labels_dir, label)
        print(f"{rec['id']}: moved from {_where(before)} to {_where(after)}; new label: {label.text}")
        if args.out is not None:
            _export_gateway(args, ws, only=rec["id"])
            print(f"  on the gateway: guardian-agent devices import --config agent.toml {args.out}; restart the agent")
        else:
            print("  the gateway learns it from: guardian-provision export --format gateway (then devices import)")
        if venue != before["venue"]:
            print(
                f"  another venue: re-flash it with that venue's broker (flash --venue {venue} --zone {args.zone} ...)"
            )
    return 0


def _where(names: dict[str, Any]) -> str:
    venue = names["venue"] + (f" ({names['venue_name']})" if names.get("venue_name") else "")
    zone = names["zone"] + (f" ({names['zone_name']})" if names.get("zone_name") else "")
    return f"{venue}/{zone}"


def cmd_label(args: argparse.Namespace) -> int:
    from provisioning.labels import label_for, write_label

    with _workspace(args) as ws:
        found = ws.inventory.by_id(args.device)
        if found is None:
            raise ProvisionError(f"no device {args.device} in the inventory")
        uid, rec = found
        label = label_for(uid, rec)
        paths = write_label(ws.labels_dir, label)
        ws.commit("label", rec["id"], check=label.check)
    print(label.text)
    print("  " + "  ".join(str(p) for p in paths))
    return 0


def cmd_sheet(args: argparse.Namespace) -> int:
    """A printable sheet of labels (PDF or SVG) for a tray of devices."""
    from provisioning.labels import label_for, write_sheet

    if args.out.suffix.lower() not in (".pdf", ".svg"):
        raise ProvisionError(f"labels: --out {args.out}: a .pdf or .svg file")
    with _workspace(args) as ws:
        devices = ws.inventory.data["devices"]
        chosen = [
            (uid, rec)
            for uid, rec in sorted(devices.items(), key=lambda item: str(item[1]["id"]))
            if (not args.device or rec["id"] in args.device) and (args.venue is None or rec["venue"] == args.venue)
        ]
        unknown = sorted(set(args.device) - {rec["id"] for _, rec in chosen})
        if unknown:
            raise ProvisionError(f"labels: not in the inventory: {', '.join(unknown)}")
        if not chosen:
            raise ProvisionError("labels: no devices to label" + (f" in venue {args.venue}" if args.venue else ""))
        pages = write_sheet(args.out, [label_for(uid, rec) for uid, rec in chosen])
        ws.commit("labels.sheet", None, devices=[rec["id"] for _, rec in chosen], out=str(args.out))
    print(f"{args.out}: {len(chosen)} labels on {pages} A4 page(s)")
    return 0


def cmd_practice(args: argparse.Namespace) -> int:
    """`guardian-rig practice` (the rig owns the virtual boards) in this process's place."""
    import os

    cmd = [sys.executable, "-m", "hil_tests.cli", "practice", "--posts", str(args.posts)]
    cmd += ["--sensors", str(args.sensors), "--bands", str(args.bands)]
    cmd += ["--dir", str(args.dir)] if args.dir else []
    sys.stdout.flush()
    # exec, not a child: Ctrl-C (or a SIGINT to this pid) reaches the rig, which stops every
    # board, broker and gateway it started; a parent in subprocess.run SIGKILLs its child
    # 0.25 s after Ctrl-C, and the brokers and gateway outlived it
    os.execv(sys.executable, cmd)  # noqa: S606 - this interpreter, the rig's CLI


def _practice_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, help="where the venue lives (default: a new temporary directory)")
    p.add_argument("--posts", type=int, default=3, help="virtual alarm posts (default 3)")
    p.add_argument("--sensors", type=int, default=1, help="virtual venue sensors (default 1)")
    p.add_argument("--bands", type=int, default=1, help="virtual wristbands (default 1)")


def cmd_audit(args: argparse.Namespace) -> int:
    with _workspace(args) as ws:
        head = ws.audit.head  # opening verified the whole chain up to the inventory's record
    print(f"{ws.audit_path}: ok, {head.seq} entries, head {head.hash[:16]}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from agent.central.command_sender import send
    from agent.shared.commands import OP_REVOKE, key_fingerprint

    with _workspace(args) as ws:
        found = ws.inventory.by_id(args.device)
        if found is None:
            raise ProvisionError(f"no device {args.device} in the inventory (already revoked?)")
        uid, rec = found
        try:
            sent = send(args.central_key, args.broker, args.gateway, args.venue, OP_REVOKE, {1: rec["id"]}, args.ttl)
        except AgentError as exc:
            raise ProvisionError(f"revoke {rec['id']}: not sent, inventory unchanged: {exc}") from None
        seq = sent.seq
        with ws.inventory.lock:
            fp = key_fingerprint(bytes.fromhex(rec["key"]))
            gone = {k: v for k, v in rec.items() if k not in ("key", "broker_password", "steps")}
            ws.inventory.data["revoked"][uid] = {**gone, "key_fp": fp, "revoked_at": int(time.time())}
            del ws.inventory.data["devices"][uid]
            ws.commit("revoke", rec["id"], uid=uid, gateway=args.gateway, command_seq=seq, key_fp=fp)
    print(
        f"{args.device}: revoked (REVOKE command seq {seq} sent to gateway {args.gateway}); removed from the inventory"
    )
    return 0


# --- venue: one description of a venue -> the gateway's venue file and the simulation's air ---


def _venue_bands(args: argparse.Namespace, venue_id: str) -> dict[str, tuple[str, ...]]:
    """resident reference -> the ids of the venue's provisioned bands for it in the inventory
    (a band whose first flash stopped before `register` is not worn yet)."""
    from provisioning.workspace import default_home

    home = args.home or default_home()
    if not (home / "inventory.ge").exists():
        return {}
    bands: dict[str, tuple[str, ...]] = {}
    with _workspace(args) as ws:
        for r in ws.inventory.data["devices"].values():
            if (
                r.get("kind") == WRISTBAND
                and r.get("resident")
                and r.get("venue") == venue_id
                and r.get("state") == "provisioned"
            ):
                bands[str(r["resident"])] = (*bands.get(str(r["resident"]), ()), str(r["id"]))
    return bands


def cmd_venue_check(args: argparse.Namespace) -> int:
    from provisioning.venue import load

    v = load(args.file)
    print(
        f"{args.file}: venue {v.id} ({v.name}): {len(v.zones)} zones, {len(v.scanners)} scanners, "
        f"{len(v.doors)} doors, {len(v.residents)} residents"
    )
    return 0


def cmd_venue_build(args: argparse.Namespace) -> int:
    from agent.shared.files import write_atomic
    from provisioning.venue import air_venue, alerts_toml, load, with_bands

    described = load(args.file)
    v = with_bands(described, _venue_bands(args, described.id), args.file)
    gateway = alerts_toml(v, args.file.name)
    air = None
    if args.air is not None:
        import yaml

        air = yaml.safe_dump(air_venue(v, str(args.file)), allow_unicode=True, sort_keys=False)
    # both made before either is written: a refusal leaves the files as they were
    write_atomic(args.out, gateway.encode(), 0o644)
    print(f"{args.out}: the gateway's venue file for {v.id}: {len(v.zones)} zones, {len(v.residents)} residents")
    if air is not None:
        write_atomic(args.air, air.encode(), 0o644)
        print(f"{args.air}: the virtual air's venue ({len(v.scanners)} scanners)")
    return 0


def _venue_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="the venue description (YAML)")


def _venue_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="the venue description (YAML)")
    p.add_argument("--out", required=True, type=Path, help="the gateway's venue file to write ([wristbands] alerts)")
    p.add_argument("--air", type=Path, help="also the virtual air's venue (YAML) for simulation")


VENUE_ACTIONS = (
    Command("check", cmd_venue_check, _venue_check_arguments, "check a venue description (file:line errors)"),
    Command(
        "build",
        cmd_venue_build,
        _venue_build_arguments,
        "the gateway's venue file (and the simulation's) from the description, bands from the inventory",
    ),
)


def _venue_arguments(p: argparse.ArgumentParser) -> None:
    add_commands(p, VENUE_ACTIONS, dest="action", metavar="ACTION")


# --- enroll-server: central's enrollment responder (agent/central/enroll_server.py) -----------------


def _enroll_state(args: argparse.Namespace) -> Path:
    import os

    state = args.state or (Path(os.environ["GE_ENROLL_STATE"]) if os.environ.get("GE_ENROLL_STATE") else None)
    if state is None:
        raise ProvisionError("enroll-server: pass --state DIR (or set $GE_ENROLL_STATE)")
    return Path(state)


def cmd_enroll_server_init(args: argparse.Namespace) -> int:
    from agent.central import enroll_server as es

    state = _enroll_state(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ProvisionError("enroll-server init: --tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    covers = es.init(state, args.central_key, args.url, args.broker, args.tls_name, tls)
    print(f"{state}: enroll-server ready to issue claims for {args.url}; TLS: {covers}")
    return 0


def cmd_enroll_server_claim(args: argparse.Namespace) -> int:
    from agent.central import enroll_server as es

    claim = es.issue_claim(_enroll_state(args), args.gateway, args.venue, args.ttl, args.out)
    print(f"{args.out}: claim {claim.id} for gateway {args.gateway} at {args.venue}, expires {claim.expires}")
    return 0


def cmd_enroll_server_allow(args: argparse.Namespace) -> int:
    from agent.central import enroll_server as es

    state = _enroll_state(args)
    if not args.serial and not args.claim:
        raise ProvisionError("enroll-server allow: give --serial S or --claim C (repeatable)")
    es.allow(state, args.serial, args.claim)
    print(f"allowed: serials {args.serial} claims {args.claim}")
    return 0


def cmd_enroll_server_revoke(args: argparse.Namespace) -> int:
    from agent.central import enroll_server as es

    state = _enroll_state(args)
    gw = es.revoke(state, args.gateway)
    print(f"gateway {gw.id}: revoked; its batches are rejected by verifiers reading {state / es.GATEWAYS}")
    return 0


def cmd_enroll_server_list(args: argparse.Namespace) -> int:
    from agent.central import enroll_server as es

    print("\n".join(es.listing(_enroll_state(args))))
    return 0


def cmd_enroll_server_serve(args: argparse.Namespace) -> int:
    from agent.central import enroll_server as es
    from agent.shared.log import setup as log_setup

    state = _enroll_state(args)
    log_setup("info")
    limits = es.Limits(workers=args.workers, deadline_s=args.deadline)
    es.serve(state, args.listen, es.print_ready, limits)
    return 0


# --- arguments ----------------------------------------------------------------------------


def _bundle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--out", required=True, type=Path, help="bundle directory to create or replace")
    p.add_argument("--firmware", type=Path, help="firmware tree (default: the project's firmware/)")
    p.add_argument("--board", help="board file firmware/boards/NAME.json (default: the virtual board)")
    p.add_argument(
        "--transport",
        choices=("mqtt", "uart"),
        help="carry only this link to the gateway (default: both; flash builds with its own)",
    )


def _flash_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--port", required=True, action="append", help="serial port; repeat for several boards")
    p.add_argument("--venue", required=True, type=ident, help="the venue's id (ASCII)")
    p.add_argument("--zone", required=True, type=ident, help="the zone's id (ASCII)")
    p.add_argument("--zone-name", help="the zone as people read it, any script (e.g. 大厅); default: the id")
    p.add_argument("--venue-name", help="the venue as people read it, any script; default: the id")
    p.add_argument("--broker", help="the venue's local MQTT broker HOST:PORT (checked; online with --gateway)")
    p.add_argument("--gateway", metavar="URL", help="online check: the gateway's status page http(s)://HOST:PORT")
    p.add_argument("--gateway-token", type=Path, metavar="FILE", help="a copy of the status page's token file")
    p.add_argument("--gateway-ca", type=Path, metavar="FILE", help="the status page's certificate (https)")
    p.add_argument("--online-timeout", type=float, default=60.0, help="seconds to wait for each first frame")
    p.add_argument("--transport", choices=("mqtt", "uart"), default="mqtt")
    p.add_argument("--board", help="board file firmware/boards/NAME.json: pin map and base-image route")
    p.add_argument(
        "--wifi",
        type=Path,
        metavar="FILE",
        help="Wi-Fi credentials for an MQTT board on Wi-Fi: TOML with ssid and password, mode 0600 "
        "(default: $GE_WIFI_SSID and $GE_WIFI_PASSWORD)",
    )
    p.add_argument(
        "--image", type=Path, help="base MicroPython image, checked, then written (esptool, or UF2 to --drive)"
    )
    p.add_argument(
        "--drive", type=Path, action="append", default=[], help="UF2 bootloader drive; one per --port, in order"
    )
    p.add_argument(
        "--resident",
        action="append",
        default=[],
        metavar="REF",
        help="kind wristband: the resident's reference (as in the venue file); one per --port, in order",
    )
    p.add_argument("--bundle", type=Path, help="a bundle directory (default: built from firmware/)")
    p.add_argument("--firmware", type=Path, help=argparse.SUPPRESS)  # the tree the host checks run from
    p.add_argument("--chunk", type=int, default=512, choices=(256, 512, 1024, 2048), help="bytes per write")
    p.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME:TYPE[:key=value,...]",
        help="a sensor channel (kind sensor: required, repeat for each, at most 8); TYPE smoke|gas|door|"
        "extinguisher; keys on, off, confirm_ms, clear_ms, fault_ms (integers)",
    )


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=("csv", "json", "gateway"))
    p.add_argument("--out", type=Path, help="output file (default: standard output; required for gateway)")
    p.add_argument("--venue", type=ident, help="only devices of this venue")
    p.add_argument("--gateway-key", type=Path, help="the gateway's .x25519.pub file (format gateway)")


def _move_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", type=ident)
    p.add_argument("--zone", required=True, type=ident, help="the new zone's id (ASCII)")
    p.add_argument("--zone-name", help="the new zone as people read it, any script (e.g. 大厅)")
    p.add_argument("--venue", type=ident, help="the new venue's id (default: the same venue)")
    p.add_argument("--venue-name", help="the venue as people read it")
    p.add_argument("--gateway-key", type=Path, help="seal the moved device to this gateway (.x25519.pub) ...")
    p.add_argument("--out", type=Path, help="... into this file, for guardian-agent devices import")


def _label_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", type=ident)


def _sheet_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", nargs="*", type=ident, help="devices (default: every device in the inventory)")
    p.add_argument("--out", required=True, type=Path, help="the sheet: FILE.pdf or FILE.svg (A4)")
    p.add_argument("--venue", type=ident, help="only devices of this venue")


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("verify",))


def _revoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", type=ident)
    p.add_argument("--broker", required=True, type=address, help="central broker HOST:PORT")
    p.add_argument("--central-key", required=True, type=Path, help="central's private command key")
    p.add_argument("--gateway", required=True, type=ident, help="the gateway the device reports to")
    p.add_argument("--venue", required=True, type=ident, help="the gateway's venue")
    p.add_argument("--ttl", type=_ttl, default=300, help="seconds until the command expires (default 300)")


def _es_init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--central-key", required=True, type=Path, help="central's private key (guardian-agent keygen)")
    p.add_argument("--url", required=True, help="https://HOST:PORT/ge/1/enroll as gateways will reach it")
    p.add_argument("--broker", required=True, type=address, help="central broker HOST:PORT gateways uplink to")
    p.add_argument("--tls-name", action="append", default=[], help="another DNS name or IP for the certificate")
    p.add_argument("--tls-cert", type=Path, help="use this PEM certificate instead of a self-signed one")
    p.add_argument("--tls-key", type=Path, help="the certificate's key (mode 0600)")


def _es_claim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway", required=True, type=ident, help="the gateway id to enroll")
    p.add_argument("--venue", required=True, type=ident, help="the venue it serves")
    p.add_argument("--out", required=True, type=Path, help="claim file to create (mode 0600)")
    p.add_argument("--ttl", type=_claim_ttl, default=7 * 86400, help="seconds until it expires (default 7 days)")


def _es_allow_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--serial", action="append", default=[], type=_serial, help="hardware serial (repeatable)")
    p.add_argument("--claim", action="append", default=[], type=ident, help="claim id (repeatable)")


def _es_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", type=address, help="HOST:PORT to bind (default: the URL's)")
    p.add_argument("--workers", type=_bounded_int(1, 256), default=16, help="requests handled at once (default 16)")
    p.add_argument(
        "--deadline",
        type=_bounded_int(1, 300),
        default=10,
        help="seconds from a connection's accept to its answer, at most (default 10)",
    )


def _es_revoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gateway", type=ident)


ENROLL_SERVER_ACTIONS = (
    Command("init", cmd_enroll_server_init, _es_init_arguments, "create the state directory and the HTTPS identity"),
    Command("claim", cmd_enroll_server_claim, _es_claim_arguments, "issue a single-use claim file for a gateway"),
    Command(
        "allow", cmd_enroll_server_allow, _es_allow_arguments, "add hardware serials or claim ids to the allowlist"
    ),
    Command("serve", cmd_enroll_server_serve, _es_serve_arguments, "answer enrollment requests (HTTPS)"),
    Command("revoke", cmd_enroll_server_revoke, _es_revoke_arguments, "revoke a gateway: verifiers reject its batches"),
    Command("list", cmd_enroll_server_list, no_arguments, "gateways, claims (no secrets) and the allowlist"),
)


def _enroll_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", type=Path, help="enroll-server state directory (default $GE_ENROLL_STATE)")
    add_commands(p, ENROLL_SERVER_ACTIONS, dest="action", metavar="ACTION")


COMMANDS = (
    Command(
        "bundle",
        cmd_bundle,
        _bundle_arguments,
        "build the firmware bundle for a device kind (mpy-cross, manifest, reproducible)",
    ),
    Command(
        "flash",
        cmd_flash,
        _flash_arguments,
        "flash, key, self-test, register and label devices on serial ports, in parallel",
    ),
    Command("list", cmd_list, no_arguments, "list the devices in the inventory (no secrets)"),
    Command("ports", cmd_ports, no_arguments, "list the serial ports here (USB vendor:product, serial number)"),
    Command(
        "move",
        cmd_move,
        _move_arguments,
        "move a device to another zone or venue without revoking it (inventory, label, gateway export)",
    ),
    Command(
        "export", cmd_export, _export_arguments, "export the inventory as CSV/JSON (no secrets) or sealed to a gateway"
    ),
    Command("label", cmd_label, _label_arguments, "write a device's label again (QR code PNG/SVG and text line)"),
    Command("labels", cmd_sheet, _sheet_arguments, "a printable A4 sheet of labels for a tray of devices (PDF/SVG)"),
    Command("audit", cmd_audit, _audit_arguments, "audit log: `audit verify` checks the hash chain"),
    Command(
        "revoke",
        cmd_revoke,
        _revoke_arguments,
        "revoke a device: signed REVOKE to its gateway, then out of the inventory",
    ),
    Command("venue", None, _venue_arguments, "one venue description -> the gateway's venue file (and the air's)"),
    Command(
        "practice",
        cmd_practice,
        _practice_arguments,
        "rehearse with no hardware: virtual boards, broker and gateway (guardian-rig practice)",
    ),
    Command(
        "enroll-server",
        None,
        _enroll_server_arguments,
        "central side: claims, allowlist and the gateway enrollment responder",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Guardian Edge provisioning")
    parser.add_argument("--home", type=Path, help="state directory (default $GE_PROVISION_HOME)")
    add_commands(parser, COMMANDS)
    return parser


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and len(text) <= 6) or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}")
        return int(text)

    return parse


def _claim_ttl(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 90 * 86400:
        raise argparse.ArgumentTypeError(f"expected seconds in 1..{90 * 86400}, got {text!r}")
    return int(text)


def _serial(text: str) -> str:
    from agent.shared.enroll_protocol import SERIAL_RE

    if not SERIAL_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected 1-64 characters from A-Z a-z 0-9 . _ : -, got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return handler_of(args)(args)
    except (ProvisionError, AgentError) as exc:  # AgentError: central's tools (enroll-server)
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file named on the command line: one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
