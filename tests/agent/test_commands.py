"""Central's signed commands: vectors, every rejection reason, the state file, the handler, the CLI."""

from __future__ import annotations

import logging
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.central.keys import generate_central_key, load_central_private_key
from agent.cli import main
from agent.gateway.command_handler import STATE_FILE, CommandHandler, CommandState, load_state, restore, save_state
from agent.gateway.config import AgentConfig, BatchConfig, load_config
from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.receipts import ReceiptRouter
from agent.shared import cose
from agent.shared.commands import (
    Ack,
    ConfigChange,
    Revoke,
    encode_payload,
    key_fingerprint,
    parse_command,
    sign_command,
)
from agent.shared.errors import ConfigError, WireError
from agent.shared.keyfiles import load_central_public_key
from agent.shared.protocol import AAD_FRAME, AAD_RECEIPT
from agent.shared.registry import Device, Registry, load_registry, write_registry
from tests.agent.conftest import load

VEC = load("command.json")
CENTRAL = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VEC["seed"]))
KEYS = {VEC["kid"].encode(): CENTRAL.public_key()}
NOW = 1_700_000_100


def test_vector_commands_are_what_the_agent_signs() -> None:
    for vec in VEC["commands"]:
        payload = cbor2.loads(bytes.fromhex(vec["hex"])).value[2]
        assert sign_command(CENTRAL, VEC["kid"], payload).hex() == vec["hex"], vec["name"]
    ack = VEC["commands"][0]
    args = {1: "AP-0001", 2: 3, 3: 2, 4: "help is coming"}
    built = encode_payload("GW-TEST", 1, 1_700_000_000, 1_700_000_300, 1, args)
    assert built == cbor2.loads(bytes.fromhex(ack["hex"])).value[2]


def test_vector_commands_parse() -> None:
    got = [parse_command(bytes.fromhex(v["hex"]), KEYS, "GW-TEST", NOW, 0) for v in VEC["commands"]]
    assert [c.seq for c in got] == [1, 2, 3]
    assert got[0].action == Ack("AP-0001", 3, 2, "help is coming")
    assert got[1].action == Revoke("AP-0002")
    assert got[2].action == ConfigChange((("batch.linger_ms", 50), ("batch.max_events", 500), ("log.level", "debug")))
    assert (got[0].issued, got[0].expires, got[0].op) == (1_700_000_000, 1_700_000_300, "ack")


@pytest.mark.parametrize("vec", VEC["bad_commands"], ids=[v["why"] for v in VEC["bad_commands"]])
def test_bad_vector_commands_are_rejected_with_their_reason(vec: dict[str, Any]) -> None:
    with pytest.raises(WireError) as exc:
        parse_command(bytes.fromhex(vec["hex"]), KEYS, VEC["gateway_id"], vec["now"], vec["last_seq"])
    assert exc.value.reason == vec["reason"], exc.value.detail


def test_oversize_and_garbage() -> None:
    for data, reason in ((b"\xd2" * 1025, "oversize"), (b"", "malformed"), (b"\xff" * 40, "malformed")):
        with pytest.raises(WireError) as exc:
            parse_command(data, KEYS, "GW-TEST", NOW, 0)
        assert exc.value.reason == reason


def test_mutated_and_random_commands_raise_only_wire_errors(seed: int) -> None:
    rng = random.Random(seed)
    goods = [bytes.fromhex(v["hex"]) for v in VEC["commands"]]
    for i in range(20_000):
        data = bytearray(rng.choice(goods))
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if kind == 0 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del data[pos:]
            elif kind == 2:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif pos < len(data):
                data[pos] = rng.choice((0x00, 0x17, 0x18, 0x1B, 0x5F, 0x9F, 0xBF, 0xFF, 0xD2))
        if i % 10 == 0:
            data = bytearray(rng.randbytes(rng.randint(0, 300)))
        try:
            cmd = parse_command(bytes(data), KEYS, "GW-TEST", NOW, 0)
        except WireError:
            continue
        assert bytes(data) in goods, f"seed {seed}: a mutated command was accepted: {bytes(data).hex()}"
        assert cmd.seq >= 1


# --- the state file ------------------------------------------------------------------------


def test_state_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    assert load_state(path) == CommandState()
    state = CommandState(7, {"batch.linger_ms": 5, "log.level": "debug"}, {"AP-0002": "ab" * 16})
    save_state(path, state)
    assert load_state(path) == state
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[command]\nseq = -1\n", "command.seq: expected an integer in 0.."),
        ("[command]\n", "command.seq: missing (required)"),
        ("", "command: missing table (required)"),
        ('[command]\nseq = 1\n[settings]\n"batch.window" = 2\n', "settings.batch.window: unknown setting"),
        (
            '[command]\nseq = 1\n[settings]\n"batch.linger_ms" = 99999\n',
            "settings.batch.linger_ms: expected an integer in 0..10000, got 99999",
        ),
        ('[command]\nseq = 1\n[settings]\n"log.level" = "loud"\n', "settings.log.level: expected one of debug"),
        ('[command]\nseq = 1\n[revoked]\n"AP-1" = "xyz"\n', "revoked.AP-1: expected a device id = 32 hex digits"),
        ("[command]\nseq = 1\n[other]\n", "other: unknown key"),
        ("[command\n", "not valid TOML"),
    ],
)
def test_bad_state_file_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / STATE_FILE
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_state(path)
    assert str(path) in str(exc.value) and message in str(exc.value), str(exc.value)


# --- the handler -----------------------------------------------------------------------------

KEY1, KEY2 = bytes(range(32)), bytes(range(100, 132))
DEVICES = [Device("AP-0001", "alarm_post", KEY1, "v1", "hall"), Device("AP-0002", "alarm_post", KEY2, "v1", "bar")]


@pytest.fixture
def root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def _config(tmp_path: Path) -> AgentConfig:
    write_registry(tmp_path / "devices.toml", DEVICES)
    pub = tmp_path / "central.pub"
    pub.write_text(f"Key-Id: {VEC['kid']}\n" + _pem(CENTRAL))
    (tmp_path / "agent.toml").write_text(
        "[gateway]\nid = 'GW-TEST'\nvenue = 'v1'\ndata_dir = 'data'\ndevices_file = 'devices.toml'\n"
        "[local]\nhost = '127.0.0.1'\n[central]\nhost = '127.0.0.1'\ncommand_key = 'central.pub'\n"
    )
    (tmp_path / "data").mkdir(exist_ok=True)
    return load_config(tmp_path / "agent.toml")


def _pem(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.cfg = _config(tmp_path)
        self.open()

    def open(self) -> None:
        self.registry = load_registry(self.cfg.devices_file)
        self.verifier = FrameVerifier(self.registry)
        self.sent: list[tuple[str, bytes]] = []
        self.batches: list[BatchConfig] = []
        receipts = ReceiptRouter("GW-TEST", self.registry)
        receipts.register("local", lambda device, msg: self.sent.append((device, msg)), default=True)
        self.handler = CommandHandler(
            restore(self.cfg, self.registry),
            self.registry,
            send_receipt=receipts.send,
            apply_batch=self.batches.append,
            clock=lambda: NOW,
        )
        self.stats = self.handler.counters

    async def send(self, seq: int, op: int, args: dict[int, Any], gateway: str = "GW-TEST") -> bool:
        msg = sign_command(CENTRAL, "central", encode_payload(gateway, seq, NOW - 10, NOW + 290, op, args))
        return await self.handler.handle(msg)


async def test_ack_sends_receipt_3_under_the_device_key(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert await rig.send(5, 1, {1: "AP-0001", 2: 3, 3: 2, 4: "on our way"})
    assert [d for d, _ in rig.sent] == ["AP-0001"]
    mac0 = cose.mac0_parse(rig.sent[0][1])
    assert mac0.kid == b"GW-TEST" and mac0.verify(KEY1, AAD_RECEIPT)
    assert cbor2.loads(mac0.payload) == {1: 3, 2: 2, 3: 3}
    assert rig.stats.accepted == {"ack": 1} and rig.handler.state.seq == 5
    assert load_state(tmp_path / "data" / STATE_FILE).seq == 5
    # the same bytes again, and an older seq with a good signature: replays
    assert not await rig.send(5, 1, {1: "AP-0001", 2: 3, 3: 2, 4: "on our way"})
    assert not await rig.send(4, 1, {1: "AP-0001", 2: 3, 3: 2})
    assert not await rig.send(6, 1, {1: "AP-0001", 2: 3, 3: 2}, gateway="GW-OTHER")
    assert rig.stats.rejected == {"replay": 2, "wrong_gateway": 1} and len(rig.sent) == 1


async def test_ack_for_an_unknown_device_consumes_the_seq(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert not await rig.send(3, 1, {1: "AP-9999", 2: 1, 3: 2})
    assert rig.stats.rejected == {"unknown_device": 1} and rig.sent == []
    assert rig.handler.state.seq == 3
    assert not await rig.send(3, 1, {1: "AP-0001", 2: 1, 3: 2})
    assert rig.stats.rejected["replay"] == 1


async def test_revoke_removes_the_device_and_survives_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert await rig.send(1, 2, {1: "AP-0002"})
    assert rig.registry.get("AP-0002") is None and rig.registry.get("AP-0001") is not None
    assert [d.id for d in load_registry(rig.cfg.devices_file)] == ["AP-0001"]
    assert stat.S_IMODE(rig.cfg.devices_file.stat().st_mode) == 0o600
    frame = cose.mac0_encode(KEY2, b"AP-0002", cbor2.dumps({1: 1, 2: 1, 3: 1, 4: 0, 5: {}}), AAD_FRAME)
    with pytest.raises(WireError) as exc:
        rig.verifier.verify(frame, "AP-0002", 0)
    assert exc.value.reason == "revoked"
    # the registry file comes back with the device (a backup restored): revoked again at start
    write_registry(rig.cfg.devices_file, DEVICES)
    rig.open()
    assert rig.registry.get("AP-0002") is None
    assert [d.id for d in load_registry(rig.cfg.devices_file)] == ["AP-0001"]
    # registered again with a new key: a new device as far as the gateway is concerned
    write_registry(rig.cfg.devices_file, [*DEVICES[:1], Device("AP-0002", "alarm_post", bytes(32), "v1", "bar")])
    rig.open()
    assert rig.registry.get("AP-0002") is not None
    assert rig.handler.state.revoked == {"AP-0002": key_fingerprint(KEY2)}


async def test_config_is_applied_live_and_at_start(tmp_path: Path, root_level: None) -> None:
    rig = Rig(tmp_path)
    assert rig.handler.cfg.batch.linger_ms == 20
    assert await rig.send(1, 3, {1: 250, 2: 7, 3: "debug"})
    assert (rig.handler.cfg.batch.linger_ms, rig.handler.cfg.batch.max_events) == (250, 7)
    assert rig.batches == [rig.handler.cfg.batch], "the committer gets the new batch settings"
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger().setLevel(logging.INFO)
    rig.open()
    assert (rig.handler.cfg.batch.linger_ms, rig.handler.cfg.batch.max_events) == (250, 7)
    assert logging.getLogger().level == logging.DEBUG
    assert not await rig.send(2, 3, {1: 10_001})  # out of range: nothing changes
    assert rig.stats.rejected == {"bad_args": 1} and rig.handler.state.seq == 1
    assert rig.batches == []


async def test_state_file_that_cannot_be_written_applies_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.handler.state_path = tmp_path / "no-such-dir" / STATE_FILE
    assert not await rig.send(1, 2, {1: "AP-0002"})
    assert rig.stats.rejected == {"store_error": 1}
    assert rig.registry.get("AP-0002") is not None and rig.handler.state.seq == 0


def test_without_a_command_key_commands_are_disabled(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    text = cfg.path.read_text().replace("command_key = 'central.pub'\n", "")
    cfg.path.write_text(text)
    restored = restore(load_config(cfg.path), load_registry(cfg.devices_file))
    assert restored.keys == {}
    handler = CommandHandler(restored, load_registry(cfg.devices_file), send_receipt=lambda *_: None)
    assert not handler.enabled


# --- key files and the CLI ---------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "central.key"
    assert main(["keygen", "--out", str(key), "--key-id", "hq-1"]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    kid, private = load_central_private_key(key)
    kid_pub, public = load_central_public_key(tmp_path / "central.key.pub")
    assert kid == kid_pub == "hq-1" and private.public_key() == public
    assert main(["keygen", "--out", str(key)]) == 1
    assert "exists; refusing to overwrite a key" in capsys.readouterr().err
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="mode 0644 lets other users read central's private key"):
        load_central_private_key(key)


def test_command_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "central.key"
    generate_central_key(key, "central")
    base = ["command", "--broker", "127.0.0.1:1", "--central-key", str(key), "--gateway", "GW-1", "--venue", "v1"]
    cases = [
        (["config", "--set", "batch.window=3"], "--set 'batch.window=3': expected NAME=VALUE with NAME one of"),
        (["config", "--set", "batch.linger_ms=x"], "--set batch.linger_ms: expected an integer, got 'x'"),
        (["config", "--set", "batch.linger_ms=20000"], "expected an integer in 0..10000, got 20000"),
        (["config", "--set", "log.level=loud"], "expected one of debug, info, warning, error"),
        (["ack", "--device", "AP-1", "--boot", "1", "--seq", "2", "--text", "x" * 65], "at most 64 characters"),
        (["revoke", "--device", "AP-1"], "central broker 127.0.0.1:1: "),
    ]
    for extra, message in cases:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith("guardian-agent: ") and message in err and "Traceback" not in err, err
    assert main([*base[:-4], "--tls-cert", str(key), *base[-4:], "revoke", "--device", "AP-1"]) == 1
    assert "--tls-cert and --tls-key go together, and need --tls-ca" in capsys.readouterr().err
    missing = tmp_path / "missing.key"
    assert main([*base[:4], str(missing), *base[5:], "revoke", "--device", "AP-1"]) == 1
    assert f"{missing}: No such file" in capsys.readouterr().err


def test_registry_revocation_marks_unknown_ids(tmp_path: Path) -> None:
    registry = Registry(DEVICES)
    assert registry.revoke("AP-0001") is not None and registry.revoke("AP-0001") is None
    registry.mark_revoked("AP-0009")
    assert registry.is_revoked(b"AP-0001") and registry.is_revoked(b"AP-0009")
    assert not registry.is_revoked(b"AP-0002") and len(registry) == 1
