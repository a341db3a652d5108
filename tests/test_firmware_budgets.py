"""Heap budgets in CI: each app's real cycle completes on its bundle with the budget heap.

The bench (`make bench ONLY=firmware_heap`) bisects each app's smallest working heap; this
checks the one point that matters for CI, on the same rig (tests/bench/firmware_rig.py): the
bundle guardian-provision builds, on a virtual board running `micropython -X
heapsize=<budget>K` (64-bit unix port: 96 KB for the alarm post and the sensor, 64 KB for
the wristband), completes its cycle (two clicks 200 ms apart delivered; smoke delivered; SOS
adverts on the air). A clearly too small heap must fail the same cycle, so the check can fail.
Every real board's bundle, for each link it may use, fits the 48 KB flash budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.boards import load_board
from provisioning.bundle import FIRMWARE_DIR, build_bundle
from tests.bench.bench_firmware import BOARDS, LINKS
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


@pytest.mark.parametrize(("kind", "board", "link"), [(k, b, t) for k in KINDS for b in BOARDS[k] for t in LINKS[k]])
def test_a_real_boards_bundle_within_its_size_budget(tmp_path: Path, kind: str, board: str, link: str | None) -> None:
    # what flash puts on the board: its port's hal, its board file, its one link
    b = build_bundle(kind, tmp_path / "b", board=load_board(board, FIRMWARE_DIR), transport=link)
    sizes = {f.path: f.size for f in b.files}
    assert f"hal/{b.port}.mpy" in sizes and f"boards/{board}.json" in sizes
    assert sum(sizes.values()) <= SIZE_TARGET, (kind, board, link, sum(sizes.values()), sizes)
