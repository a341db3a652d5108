"""Command lines as tables of commands, as mpremote builds its own: one row per command.

A row is (name, handler, add_arguments, help). `add_commands()` turns a table into argparse
subcommands; a row whose add_arguments adds a table of its own (`guardian-agent devices key`)
has no handler, and the leaf's handler is what runs. guardian-agent, guardian-provision and
guardian-rig are built this way, so adding a command is adding a row.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.shared.protocol import IDENT_RE

Handler = Callable[[argparse.Namespace], int]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """add_arguments of a command that takes none."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler | None  # None: add_arguments adds subcommands, whose handlers run
    add_arguments: Callable[[argparse.ArgumentParser], None]
    help: str


def add_commands(
    parser: argparse.ArgumentParser, table: Sequence[Command], dest: str = "command", metavar: str = "COMMAND"
) -> None:
    """One subcommand per row; the chosen leaf's handler ends up in `args.handler`."""
    sub = parser.add_subparsers(dest=dest, required=True, metavar=metavar)
    for row in table:
        p = sub.add_parser(row.name, help=row.help, description=row.help)
        row.add_arguments(p)
        if row.handler is not None:
            p.set_defaults(handler=row.handler)


def handler_of(args: argparse.Namespace) -> Handler:
    """The handler of the command that was parsed."""
    handler: Handler = args.handler
    return handler


# --- argument types shared by the command lines -------------------------------------------------


def ident(text: str) -> str:
    """An identifier (device, gateway, venue, key id; docs/protocol.md §1)."""
    if not IDENT_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected 1-32 characters from A-Z a-z 0-9 . _ -, got {text!r}")
    return text


def address(text: str) -> tuple[str, int]:
    """HOST:PORT as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)
