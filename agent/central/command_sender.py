"""Central's command sender: builds, signs and publishes a command to a gateway (docs/protocol.md §8).

`guardian-agent command` (ack, revoke, config) and `guardian-provision revoke` send through
send(); the message format is agent/shared/commands.py.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from agent.central.keys import load_central_private_key
from agent.shared.commands import MAX_TEXT, SETTING_BY_NAME, encode_payload, sign_command
from agent.shared.errors import CommandError
from agent.shared.protocol import IDENT_RE, gateway_topics

SEND_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Sent:
    seq: int
    topic: str
    size: int  # bytes of the signed message


def ack_args(device: str, boot: int, seq: int, text: str | None = None) -> dict[int, Any]:
    """ACK args (central side); CommandError for a text longer than MAX_TEXT."""
    args: dict[int, Any] = {1: device, 2: boot, 3: seq}
    if text is not None:
        if len(text) > MAX_TEXT:
            raise CommandError(f"--text: expected at most {MAX_TEXT} characters, got {len(text)}")
        args[4] = text
    return args


def parse_ref(ref: str) -> tuple[str, int, int]:
    """(device, boot, seq) of an event reference as `guardian-agent verify` prints it: DEVICE/BOOT/SEQ."""
    parts = ref.split("/")
    device, boot, seq = parts if len(parts) == 3 else ("", "", "")
    if not IDENT_RE.fullmatch(device) or not _uint32(boot) or not _uint32(seq):
        raise CommandError(
            f"event reference {ref!r}: expected DEVICE/BOOT/SEQ as `guardian-agent verify` prints it, "
            "e.g. AP-0001/3/17 (device id, then boot and seq in 1..4294967295)"
        )
    return device, int(boot), int(seq)


def _uint32(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 0xFFFFFFFF


def config_args(assignments: list[str]) -> dict[int, Any]:
    """CONFIG args from NAME=VALUE strings; CommandError naming the bad one."""
    args: dict[int, Any] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        setting = SETTING_BY_NAME.get(name.strip())
        if not sep or setting is None:
            raise CommandError(f"--set {text!r}: expected NAME=VALUE with NAME one of {', '.join(SETTING_BY_NAME)}")
        value: int | str = raw.strip()
        if not setting.choices:
            try:
                value = int(raw)
            except ValueError:
                raise CommandError(f"--set {name}: expected an integer, got {raw!r}") from None
        try:
            args[setting.wire] = setting.check(value)
        except ValueError as exc:
            raise CommandError(f"--set {name}: {exc}") from None
    if not args:
        raise CommandError("config: give at least one --set NAME=VALUE")
    return args


async def send_command(host: str, port: int, topic: str, message: bytes, tls: ssl.SSLContext | None = None) -> None:
    """Publish one command (QoS 1) and return once central's broker acknowledged it."""
    timeout = SEND_TIMEOUT_S
    try:
        async with asyncio.timeout(timeout):
            async with aiomqtt.Client(
                host, port, protocol=aiomqtt.ProtocolVersion.V5, tls_context=tls, timeout=timeout
            ) as client:
                await client.publish(topic, message, qos=1)
    except aiomqtt.MqttError as exc:
        raise CommandError(f"central broker {host}:{port}: {exc}") from exc
    except TimeoutError:
        raise CommandError(f"central broker {host}:{port}: no acknowledgement within {timeout} s") from None


def send(
    central_key: Path,
    broker: tuple[str, int],
    gateway: str,
    venue: str,
    op: int,
    args: dict[int, Any],
    ttl_s: int,
    seq: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> Sent:
    """Sign one command with central's key and publish it on the gateway's command topic.

    Returns once central's broker acknowledged it. Central issues strictly increasing seqs per
    gateway; without `seq` the unix time in microseconds is one such source without state.
    """
    kid, key = load_central_private_key(central_key)
    issued = int(time.time())
    if seq is None:
        seq = time.time_ns() // 1000
    message = sign_command(key, kid, encode_payload(gateway, seq, issued, issued + ttl_s, op, args))
    topic = gateway_topics(venue, gateway).commands
    asyncio.run(send_command(broker[0], broker[1], topic, message, tls))
    return Sent(seq, topic, len(message))
