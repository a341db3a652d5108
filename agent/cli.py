"""guardian-agent: the gateway agent's command line.

    guardian-agent run --config FILE
    guardian-agent check-config FILE
    guardian-agent verify --broker HOST:PORT (--gateway-key PUBKEYFILE | --gateway-keys GATEWAYS.json) [...]
    guardian-agent keygen --out KEYFILE [--key-id ID]
    guardian-agent command --broker HOST:PORT --central-key KEYFILE --gateway GW --venue V \
        ack --device D --boot B --seq S [--text T] | revoke --device D | config --set NAME=VALUE ...
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

from agent import log
from agent.config import load_config
from agent.errors import AgentError
from agent.registry import load_registry

PROG = "guardian-agent"


def _broker_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.gateway import run_gateway

    cfg = load_config(args.config)
    asyncio.run(run_gateway(cfg))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    registry = load_registry(cfg.devices_file)
    if cfg.wristbands.alerts is not None:
        from agent.ble.venue import parse as parse_venue
        from agent.tomlcheck import load as load_toml

        # the same checks as at start; what is valid but weak (an exit zone with one scanner) is
        # printed as a warning and does not fail the check
        venue = parse_venue(load_toml(cfg.wristbands.alerts), cfg.wristbands.alerts)
        for warning in venue.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok (gateway {cfg.gateway_id}, venue {cfg.venue}, {len(registry)} devices)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.signer import load_public_key
    from agent.verifier import Verifier, run_verifier

    keys = {}
    for path in args.gateway_key or ():
        gateway_id, key = load_public_key(path)
        keys[gateway_id.encode()] = key
    gateway_keys = None
    if args.gateway_keys is not None:
        from agent.enrolled import GatewayKeys

        gateway_keys = GatewayKeys(args.gateway_keys)
    elif not keys:
        raise AgentError("verify: give --gateway-key PUBKEYFILE or --gateway-keys GATEWAYS.json")
    registry = load_registry(args.device_keys) if args.device_keys else None
    verifier = Verifier(keys, registry, gateway_keys=gateway_keys)
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
        )
    )
    return 0 if verifier.integrity_ok else 2


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.keyfiles import generate_central_key

    pub = generate_central_key(args.out, args.key_id)
    print(f"{args.out}: private key (mode 0600, keep it at central); {pub}: public key for [central] command_key")
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    import time

    from agent import commands as cm
    from agent.config import TlsConfig, tls_context
    from agent.errors import CommandError
    from agent.keyfiles import load_central_private_key

    kid, key = load_central_private_key(args.central_key)
    if args.op == "ack":
        op, op_args = cm.OP_ACK, cm.ack_args(args.device, args.boot, args.seq, args.text)
    elif args.op == "revoke":
        op, op_args = cm.OP_REVOKE, {1: args.device}
    else:
        op, op_args = cm.OP_CONFIG, cm.config_args(args.set)
    issued = int(time.time())
    # central issues strictly increasing seqs per gateway; the unix time in microseconds is
    # one such source without state (pass --command-seq to choose)
    seq = args.command_seq if args.command_seq is not None else time.time_ns() // 1000
    payload = cm.encode_payload(args.gateway, seq, issued, issued + args.ttl, op, op_args)
    message = cm.sign_command(key, kid, payload)
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_cert and args.tls_ca is None):
        raise CommandError("TLS: --tls-cert and --tls-key go together, and need --tls-ca")
    if args.tls_ca is not None:
        tls = tls_context(TlsConfig(args.tls_ca, args.tls_cert, args.tls_key), "command: TLS ")
    topic = f"venues/{args.venue}/gateways/{args.gateway}/commands"
    host, port = args.broker
    asyncio.run(cm.send_command(host, port, topic, message, tls))
    print(f"sent op={args.op} seq={seq} topic={topic} bytes={len(message)}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from agent.enrollment import import_devices, load_or_create_seal_key, seal_key_path

    cfg = load_config(args.config)
    if args.action == "key":
        _, pub = load_or_create_seal_key(seal_key_path(cfg.key_file), cfg.gateway_id)
        print(f"{pub}: this gateway's sealing key; give it to the provisioning station")
        return 0
    added, updated = import_devices(cfg, args.bundle)
    print(f"{cfg.devices_file}: {added} devices added, {updated} updated; restart the agent to load them")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from agent.enroll import enroll

    done = enroll(args.claim, args.out, args.data_dir, args.devices_file, args.local, args.serial, args.timeout)
    cfg = done.config
    how = "enrolled again, keys rotated" if done.rotated else "enrolled"
    print(
        f"{done.out}: gateway {cfg.gateway} {how} at venue {cfg.venue} (claim {cfg.claim}, central {cfg.host}:"
        f"{cfg.port}); keys in {done.data_dir}; start it with: {PROG} run --config {done.out}"
    )
    return 0


def _ident(text: str) -> str:
    from agent.keyfiles import IDENT_RE

    if not IDENT_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected 1-32 characters from A-Z a-z 0-9 . _ -, got {text!r}")
    return text


def _uint(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}")
        return int(text)

    return parse


def _command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, type=_broker_address, help="central broker HOST:PORT")
    p.add_argument("--central-key", required=True, type=Path, help="central's private key (guardian-agent keygen)")
    p.add_argument("--gateway", required=True, type=_ident, help="the gateway the command is for")
    p.add_argument("--venue", required=True, type=_ident, help="the gateway's venue (topic)")
    p.add_argument("--command-seq", type=_uint(1, 2**64 - 1), help="command seq (default: unix time in us)")
    p.add_argument("--ttl", type=_uint(1, 24 * 3600), default=300, help="seconds until it expires (default 300)")
    p.add_argument("--tls-ca", type=Path, help="CA file for TLS to the broker (only that CA is trusted)")
    p.add_argument("--tls-cert", type=Path, help="client certificate for TLS")
    p.add_argument("--tls-key", type=Path, help="client certificate's key for TLS")
    ops = p.add_subparsers(dest="op", required=True, metavar="OP")
    ack = ops.add_parser("ack", help="a dispatcher acknowledged an alarm: receipt 3 to the device")
    ack.add_argument("--device", required=True, type=_ident)
    ack.add_argument("--boot", required=True, type=_uint(1, 2**32 - 1))
    ack.add_argument("--seq", required=True, type=_uint(1, 2**32 - 1))
    ack.add_argument("--text", help="short note (at most 64 characters), logged by the gateway")
    revoke = ops.add_parser("revoke", help="remove a device from the gateway's registry")
    revoke.add_argument("--device", required=True, type=_ident)
    config = ops.add_parser("config", help="change runtime settings (docs/protocol.md §8.2)")
    config.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", required=True)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "run": (cmd_run, "run the gateway agent"),
    "check-config": (cmd_check_config, "validate a config file and the device registry it names"),
    "verify": (cmd_verify, "central side: verify gateway batches and print one JSON line per event"),
    "keygen": (cmd_keygen, "central side: create central's Ed25519 command key (KEYFILE and KEYFILE.pub)"),
    "command": (cmd_command, "central side: sign and send a command to a gateway (ack, revoke, config)"),
    "devices": (cmd_devices, "the gateway's sealing key, and importing a device-enrollment bundle"),
    "enroll": (cmd_enroll, "zero-touch enrollment: new keys, a claim, central's signed config (docs/provisioning.md)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Guardian Edge gateway agent")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "run":
            p.add_argument("--config", required=True, type=Path, help="agent TOML config")
        elif name == "check-config":
            p.add_argument("file", type=Path, help="agent TOML config")
        elif name == "verify":
            p.add_argument("--broker", required=True, type=_broker_address, help="central broker HOST:PORT")
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
            p.add_argument("--topic", default="venues/+/gateways/+/batches", help="topic filter")
            p.add_argument("--client-id", default="ge-verifier", help="MQTT client id (persistent session)")
            p.add_argument("--count", type=int, help="exit after this many events")
            p.add_argument("--timeout", type=float, help="exit after this many seconds")
        elif name == "keygen":
            p.add_argument("--out", required=True, type=Path, help="private key file to create (mode 0600)")
            p.add_argument("--key-id", default="central", type=_ident, help="kid in commands (default: central)")
        elif name == "command":
            _command_options(p)
        elif name == "devices":
            actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
            key = actions.add_parser("key", help="create (if absent) the X25519 sealing key; print its .pub file")
            key.add_argument("--config", required=True, type=Path, help="agent TOML config")
            imp = actions.add_parser("import", help="add the devices of a bundle sealed to this gateway")
            imp.add_argument("--config", required=True, type=Path, help="agent TOML config")
            imp.add_argument("bundle", type=Path, help="bundle file from guardian-provision export")
        elif name == "enroll":
            p.add_argument("--claim", required=True, type=Path, help="claim file from central (mode 0600)")
            p.add_argument("--out", type=Path, default=Path("/etc/guardian-edge/agent.toml"), help="config to write")
            p.add_argument("--data-dir", type=Path, default=Path("/var/lib/guardian-edge"), help="keys and buffer")
            p.add_argument("--devices-file", type=Path, help="device registry (default: devices.toml next to --out)")
            p.add_argument("--local", type=_broker_address, default=("127.0.0.1", 1883), help="venue broker HOST:PORT")
            p.add_argument("--serial", help="hardware serial (default: /proc/cpuinfo Serial, else from machine-id)")
            p.add_argument("--timeout", type=_uint(1, 600), default=15, help="seconds to wait for central (default 15)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log_level)
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except AgentError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
