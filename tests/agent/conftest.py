"""Fixtures for agent tests: vectors, a registry with the vector device, key material."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.shared.registry import Device, Registry

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def cose_vectors() -> Any:
    return load("cose.json")


@pytest.fixture(scope="session")
def batch_vectors() -> Any:
    return load("batch.json")


@pytest.fixture
def registry(cose_vectors: Any) -> Registry:
    return Registry(
        [
            Device(cose_vectors["device_id"], "alarm_post", bytes.fromhex(cose_vectors["key"]), "venue-1", "hall"),
            Device("AP-0002", "alarm_post", bytes.fromhex(cose_vectors["other_key"]), "venue-1", "bar"),
        ]
    )


@pytest.fixture(scope="session")
def gateway_key(batch_vectors: Any) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(batch_vectors["seed"]))
