"""The firmware tree as it goes onto a board's flash, and device configs for simulated venues.

A board's flash holds /boot.py (which finishes a firmware switch, /fwswitch.py), /main.py
(which imports /launch.py), /config.json, /lib (the pure modules), /hal (the hardware layer)
and /apps/<kind> (the app config.json names).
`firmware_files(kind)` is that layout for one kind; `VirtualBoard.install()` takes it as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.shared.protocol import DEVICE_KINDS
from hil_tests.sim.tools import FIRMWARE_DIR

KINDS = DEVICE_KINDS


def firmware_files(kind: str, root: Path = FIRMWARE_DIR) -> dict[str, str | bytes | Path]:
    """Device path -> host file for everything a board of `kind` runs (config.json aside)."""
    if kind not in KINDS:
        raise ValueError(f"no firmware app for device kind {kind!r} (known: {', '.join(KINDS)})")
    files: dict[str, str | bytes | Path] = {n: root / n for n in ("boot.py", "fwswitch.py", "main.py", "launch.py")}
    for sub in ("lib", "hal"):
        for path in sorted((root / sub).glob("*.py")):
            files[f"{sub}/{path.name}"] = path
    files["apps/__init__.py"] = root / "apps" / "__init__.py"
    for path in sorted((root / "apps" / kind).glob("*.py")):
        files[f"apps/{kind}/{path.name}"] = path
    return files


def alarm_post_config(device_id: str, key: bytes, broker: tuple[str, int], **options: Any) -> dict[str, Any]:
    """config.json for an alarm post (options as in firmware/apps/alarm_post/app.py DEFAULTS)."""
    return {
        "kind": "alarm_post",
        "id": device_id,
        "key": key.hex(),
        "broker": broker[0],
        "port": broker[1],
        **options,
    }


def wristband_config(device_id: str, key: bytes, **options: Any) -> dict[str, Any]:
    """config.json for a wristband (options as in firmware/apps/wristband/app.py DEFAULTS)."""
    return {"kind": "wristband", "id": device_id, "key": key.hex(), **options}


def sensor_config(
    device_id: str, key: bytes, broker: tuple[str, int], channels: list[dict[str, Any]], **options: Any
) -> dict[str, Any]:
    """config.json for a venue sensor (channels and options as in firmware/apps/sensor/app.py)."""
    return {
        "kind": "sensor",
        "id": device_id,
        "key": key.hex(),
        "broker": broker[0],
        "port": broker[1],
        "channels": channels,
        **options,
    }
