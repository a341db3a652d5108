"""The one error type of guardian-provision: printed as `guardian-provision: message`, exit 1."""

from __future__ import annotations


class ProvisionError(Exception):
    """A provisioning step could not be done; the message says what and why (never a secret)."""


class DeviceError(ProvisionError):
    """One device failed at a named step of its flash transaction."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
