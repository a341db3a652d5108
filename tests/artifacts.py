"""Test artefacts people look at (screenshots): written under artifacts/ at the repository root,
listed at the end of the pytest run (tests/conftest.py) so their paths are in the output."""

from __future__ import annotations

from pathlib import Path

from hil_tests.sim.tools import REPO_ROOT

ROOT = REPO_ROOT / "artifacts"
written: set[Path] = set()


def artifact_dir(name: str) -> Path:
    """artifacts/<name>/, created; named in the run's summary."""
    path = ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    written.add(path)
    return path
