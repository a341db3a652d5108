"""The provisioning inventory: every device this technician's station keyed, encrypted at rest.

File layout (integers unsigned, big-endian):

    0   8   magic b"GEINV\\x00\\x00\\x01"
    8   1   scrypt log2(n)      (14 .. 20)
    9   1   scrypt r            (1 .. 16)
    10  1   scrypt p            (1 .. 4)
    11  16  salt
    27  16  check: SHA-256("ge-inventory-check" || k2)[:16]
    43  12  AES-GCM nonce
    55  ..  AES-256-GCM(k1, nonce, plaintext JSON, aad = bytes 0 .. 54)

k1 || k2 = scrypt(passphrase, salt, n, r, p, 64 bytes). The check value tells a wrong
passphrase (check differs) from an altered file (check matches, GCM refuses). The file is
replaced atomically (new file, fsync, rename, fsync of the directory) with mode 0600; a new
nonce every write, the salt kept so the derived key is computed once per process.

Plaintext: {"format": 1, "devices": {uid hex: record}, "revoked": {uid hex: record without
key}, "audit_head": {"seq": n, "hash": hex}}. A device record holds its id, kind, venue,
zone, key (hex), state ("pending" until the flash transaction registered it, then
"provisioned"), the bundle, firmware and MicroPython versions read back from the board, and
the steps done.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import struct
import sys
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from agent.shared.files import write_atomic
from provisioning.errors import ProvisionError

MAGIC = b"GEINV\x00\x00\x01"
PASSPHRASE_ENV = "GE_PROVISION_PASSPHRASE"  # noqa: S105 - the name of the variable, not a secret
LOG2N, R, P = 15, 8, 1
_HEAD = struct.Struct(">8sBBB16s16s12s")
MAX_FILE = 64 << 20
MIN_PASSPHRASE = 8


def passphrase_from_env_or_prompt(path: Path, creating: bool) -> str:
    """$GE_PROVISION_PASSPHRASE, or asked on the terminal (twice when creating the inventory)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise ProvisionError(f"{path}: no passphrase: set {PASSPHRASE_ENV} or run from a terminal")
        value = getpass.getpass(f"passphrase for {path}: ")
        if creating and getpass.getpass("again: ") != value:
            raise ProvisionError("the two passphrases differ; nothing was created")
    if creating and len(value) < MIN_PASSPHRASE:
        raise ProvisionError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    if not value:
        raise ProvisionError(f"{path}: empty passphrase")
    return value


def _derive(passphrase: str, salt: bytes, log2n: int, r: int, p: int) -> tuple[bytes, bytes]:
    km = Scrypt(salt=salt, length=64, n=1 << log2n, r=r, p=p).derive(passphrase.encode())
    return km[:32], hashlib.sha256(b"ge-inventory-check" + km[32:]).digest()[:16]


class Inventory:
    """The decrypted inventory in memory; `save()` writes it back encrypted."""

    def __init__(
        self, path: Path, data: dict[str, Any], params: tuple[int, int, int, bytes], key: bytes, check: bytes
    ) -> None:
        self.path = Path(path)
        self.data = data
        self._params = params
        self._key = key
        self._check = check
        self.lock = threading.RLock()

    # ---------------------------------------------------------------- open / create / save

    @classmethod
    def open(cls, path: Path, passphrase: str | None = None, create: bool = False) -> Inventory:
        """Decrypt `path`; with `create`, a missing file becomes a new, empty inventory."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise ProvisionError(f"{path}: no inventory here (flash a device first, or check --home)")
            phrase = passphrase if passphrase is not None else passphrase_from_env_or_prompt(path, True)
            salt = os.urandom(16)
            key, check = _derive(phrase, salt, LOG2N, R, P)
            empty: dict[str, Any] = {"format": 1, "devices": {}, "revoked": {}, "audit_head": None}
            inv = cls(path, empty, (LOG2N, R, P, salt), key, check)
            inv.save()
            return inv
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise ProvisionError(f"{path}: {exc.strerror}") from exc
        if len(blob) > MAX_FILE or len(blob) < _HEAD.size + 16 or not blob.startswith(MAGIC):
            raise ProvisionError(f"{path}: not a Guardian Edge inventory (or truncated)")
        _, log2n, r, p, salt, check, _nonce = _HEAD.unpack_from(blob)
        if not (14 <= log2n <= 20 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ProvisionError(f"{path}: inventory header has out-of-range scrypt parameters (altered?)")
        phrase = passphrase if passphrase is not None else passphrase_from_env_or_prompt(path, False)
        key, want = _derive(phrase, salt, log2n, r, p)
        if not hmac.compare_digest(want, check):
            raise ProvisionError(f"{path}: wrong passphrase")
        inv = cls(path, {}, (log2n, r, p, salt), key, check)
        inv.data = inv._decrypt(blob)
        return inv

    def _decrypt(self, blob: bytes) -> dict[str, Any]:
        head = blob[: _HEAD.size]
        nonce = head[-12:]
        try:
            plain = AESGCM(self._key).decrypt(nonce, blob[_HEAD.size :], head)
        except InvalidTag:
            raise ProvisionError(
                f"{self.path}: the inventory was altered or damaged (authentication failed); nothing was changed"
            ) from None
        try:
            data = json.loads(plain)
            if not isinstance(data, dict) or data.get("format") != 1:
                raise ValueError("unknown format")
            for table in ("devices", "revoked"):
                if not isinstance(data.get(table), dict):
                    raise ValueError(f"no {table} table")
        except ValueError as exc:
            raise ProvisionError(f"{self.path}: decrypted inventory is not usable: {exc}") from None
        return data

    def reload(self) -> None:
        """Read the file again (another process may have written it)."""
        try:
            blob = self.path.read_bytes()
        except OSError as exc:
            raise ProvisionError(f"{self.path}: {exc.strerror}") from exc
        log2n, r, p, salt = self._params
        if len(blob) < _HEAD.size or _HEAD.unpack_from(blob)[:6] != (MAGIC, log2n, r, p, salt, self._check):
            raise ProvisionError(f"{self.path}: the inventory was replaced by another file; start again")
        self.data = self._decrypt(blob)

    def save(self) -> None:
        """Encrypt and replace the file atomically (mode 0600)."""
        with self.lock:
            log2n, r, p, salt = self._params
            nonce = os.urandom(12)
            head = _HEAD.pack(MAGIC, log2n, r, p, salt, self._check, nonce)
            plain = json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()
            blob = head + AESGCM(self._key).encrypt(nonce, plain, head)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, blob)

    # ---------------------------------------------------------------- records

    def device(self, uid: str) -> dict[str, Any] | None:
        rec = self.data["devices"].get(uid)
        return rec if isinstance(rec, dict) else None

    def by_id(self, device_id: str) -> tuple[str, dict[str, Any]] | None:
        for uid, rec in self.data["devices"].items():
            if rec.get("id") == device_id:
                return uid, rec
        return None

    def revoked(self, uid: str) -> dict[str, Any] | None:
        rec = self.data["revoked"].get(uid)
        return rec if isinstance(rec, dict) else None
