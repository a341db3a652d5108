"""The three command lines are tables (agent/shared/cli_table.py): every command a user can
type, however deep, ends in a row with a handler, and the documented commands are there."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

from agent import cli as agent_cli
from agent.shared.cli_table import add_commands
from hil_tests import cli as rig_cli
from provisioning import cli as provision_cli


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # argparse keeps them here
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaves(sub, (*path, name))


def _rig_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_commands(parser, rig_cli.COMMANDS)
    return parser


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (
            agent_cli.build_parser,
            {
                "run",
                "check-config",
                "status",
                "status-token",
                "verify",
                "keygen",
                "command ack",
                "command revoke",
                "command config",
                "devices key",
                "devices import",
                "enroll",
            },
        ),
        (
            provision_cli.build_parser,
            {
                "bundle",
                "flash",
                "list",
                "export",
                "label",
                "labels",
                "audit",
                "revoke",
                "move",
                "ports",
                "practice",
                "venue check",
                "venue build",
                *(f"enroll-server {a}" for a in ("init", "claim", "allow", "serve", "revoke", "list")),
            },
        ),
        (_rig_parser, {"run", "check", "practice"}),
    ],
)
def test_every_command_ends_in_a_handler(build: Callable[[], argparse.ArgumentParser], expected: set[str]) -> None:
    found = {" ".join(path): p.get_default("handler") for path, p in leaves(build())}
    assert set(found) == expected
    assert all(callable(h) for h in found.values()), [name for name, h in found.items() if not callable(h)]
