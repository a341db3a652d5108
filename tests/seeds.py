"""Seeds for randomised tests: fresh every session, named in every failure, replayed with
GE_SEED=<n> (STYLE.md: fuzz and property tests print their seed so a failure can be replayed).

One seed per session: `GE_SEED` from the environment, or a new random one. A test gets it
from the `seed` fixture (for its own `random.Random(seed)`), and a Hypothesis property gets
it with `@seeded` (Hypothesis's `@seed`). When such a test fails, its report gets a section
with the command that replays it. This module is a pytest plugin (tests/conftest.py loads
it; `pytest -p tests.seeds` elsewhere).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import hypothesis
import pytest

SEED = int(os.environ.get("GE_SEED") or random.SystemRandom().randrange(1 << 32))

F = TypeVar("F", bound=Callable[..., Any])


def seeded(test: F) -> F:
    """Run a Hypothesis property from the session's seed (put it above `@given`)."""
    test = hypothesis.seed(SEED)(test)
    test.ge_seeded = True  # type: ignore[attr-defined]  # read by the report hook below
    return test


@pytest.fixture
def seed() -> int:
    """The session's seed, for a test's own `random.Random(seed)`."""
    return SEED


def replay_command(nodeid: str) -> str:
    return f"GE_SEED={SEED} python -m pytest '{nodeid}'"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    uses_seed = "seed" in getattr(item, "fixturenames", ()) or getattr(getattr(item, "obj", None), "ge_seeded", False)
    if report.failed and uses_seed:
        report.sections.append(("GE_SEED", f"a randomised test failed; replay it with\n{replay_command(item.nodeid)}"))
    return report
