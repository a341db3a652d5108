"""The agent's exceptions: one root, one subclass per component that raises to a caller."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A configuration, registry or key file is wrong; the message names the file and field."""


class WireError(AgentError):
    """Bytes from the network do not form a valid message; `reason` is the counted reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StoreError(AgentError):
    """The durable buffer cannot be opened or written; `full` when for want of disk space."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class CommandError(AgentError):
    """A command for central could not be built or sent (the central-side CLI)."""
