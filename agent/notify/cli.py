"""guardian-notify: verified alerts to families and staff (docs/notifications.md).

    guardian-notify run --config notify.toml
    guardian-notify check --config notify.toml
    guardian-notify test CONTACT --config notify.toml

User errors are printed as `guardian-notify: message` with exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.notify.circle import Circle, find_contact, load_circle
from agent.notify.config import NotifyConfig, load_config
from agent.shared import log
from agent.shared.errors import AgentError

PROG = "guardian-notify"


def load_circles(cfg: NotifyConfig) -> dict[str, Circle]:
    circles: dict[str, Circle] = {}
    for path in cfg.circles:
        circle = load_circle(path, modem=cfg.modem is not None)
        if circle.venue in circles:
            raise AgentError(f"{path}: venue {circle.venue!r} is already described by {circles[circle.venue].path}")
        circles[circle.venue] = circle
    return circles


def _setup_modem(cfg: NotifyConfig) -> None:
    if cfg.modem is not None:
        from agent.notify import modem

        modem.configure(modem.from_config(cfg.modem))


@dataclass
class _Venues:
    """The venue each gateway belongs to: [[central.gateway]] entries, then the enrolled file."""

    static: dict[str, str]
    enrolled: Path | None
    _cache: tuple[int, dict[str, str]] | None = None

    def __call__(self, gateway: str) -> str | None:
        if gateway in self.static:
            return self.static[gateway]
        if self.enrolled is None:
            return None
        from agent.central.enrolled_gateways import load_gateways

        try:
            stamp = self.enrolled.stat().st_mtime_ns
            if self._cache is None or self._cache[0] != stamp:
                self._cache = (stamp, {g.id: g.venue for g in load_gateways(self.enrolled).values()})
        except (OSError, AgentError):
            if self._cache is None:
                return None
        return self._cache[1].get(gateway)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    circles = load_circles(cfg)
    _setup_modem(cfg)
    asyncio.run(run_service(cfg, circles))
    return 0


async def run_service(cfg: NotifyConfig, circles: dict[str, Circle]) -> None:
    import logging
    import ssl

    from agent.central.notify_feed import CentralFeed, CommandSender
    from agent.notify import web
    from agent.notify.ledger import Ledger
    from agent.notify.links import Links, load_or_create_key
    from agent.notify.notifier import Notifier

    logger = logging.getLogger("agent.notify")
    places: dict[str, str] = {}
    registry = None
    if cfg.device_keys is not None:
        from agent.shared.registry import load_registry

        registry = load_registry(cfg.device_keys)
        places = {d.id: d.zone for d in registry}
    links = Links(load_or_create_key(cfg.link_key_file), cfg.ack_base_url) if cfg.ack_listen is not None else None
    ledger = Ledger(cfg.ledger_file)
    notifier = Notifier(circles, ledger, settings=cfg.settings, links=links, places=places)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tls: ssl.SSLContext | None = None
    if cfg.tls is not None:
        from agent.notify.config import ssl_context

        tls = ssl_context(cfg.tls)
    sender = None
    if cfg.broker is not None and cfg.command_key is not None:
        from agent.central.keys import load_central_private_key

        kid, central_key = load_central_private_key(cfg.command_key)
        sender = CommandSender(ledger, central_key, kid, *cfg.broker, tls=tls)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(notifier.run(stop))]
    if cfg.modem is not None:
        from agent.notify import modem

        sms = modem.current()
        if sms is not None:

            def replied(number: str, text: str) -> None:
                if notifier.ack_reply(number, text).status == "acked" and sender is not None:
                    sender.wake.set()

            def heard(number: str, text: str) -> None:  # the modem library's reader thread
                loop.call_soon_threadsafe(replied, number, text)

            sms.on_sms = heard
            try:
                await asyncio.to_thread(sms.open)
            except modem.ModemError as exc:  # it is opened again at the first message
                logger.error("modem_unavailable reason=%r", str(exc))
    runner = None
    if cfg.ack_listen is not None:
        on_ack: Callable[[Any], None] | None = (lambda _: sender.wake.set()) if sender is not None else None
        runner = await web.start(web.WebApp(notifier, on_ack), *cfg.ack_listen)
    if sender is not None:
        tasks.append(asyncio.create_task(sender.run(stop)))
    if cfg.broker is not None:
        from agent.central.batch_verifier import BatchVerifier
        from agent.shared.keyfiles import load_gateway_public_key as load_public_key

        keys: dict[bytes, Any] = {}
        static: dict[str, str] = {}
        for path, venue in cfg.gateways:
            gateway_id, key = load_public_key(path)
            keys[gateway_id.encode()] = key
            static[gateway_id] = venue
        gateway_keys = None
        if cfg.gateway_keys is not None:
            from agent.central.enrolled_gateways import GatewayKeys

            gateway_keys = GatewayKeys(cfg.gateway_keys)
        verifier = BatchVerifier(keys, registry, gateway_keys=gateway_keys)
        feed = CentralFeed(
            notifier, verifier, *cfg.broker, venues=_Venues(static, cfg.gateway_keys), client_id=cfg.client_id, tls=tls
        )
        tasks.append(asyncio.create_task(feed.run(stop)))
    logger.info(
        "notifier_ready venues=%d residents=%d ack=%s central=%s",
        len(circles),
        sum(len(c.residents) for c in circles.values()),
        "on" if cfg.ack_listen else "off",
        f"{cfg.broker[0]}:{cfg.broker[1]}" if cfg.broker else "off",
    )
    try:
        await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        ledger.close()
        logger.info("notifier_stopped %s", " ".join(f"{k}={v}" for k, v in sorted(notifier.counts.items())))


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    circles = load_circles(cfg)
    for circle in circles.values():
        chans = sum(len(c.channels) for c in circle.contacts.values())
        print(
            f"{circle.path}: ok (venue {circle.venue}, {len(circle.residents)} residents, "
            f"{len(circle.contacts) - len(circle.staff)} contacts, {len(circle.staff)} staff, {chans} channels)"
        )
    print(f"{cfg.path}: ok")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from agent.notify import channels, messages

    cfg = load_config(args.config)
    circles = load_circles(cfg)
    found = find_contact(circles, args.contact)
    if found is None:
        raise AgentError(f"no contact or staff member {args.contact!r} in {', '.join(map(str, cfg.circles))}")
    circle, contact = found
    _setup_modem(cfg)
    message = messages.channel_test_message(circle, contact.language)
    failed = 0
    for i, channel in enumerate(contact.channels):
        started = time.monotonic()
        try:
            fields = {"ge_delivery": f"test-{int(time.time())}-{i}", "ge_kind": "test"}
            channels.send(channel, message.title, message.body, fields, cfg.settings.send_timeout_s)
        except channels.SendError as exc:
            failed += 1
            print(f"  channels[{i}] {channel}: FAILED ({exc})")
            continue
        print(f"  channels[{i}] {channel}: ok ({time.monotonic() - started:.1f} s)")
    print(f"{contact.id} ({contact.name}): {len(contact.channels) - failed} of {len(contact.channels)} channels ok")
    return 1 if failed else 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "run": (cmd_run, "run the notifier: central's batches -> messages to people, acknowledgement links"),
    "check": (cmd_check, "validate the config and every care-circle file (channel URLs included)"),
    "test": (cmd_test, "send a test message to each channel of one contact and report per channel"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Guardian Edge notifier")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, type=Path, help="notifier TOML config")
        if name == "test":
            p.add_argument("contact", help="contact or staff id from a care-circle file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log_level)
    try:
        return COMMANDS[args.command][0](args)
    except AgentError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
