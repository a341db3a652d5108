"""Randomised tests can be replayed (tests/seeds.py): a failing one names the session's seed,
and running it again with that GE_SEED fails the same way; without GE_SEED every session
draws a new seed. Checked on throwaway test files run by pytest in a child process, so each
run reads its own environment."""

from __future__ import annotations

import re

import pytest

from hil_tests.sim.tools import REPO_ROOT

RANDOM_DRAW = """
import random

def test_draw(seed):
    rng = random.Random(seed)
    assert rng.random() < 0.0, f"first draw {rng.random()!r}"

def test_without_a_seed():
    assert False, "not randomised"
"""

PROPERTY = """
import json, os
from hypothesis import given, settings, strategies as st
from tests.seeds import seeded

@seeded
@settings(max_examples=20, database=None, deadline=None)
@given(st.binary(min_size=8, max_size=8))
def test_examples(blob):
    with open(os.environ["EXAMPLES"], "a") as f:
        f.write(blob.hex() + "\\n")
    assert os.environ.get("FAIL") != "1"
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, seed: int | None) -> pytest.RunResult:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    if seed is None:
        monkeypatch.delenv("GE_SEED", raising=False)
    else:
        monkeypatch.setenv("GE_SEED", str(seed))
    return pytester.runpytest_subprocess("-p", "tests.seeds", "-p", "no:cacheprovider", "-p", "no:guardian_rig", "-q")


def replay_seed(result: pytest.RunResult) -> int:
    found = re.findall(r"GE_SEED=(\d+) python -m pytest '(\S+)'", result.stdout.str())
    assert [nodeid for _, nodeid in found] == ["test_random_draw.py::test_draw"], result.stdout.str()
    return int(found[0][0])


def failure(result: pytest.RunResult) -> str:
    m = re.search(r"AssertionError: (first draw \S+)", result.stdout.str())
    assert m is not None, result.stdout.str()
    return m.group(1)


def test_a_failing_randomised_test_names_a_seed_that_replays_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_random_draw=RANDOM_DRAW)
    first = run(pytester, monkeypatch, None)
    first.assert_outcomes(failed=2)
    seed = replay_seed(first)  # only the test that used the seed is given a replay command
    again = run(pytester, monkeypatch, seed)
    assert replay_seed(again) == seed
    assert failure(again) == failure(first)
    other = run(pytester, monkeypatch, None)
    assert replay_seed(other) != seed, "a new session draws a new seed"
    assert failure(other) != failure(first)


def test_a_property_runs_the_same_examples_from_the_same_seed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_property=PROPERTY)
    log = pytester.path / "examples.txt"
    monkeypatch.setenv("EXAMPLES", str(log))

    def examples(seed: int) -> list[str]:
        log.write_text("")
        run(pytester, monkeypatch, seed).assert_outcomes(passed=1)
        return log.read_text().split()

    assert examples(1234) == examples(1234)
    assert examples(1234) != examples(5678)
    monkeypatch.setenv("FAIL", "1")
    failed = run(pytester, monkeypatch, 1234)
    failed.assert_outcomes(failed=1)
    assert "GE_SEED=1234 python -m pytest 'test_property.py::test_examples'" in failed.stdout.str()
