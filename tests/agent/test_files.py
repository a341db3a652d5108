"""Durable files (agent/shared/files.py) and labelled key files (agent/shared/keyfiles.py).

Short writes and a full disk are made by wrapping os.write; fsync calls are recorded with the
kind of file each fd was (a directory or a regular file) at the moment of the call.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.shared.errors import ConfigError
from agent.shared.files import write_all, write_atomic, write_new_private
from agent.shared.keyfiles import (
    GATEWAY_ID,
    KEY_ID,
    labelled_pem,
    load_central_public_key,
    load_gateway_public_key,
    load_or_create_private_key,
    public_pem,
    read_labelled_pem,
)
from provisioning.audit import AuditLog, verify

DATA = bytes(range(256)) * 40  # 10 KiB


def short_writes(monkeypatch: pytest.MonkeyPatch, at_most: int = 7) -> list[int]:
    """os.write writes at most `at_most` bytes per call; returns the sizes written."""
    real = os.write
    sizes: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        n = real(fd, bytes(data[:at_most]))
        sizes.append(n)
        return n

    monkeypatch.setattr(os, "write", write)
    return sizes


def disk_full_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """os.write accepts `budget` bytes in all, then fails with ENOSPC."""
    real = os.write
    left = [budget]

    def write(fd: int, data: bytes | memoryview) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """(is a directory, inode) of every fd os.fsync is called on."""
    real = os.fsync
    calls: list[tuple[bool, int]] = []

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        calls.append((stat.S_ISDIR(st.st_mode), st.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_write_all_loops_over_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = short_writes(monkeypatch, 3)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_all(fd, b"0123456789")
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"0123456789" and sizes == [3, 3, 3, 1]


def test_write_atomic_writes_everything_through_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.toml"
    sizes = short_writes(monkeypatch)
    write_atomic(path, DATA)
    assert path.read_bytes() == DATA and len(sizes) > 1000
    assert not (tmp_path / "state.toml.tmp").exists()


def test_write_atomic_fsyncs_the_file_then_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registry.toml"
    calls = fsyncs(monkeypatch)
    write_atomic(path, b"new")
    assert calls == [(False, path.stat().st_ino), (True, tmp_path.stat().st_ino)]


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_write_atomic_sets_the_mode_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o077 if mode == 0o644 else 0)
    try:
        write_atomic(tmp_path / "f", b"x", mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


def test_write_atomic_on_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "commands.toml"
    path.write_bytes(b"old state")
    disk_full_after(monkeypatch, 1000)
    with pytest.raises(OSError) as exc:
        write_atomic(path, DATA)
    assert exc.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old state" and sorted(p.name for p in tmp_path.iterdir()) == ["commands.toml"]


def test_write_new_private_is_exclusive_0600_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "claim.toml"
    calls = fsyncs(monkeypatch)
    short_writes(monkeypatch)
    old = os.umask(0)
    try:
        write_new_private(path, DATA, "exists; refusing to overwrite a claim file")
    finally:
        os.umask(old)
    assert path.read_bytes() == DATA and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert calls == [(False, path.stat().st_ino), (True, tmp_path.stat().st_ino)]
    with pytest.raises(ConfigError, match=r"claim\.toml: exists; refusing to overwrite a claim file"):
        write_new_private(path, b"other", "exists; refusing to overwrite a claim file")
    assert path.read_bytes() == DATA


def test_write_new_private_leaves_no_half_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.key"
    disk_full_after(monkeypatch, 10)
    with pytest.raises(OSError):
        write_new_private(path, DATA, "exists")
    assert not path.exists()


def test_a_key_created_on_a_full_disk_is_created_again_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.key"
    with monkeypatch.context() as m:
        disk_full_after(m, 20)
        with pytest.raises(OSError):
            load_or_create_private_key(path, Ed25519PrivateKey, "Ed25519", "the gateway's private key")
    key = load_or_create_private_key(path, Ed25519PrivateKey, "Ed25519", "the gateway's private key")
    again = load_or_create_private_key(path, Ed25519PrivateKey, "Ed25519", "the gateway's private key")
    assert key.public_key() == again.public_key() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_audit_log_appends_whole_lines_through_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.log")
    short_writes(monkeypatch, 5)
    log.append("flash.begin", "AP-0001", port="/dev/ttyUSB0")
    head = log.append("flash.done", "AP-0001")
    assert verify(tmp_path / "audit.log") == head and head.seq == 2


# --- labelled PEM files ----------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_labelled_pem_round_trip(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    path = _write(tmp_path / "gw.key.pub", labelled_pem(GATEWAY_ID, "GW-1", public_pem(key)))
    assert path.read_bytes().startswith(b"Gateway-Id: GW-1\n-----BEGIN PUBLIC KEY-----\n")
    assert load_gateway_public_key(path) == ("GW-1", key)
    value, pem = read_labelled_pem(path, GATEWAY_ID)
    assert value == "GW-1" and pem == public_pem(key).strip()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no 'Key-Id: <id>' line before the PEM block"),
        (b"Gateway-Id: GW-1\n", "no 'Key-Id: <id>' line before the PEM block"),  # another file's label
        (b"Key-Id: has space\n", "no 'Key-Id: <id>' line"),
        (b"Key-Id: central\n", "no PEM public key block"),
        (b"Key-Id: central\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "is not a public key"),
        (
            labelled_pem(KEY_ID, "central", public_pem(X25519PrivateKey.generate().public_key())),
            "not an Ed25519 public",
        ),
    ],
)
def test_labelled_pem_errors_name_the_file_and_what_is_wrong(tmp_path: Path, content: bytes, message: str) -> None:
    path = _write(tmp_path / "central.pub", content)
    with pytest.raises(ConfigError, match=r"central\.pub: ") as exc:
        load_central_public_key(path)
    assert message in str(exc.value)


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_central_public_key(tmp_path / "absent.pub")
