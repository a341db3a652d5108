"""guardian-agent: the gateway agent's command line.

    guardian-agent run --config FILE
    guardian-agent check-config FILE
    guardian-agent status --config FILE [--token-file FILE] [--json]
    guardian-agent status-token --config FILE [--out FILE] [--rotate]
    guardian-agent verify --broker HOST:PORT (--gateway-key PUBKEYFILE | --gateway-keys GATEWAYS.json)
        [--devices EXPORT.json] [--timezone [VENUE=]ZONE] [--json] [--tls-ca CA ...]
    guardian-agent keygen --out KEYFILE [--key-id ID]
    guardian-agent command --broker HOST:PORT --central-key KEYFILE --gateway GW --venue V \
        ack DEVICE/BOOT/SEQ [--text T] | revoke --device D | config --set NAME=VALUE ...
    guardian-agent devices key --config FILE
    guardian-agent devices import --config FILE BUNDLE
    guardian-agent enroll --claim FILE [--out CONFIG] [--data-dir DIR] [--serial S]

User errors are printed as `guardian-agent: message` with exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.gateway.config import load_config
from agent.shared import log
from agent.shared.cli_table import Command, add_commands, address, handler_of, ident
from agent.shared.errors import AgentError
from agent.shared.protocol import BATCH_FILTER
from agent.shared.registry import load_registry

PROG = "guardian-agent"


def cmd_run(args: argparse.Namespace) -> int:
    from agent.gateway.app import run_gateway

    cfg = load_config(args.config)
    asyncio.run(run_gateway(cfg))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    registry = load_registry(cfg.devices_file)
    if cfg.wristbands.alerts is not None:
        from agent.gateway.wristbands.venue import parse as parse_venue
        from agent.shared.tomlcheck import load as load_toml

        # the same checks as at start; what is valid but weak (an exit zone with one scanner) is
        # printed as a warning and does not fail the check
        venue = parse_venue(load_toml(cfg.wristbands.alerts), cfg.wristbands.alerts)
        for warning in venue.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok (gateway {cfg.gateway_id}, venue {cfg.venue}, {len(registry)} devices)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.central.batch_verifier import BatchVerifier, run_verifier
    from agent.shared.keyfiles import load_gateway_public_key

    keys = {}
    for path in args.gateway_key or ():
        gateway_id, key = load_gateway_public_key(path)
        keys[gateway_id.encode()] = key
    gateway_keys = None
    if args.gateway_keys is not None:
        from agent.central.enrolled_gateways import GatewayKeys

        gateway_keys = GatewayKeys(args.gateway_keys)
    elif not keys:
        raise AgentError("verify: give --gateway-key PUBKEYFILE or --gateway-keys GATEWAYS.json")
    registry = load_registry(args.device_keys) if args.device_keys else None
    verifier = BatchVerifier(keys, registry, gateway_keys=gateway_keys)
    host, port = args.broker
    asyncio.run(
        run_verifier(
            verifier,
            host,
            port,
            topic=args.topic,
            client_id=args.client_id,
            count=args.count,
            duration=args.timeout,
            ready=(lambda: print("ready", file=sys.stderr, flush=True)),
            tls=_tls_option_context(args, "verify"),
            line=None if args.json else _dispatch_lines(args, registry),
        )
    )
    return 0 if verifier.integrity_ok else 2


def _dispatch_lines(args: argparse.Namespace, registry: Any) -> Callable[[dict[str, Any]], str | None]:
    from agent.central.dispatch_lines import DeviceInfo, Lines, load_devices, parse_timezones

    devices = {d.id: DeviceInfo(d.kind, d.venue, d.zone) for d in registry} if registry is not None else {}
    if args.devices is not None:
        devices.update(load_devices(args.devices))
    default_tz, venue_tz = parse_timezones(args.timezone)
    return Lines(devices, default_tz, venue_tz, telemetry=args.telemetry)


def _tls_option_context(args: argparse.Namespace, command: str) -> Any:
    """The TLS context of --tls-ca/--tls-cert/--tls-key, or None without --tls-ca."""
    from agent.shared.errors import CommandError
    from agent.shared.tls import TlsConfig, tls_context

    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_cert and args.tls_ca is None):
        raise CommandError("TLS: --tls-cert and --tls-key go together, and need --tls-ca")
    if args.tls_ca is None:
        return None
    return tls_context(TlsConfig(args.tls_ca, args.tls_cert, args.tls_key), f"{command}: TLS ")


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from agent.gateway.status.client import fetch_status
    from agent.gateway.status.text import render

    cfg = load_config(args.config)
    view = fetch_status(cfg, args.token_file)
    if args.json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render(view))
    return 2 if view["problems"] else 0


def cmd_status_token(args: argparse.Namespace) -> int:
    from agent.gateway.config import TOKEN_FILE
    from agent.gateway.status.auth import write_token_file

    cfg = load_config(args.config)
    out = args.out or cfg.path.resolve().parent / TOKEN_FILE
    digest = write_token_file(out, rotate=args.rotate)
    print(f"{out}: a new token for the status page (mode 0600; `sudo cat {out}` shows it to log in)")
    print(f"put this line under [status_page] in {cfg.path} and restart the agent:")
    print(f'token_sha256 = "{digest.hex()}"')
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.central.keys import generate_central_key

    pub = generate_central_key(args.out, args.key_id)
    print(f"{args.out}: private key (mode 0600, keep it at central); {pub}: public key for [central] command_key")
    return 0


def _send_command(args: argparse.Namespace, op: int, op_args: dict[int, Any]) -> int:
    from agent.central.command_sender import send

    tls = _tls_option_context(args, "command")
    sent = send(args.central_key, args.broker, args.gateway, args.venue, op, op_args, args.ttl, args.command_seq, tls)
    print(f"sent op={args.op} seq={sent.seq} topic={sent.topic} bytes={sent.size}")
    return 0


def cmd_command_ack(args: argparse.Namespace) -> int:
    from agent.central.command_sender import ack_args, parse_ref
    from agent.shared.commands import OP_ACK
    from agent.shared.errors import CommandError

    parts = (args.device, args.boot, args.seq)
    if args.ref is not None:
        if any(p is not None for p in parts):
            raise CommandError(
                "ack: give the event reference (DEVICE/BOOT/SEQ) or --device, --boot and --seq, not both"
            )
        device, boot, seq = parse_ref(args.ref)
    elif all(p is not None for p in parts):
        device, boot, seq = parts
    else:
        raise CommandError(
            "ack: give the event reference `guardian-agent verify` printed (e.g. AP-0001/3/17), "
            "or all of --device, --boot and --seq"
        )
    return _send_command(args, OP_ACK, ack_args(device, boot, seq, args.text))


def cmd_command_revoke(args: argparse.Namespace) -> int:
    from agent.shared.commands import OP_REVOKE

    return _send_command(args, OP_REVOKE, {1: args.device})


def cmd_command_config(args: argparse.Namespace) -> int:
    from agent.central.command_sender import config_args
    from agent.shared.commands import OP_CONFIG

    return _send_command(args, OP_CONFIG, config_args(args.set))


def cmd_devices_key(args: argparse.Namespace) -> int:
    from agent.gateway.device_import import load_or_create_seal_key, seal_key_path

    cfg = load_config(args.config)
    _, pub = load_or_create_seal_key(seal_key_path(cfg.key_file), cfg.gateway_id)
    print(f"{pub}: this gateway's sealing key; give it to the provisioning station")
    return 0


def cmd_devices_import(args: argparse.Namespace) -> int:
    from agent.gateway.device_import import import_devices

    cfg = load_config(args.config)
    added, updated, reloaded = import_devices(cfg, args.bundle)
    print(f"{cfg.devices_file}: {added} devices added, {updated} updated; restart the agent to load them")
    files = cfg.local.mosquitto
    if files is not None:
        how = "the broker was told to reload them" if reloaded else "reload the broker: systemctl reload mosquitto"
        print(f"{files.password_file}, {files.acl_file}: the local broker's logins and ACL written; {how}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from agent.gateway.enroll_client import enroll

    done = enroll(args.claim, args.out, args.data_dir, args.devices_file, args.local, args.serial, args.timeout)
    cfg = done.config
    how = "enrolled again, keys rotated" if done.rotated else "enrolled"
    print(
        f"{done.out}: gateway {cfg.gateway} {how} at venue {cfg.venue} (claim {cfg.claim}, central {cfg.host}:"
        f"{cfg.port}); keys in {done.data_dir}; start it with: {PROG} run --config {done.out}"
    )
    return 0


# --- arguments ----------------------------------------------------------------------------


def _uint(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}")
        return int(text)

    return parse


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="agent TOML config")


def _check_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="agent TOML config")


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, type=address, help="central broker HOST:PORT")
    p.add_argument(
        "--gateway-key",
        action="append",
        type=Path,
        help="a gateway's public key file (<key>.pub); repeat for several gateways",
    )
    p.add_argument(
        "--gateway-keys",
        type=Path,
        help="central's enrolled-gateways file (guardian-provision enroll-server); reloaded when it "
        "changes; batches of revoked gateways are rejected",
    )
    p.add_argument("--device-keys", type=Path, help="device registry: also re-check each device MAC")
    p.add_argument(
        "--devices",
        type=Path,
        help="device list for zone names: provisioning's export (.json, .csv) or a registry (.toml)",
    )
    p.add_argument(
        "--timezone",
        action="append",
        default=[],
        metavar="[VENUE=]ZONE",
        help="IANA time zone of the times printed, for every venue or one (default: this machine's)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of readable lines")
    p.add_argument("--telemetry", action="store_true", help="also print P2 events (heartbeats)")
    p.add_argument("--topic", default=BATCH_FILTER, help="topic filter")
    p.add_argument("--client-id", default="ge-verifier", help="MQTT client id (persistent session)")
    p.add_argument("--count", type=int, help="exit after this many events")
    p.add_argument("--timeout", type=float, help="exit after this many seconds")
    _tls_arguments(p)


def _tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", type=Path, help="CA file for TLS to the broker (only that CA is trusted)")
    p.add_argument("--tls-cert", type=Path, help="client certificate for TLS")
    p.add_argument("--tls-key", type=Path, help="client certificate's key for TLS")


def _status_arguments(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--token-file", type=Path, help="the page's token (default: status.token next to the config)")
    p.add_argument("--json", action="store_true", help="print the page's JSON instead of text")


def _status_token_arguments(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--out", type=Path, help="token file to create (default: status.token next to the config)")
    p.add_argument("--rotate", action="store_true", help="replace an existing token file")


def _keygen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="private key file to create (mode 0600)")
    p.add_argument("--key-id", default="central", type=ident, help="kid in commands (default: central)")


def _ack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", nargs="?", metavar="DEVICE/BOOT/SEQ", help="the event reference `verify` printed")
    p.add_argument("--device", type=ident, help="instead of the reference: the device ...")
    p.add_argument("--boot", type=_uint(1, 2**32 - 1), help="... its boot ...")
    p.add_argument("--seq", type=_uint(1, 2**32 - 1), help="... and the event's seq")
    p.add_argument("--text", help="short note (at most 64 characters), logged by the gateway")


def _revoke_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, type=ident)


def _config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", required=True)


COMMAND_OPS = (
    Command("ack", cmd_command_ack, _ack_arguments, "a dispatcher acknowledged an alarm: receipt 3 to the device"),
    Command("revoke", cmd_command_revoke, _revoke_arguments, "remove a device from the gateway's registry"),
    Command("config", cmd_command_config, _config_arguments, "change runtime settings (docs/protocol.md §8.1)"),
)


def _command_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, type=address, help="central broker HOST:PORT")
    p.add_argument("--central-key", required=True, type=Path, help="central's private key (guardian-agent keygen)")
    p.add_argument("--gateway", required=True, type=ident, help="the gateway the command is for")
    p.add_argument("--venue", required=True, type=ident, help="the gateway's venue (topic)")
    p.add_argument("--command-seq", type=_uint(1, 2**64 - 1), help="command seq (default: unix time in us)")
    p.add_argument("--ttl", type=_uint(1, 24 * 3600), default=300, help="seconds until it expires (default 300)")
    _tls_arguments(p)
    add_commands(p, COMMAND_OPS, dest="op", metavar="OP")


def _import_arguments(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("bundle", type=Path, help="bundle file from guardian-provision export")


DEVICES_ACTIONS = (
    Command("key", cmd_devices_key, _config_option, "create (if absent) the X25519 sealing key; print its .pub file"),
    Command("import", cmd_devices_import, _import_arguments, "add the devices of a bundle sealed to this gateway"),
)


def _devices_arguments(p: argparse.ArgumentParser) -> None:
    add_commands(p, DEVICES_ACTIONS, dest="action", metavar="ACTION")


def _enroll_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--claim", required=True, type=Path, help="claim file from central (mode 0600)")
    p.add_argument("--out", type=Path, default=Path("/etc/guardian-edge/agent.toml"), help="config to write")
    p.add_argument("--data-dir", type=Path, default=Path("/var/lib/guardian-edge"), help="keys and buffer")
    p.add_argument("--devices-file", type=Path, help="device registry (default: devices.toml next to --out)")
    p.add_argument("--local", type=address, default=("127.0.0.1", 1883), help="venue broker HOST:PORT")
    p.add_argument("--serial", help="hardware serial (default: /proc/cpuinfo Serial, else from machine-id)")
    p.add_argument("--timeout", type=_uint(1, 600), default=15, help="seconds to wait for central (default 15)")


COMMANDS = (
    Command("run", cmd_run, _config_option, "run the gateway agent"),
    Command(
        "check-config",
        cmd_check_config,
        _check_config_arguments,
        "validate a config file and the device registry it names",
    ),
    Command(
        "status",
        cmd_status,
        _status_arguments,
        "the gateway's health, devices, alarms and rejects from its status page (exit 2: it needs attention)",
    ),
    Command(
        "status-token",
        cmd_status_token,
        _status_token_arguments,
        "make the status page's access token (a root-only file) and print its hash for the config",
    ),
    Command(
        "verify",
        cmd_verify,
        _verify_arguments,
        "central side: verify gateway batches; print each event (type, venue, zone, local time, latency) and problem",
    ),
    Command(
        "keygen",
        cmd_keygen,
        _keygen_arguments,
        "central side: create central's Ed25519 command key (KEYFILE and KEYFILE.pub)",
    ),
    Command(
        "command",
        None,
        _command_arguments,
        "central side: sign and send a command to a gateway (ack, revoke, config)",
    ),
    Command(
        "devices",
        None,
        _devices_arguments,
        "the gateway's sealing key, and importing a device-enrollment bundle",
    ),
    Command(
        "enroll",
        cmd_enroll,
        _enroll_arguments,
        "zero-touch enrollment: new keys, a claim, central's signed config (docs/provisioning.md)",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Guardian Edge gateway agent")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_commands(parser, COMMANDS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log_level)
    try:
        return handler_of(args)(args)
    except AgentError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
