"""The technician's station: one home directory with the inventory, the audit log and the labels.

    <home>/inventory.ge   encrypted inventory (provisioning/inventory.py), 0600
    <home>/audit.log      hash-chained audit log (provisioning/audit.py), 0600
    <home>/labels/        <device>.png, <device>.svg, <device>.txt
    <home>/.lock          held (flock) by the one guardian-provision process using the home

Every change goes through `commit()`: the audit entry is appended first, then the inventory
is saved with the new audit head, so the inventory never names an entry the log lacks.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from provisioning.audit import AuditLog, Head
from provisioning.errors import ProvisionError
from provisioning.inventory import Inventory

HOME_ENV = "GE_PROVISION_HOME"


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "guardian-provision"


class Workspace:
    """The home directory, locked for this process; inventory and audit log opened together."""

    def __init__(self, home: Path, create: bool = False, passphrase: str | None = None) -> None:
        self.home = Path(home)
        if not self.home.is_dir():
            if not create:
                raise ProvisionError(f"{self.home}: no provisioning home here (flash a device first, or pass --home)")
            self.home.mkdir(parents=True, mode=0o700)
        self._lock_fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ProvisionError(f"{self.home}: another guardian-provision is using this home; wait for it") from None
        try:
            self.inventory = Inventory.open(self.inventory_path, passphrase, create=create)
            head = self.inventory.data.get("audit_head")
            anchor = Head(int(head["seq"]), str(head["hash"])) if isinstance(head, dict) else None
            self.audit = AuditLog(self.audit_path, anchor)
        except BaseException:
            self.close()
            raise
        self.labels_dir = self.home / "labels"

    @property
    def inventory_path(self) -> Path:
        return self.home / "inventory.ge"

    @property
    def audit_path(self) -> Path:
        return self.home / "audit.log"

    def commit(self, action: str, device: str | None = None, **detail: Any) -> None:
        """Audit `action`, then save the inventory (as changed by the caller) with the new head."""
        with self.inventory.lock:
            head = self.audit.append(action, device, **detail)
            self.inventory.data["audit_head"] = {"seq": head.seq, "hash": head.hash}
            self.inventory.save()

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
