"""Board files (firmware/boards/<board>.json): which port a product's board runs, and its pin map.

A board file is a JSON object with at least "board" (its file name without .json) and "port"
(the MicroPython port: "esp32", "rp2", "zephyr" (the nRF52840 wristband) or "unix"; the
hardware layer is firmware/hal/<port>.py). The rest (pins, sensor channels, chip) is checked
here for that port by the firmware's own checker, firmware/hal/boardspec.py (plain Python,
loaded from the firmware tree), and goes into the bundle in its checked form (every key with
its default, "spec": 1): `--board NAME` writes it to boards/NAME.json on the device and names
it in config.json ("board": NAME); the device's hal only reads that form, so neither the
checker nor its heap is on the device, and a board file that does not fit is named here, by
file and key, before anything is flashed. Its optional parts with a driver of their own
("accel": {"part": "lis3dh"} -> firmware/hal/lis3dh.py) decide which drivers the bundle
carries. Without a board the device is the unix port's virtual board.

The port also decides how the technician's base MicroPython image is written
(provisioning/image.py): esptool for ESP chips; a UF2 file copied to the board's USB
bootloader drive for RP2 (BOOTSEL) and for nRF52840 boards with the Adafruit UF2 bootloader
(the zephyr and nrf ports).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from provisioning.errors import ProvisionError

UNIX = "unix"
# port -> how its base image is written (None: the virtual board has no image)
IMAGE_ROUTES: dict[str, str | None] = {"esp32": "esptool", "rp2": "uf2", "zephyr": "uf2", UNIX: None}
PORTS = tuple(IMAGE_ROUTES)
WIFI_PORTS = ("esp32", "rp2")  # ports whose boards reach the broker over Wi-Fi (network.WLAN)
PART_KEYS = ("accel",)  # board file keys whose "part" names a driver module hal/<part>.py
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MAX_BOARD_FILE = 64 << 10


@dataclass(frozen=True, slots=True)
class BoardFile:
    name: str
    port: str
    path: Path | None  # None for the virtual board
    data: bytes = b""  # the checked form, as it goes onto the device

    @property
    def image_route(self) -> str | None:
        return IMAGE_ROUTES[self.port]

    @property
    def device_path(self) -> str:
        return f"boards/{self.name}.json"

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts whose driver (hal/<part>.py) this board's hal loads."""
        return _parts(json.loads(self.data)) if self.data else ()

    @property
    def wifi(self) -> bool:
        """True when the board's port joins a Wi-Fi network for an MQTT link."""
        return self.port in WIFI_PORTS


VIRTUAL = BoardFile("", UNIX, None)


def boards_dir(firmware: Path) -> Path:
    return Path(firmware) / "boards"


def load_board(name: str, firmware: Path) -> BoardFile:
    """The board file `name` of a firmware tree, checked; ProvisionError naming file and field."""
    if not NAME_RE.fullmatch(name):
        raise ProvisionError(f"--board {name!r}: expected 1-32 characters from a-z 0-9 _ - (a board file's name)")
    path = boards_dir(firmware) / f"{name}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        known = ", ".join(list_boards(firmware)) or "none"
        raise ProvisionError(f"--board {name}: no board file {path} (known boards: {known})") from None
    except OSError as exc:
        raise ProvisionError(f"{path}: {exc.strerror}") from exc
    if len(raw) > MAX_BOARD_FILE:
        raise ProvisionError(f"{path}: larger than {MAX_BOARD_FILE} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ProvisionError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProvisionError(f"{path}: must hold a JSON object")
    if data.get("board") != name:
        raise ProvisionError(f'{path}: "board" must be {name!r} (the file\'s name), not {data.get("board")!r}')
    port = data.get("port")
    if port not in PORTS:
        raise ProvisionError(f'{path}: "port" must be one of {", ".join(PORTS)}, not {port!r}')
    checked = _checker(firmware)
    try:
        form = checked.check(data, str(path), port, name)
    except checked.BoardFileError as exc:
        raise ProvisionError(str(exc)) from None
    return BoardFile(name, str(port), path, (json.dumps(form, sort_keys=True, separators=(",", ":")) + "\n").encode())


def _checker(firmware: Path) -> ModuleType:
    """The firmware tree's board file checker (firmware/hal/boardspec.py), loaded by its path."""
    path = Path(firmware) / "hal" / "boardspec.py"
    spec = importlib.util.spec_from_file_location(f"_ge_boardspec_{abs(hash(str(path.resolve())))}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ProvisionError(f"firmware tree {firmware} has no board file checker (hal/boardspec.py)")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except (OSError, SyntaxError, ImportError) as exc:
        raise ProvisionError(f"{path}: cannot load the board file checker: {exc}") from exc
    return mod


def _parts(data: object) -> tuple[str, ...]:
    if not isinstance(data, dict):
        return ()
    out = []
    for key in PART_KEYS:
        part = data.get(key)
        if isinstance(part, dict) and isinstance(part.get("part"), str) and NAME_RE.fullmatch(part["part"]):
            out.append(part["part"])
    return tuple(sorted(set(out)))


def list_boards(firmware: Path) -> list[str]:
    d = boards_dir(firmware)
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def known_ports(firmware: Path) -> set[str]:
    """Every port a hal module may be named for: the known ports and those of the tree's boards."""
    ports = set(PORTS)
    for name in list_boards(firmware):
        try:
            data = json.loads((boards_dir(firmware) / f"{name}.json").read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("port"), str):
            ports.add(data["port"])
    return ports


def known_parts(firmware: Path) -> set[str]:
    """Every part a driver module may be named for: the parts the tree's board files name."""
    parts: set[str] = set()
    for name in list_boards(firmware):
        try:
            parts.update(_parts(json.loads((boards_dir(firmware) / f"{name}.json").read_bytes())))
        except (OSError, ValueError):
            continue
    return parts
