"""The rig's two kinds of failure: infrastructure (may be retried once) and product (never)."""

from __future__ import annotations


class RigInfraError(RuntimeError):
    """The rig itself failed: a port vanished, flashing failed, the fixture did not answer.

    A test that fails with this may be retried once; the retry is recorded. A product failure
    (an expectation about the device not met) is never retried.
    """


class FixtureError(RigInfraError):
    """The fixture answered ERR or not at all."""


class SelftestFailure(AssertionError):
    """A freshly flashed board failed its self-test: a product failure, never retried."""
