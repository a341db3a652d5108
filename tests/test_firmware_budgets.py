"""Heap budgets in CI: each app's real cycle completes on its bundle with the budget heap.

The bench (`make bench ONLY=firmware_heap`) bisects each app's smallest working heap; this
checks the one point that matters for CI, on the same rig (tests/bench/firmware_rig.py): the
bundle guardian-provision builds, on a virtual board running `micropython -X
heapsize=<budget>K` (64-bit unix port: 96 KB for the alarm post and the sensor, 64 KB for
the wristband), completes its cycle (two presses delivered; smoke delivered; SOS adverts on
the air). A clearly too small heap must fail the same cycle, so the check can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.firmware_rig import HEAP_TARGET_KB, KINDS, SIZE_TARGET, FirmwareSite

TOO_SMALL_KB = 40


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, micropython: str) -> Iterator[FirmwareSite]:
    with FirmwareSite(tmp_path_factory.mktemp("budgets")) as s:
        yield s


@pytest.mark.parametrize("kind", KINDS)
def test_app_cycle_completes_within_its_heap_budget(site: FirmwareSite, kind: str) -> None:
    t = site.trial(kind, HEAP_TARGET_KB[kind])
    assert t.ok, f"{kind} at {HEAP_TARGET_KB[kind]} KB: {t.reason}"


@pytest.mark.parametrize("kind", KINDS)
def test_too_small_a_heap_fails_the_cycle(site: FirmwareSite, kind: str) -> None:
    t = site.trial(kind, TOO_SMALL_KB)
    assert not t.ok and "MemoryError" in t.reason, t


@pytest.mark.parametrize("kind", KINDS)
def test_bundle_within_its_size_budget(site: FirmwareSite, kind: str) -> None:
    sizes = {p: Path(f).stat().st_size if isinstance(f, Path) else len(f) for p, f in site.files[kind].items()}
    total = sum(n for p, n in sizes.items() if p != "manifest.json")
    assert total <= SIZE_TARGET, (kind, total, sizes)
