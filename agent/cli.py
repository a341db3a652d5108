"""guardian-agent: the gateway agent's command line.

    guardian-agent run --config FILE
    guardian-agent check-config FILE
    guardian-agent verify --broker HOST:PORT --gateway-key PUBKEYFILE [...]

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
    print(f"{args.file}: ok (gateway {cfg.gateway_id}, venue {cfg.venue}, {len(registry)} devices)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.signer import load_public_key
    from agent.verifier import Verifier, run_verifier

    keys = {}
    for path in args.gateway_key:
        gateway_id, key = load_public_key(path)
        keys[gateway_id.encode()] = key
    registry = load_registry(args.device_keys) if args.device_keys else None
    verifier = Verifier(keys, registry)
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


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "run": (cmd_run, "run the gateway agent"),
    "check-config": (cmd_check_config, "validate a config file and the device registry it names"),
    "verify": (cmd_verify, "central side: verify gateway batches and print one JSON line per event"),
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
                required=True,
                action="append",
                type=Path,
                help="a gateway's public key file (<key>.pub); repeat for several gateways",
            )
            p.add_argument("--device-keys", type=Path, help="device registry: also re-check each device MAC")
            p.add_argument("--topic", default="venues/+/gateways/+/batches", help="topic filter")
            p.add_argument("--client-id", default="ge-verifier", help="MQTT client id (persistent session)")
            p.add_argument("--count", type=int, help="exit after this many events")
            p.add_argument("--timeout", type=float, help="exit after this many seconds")
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
