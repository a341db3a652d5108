"""Writing the technician's base MicroPython image, by the route of the board's port.

Every image is checked before any board is touched (`plan_image()`), and nothing is erased
unless it passed:

- ESP chips (port esp32), with esptool's Python API: the file must be an ESP image (first
  byte 0xE9) whose header names a chip esptool knows (the chip id at byte 12, as esptool's
  targets define IMAGE_CHIP_ID), at most 16 MiB. `write_image()` connects, refuses an image
  made for another chip than the one that answered (before erasing), picks the offset for
  the chip family (the ESP32's and ESP32-S2's second-stage bootloader sits at 0x1000, the
  newer families' at 0x0, as in MicroPython's own flashing instructions), then erases,
  writes and verifies and hard-resets the chip. A port where no chip answers gives
  DeviceError("image", ...) naming the port.
- UF2 (ports rp2, zephyr and nrf): the file must be whole 512-byte UF2 blocks (both start
  magics and the end magic in every block, a payload of at most 476 bytes, block numbers 0
  to n-1 with the same count per family) carrying a family id of the board's chip
  (UF2_FAMILIES), with every target address inside that chip's flash. The drive is the
  board's USB bootloader drive (RP2 in BOOTSEL: INFO_UF2.TXT with "RPI-RP2" or "RP2350";
  an nRF52840 with the Adafruit UF2 bootloader: "nRF52"), checked too; the image is copied
  there and flushed (the bootloader writes it and restarts the board into MicroPython,
  whose console then appears on the serial port). Without a drive, `picotool load -v -x`
  writes an RP2 image over USB when picotool is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import DeviceError, ProvisionError

DEFAULT_BAUD = 460800
CONNECT_ATTEMPTS = 3
# chip name as esptool reports it -> where a merged MicroPython image starts
_OFFSETS = {"ESP32": 0x1000, "ESP32-S2": 0x1000}
MAX_IMAGE = 16 << 20


@dataclass(frozen=True, slots=True)
class ImagePlan:
    port: str
    image: Path
    sha256: str
    size: int
    baud: int = DEFAULT_BAUD
    chip: str = ""  # the chip the image's header is made for

    def offset(self, chip: str) -> int:
        """Image offset for a chip family as esptool names it (CHIP_NAME: "ESP32", "ESP32-S3", ...)."""
        return _OFFSETS.get(chip.strip().upper(), 0x0)

    def command_line(self, chip: str) -> list[str]:
        """The esptool command line that does the same, for a technician's notes."""
        return [
            "esptool",
            "--port",
            self.port,
            "--baud",
            str(self.baud),
            "write-flash",
            "--erase-all",
            hex(self.offset(chip)),
            str(self.image),
        ]


def _read_image(image: Path) -> bytes:
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"--image {image}: {exc.strerror}") from exc
    if not 0 < len(data) <= MAX_IMAGE:
        raise ProvisionError(f"--image {image}: {len(data)} bytes; expected 1 byte to {MAX_IMAGE >> 20} MiB")
    return data


def esp_image_chip(image: Path, data: bytes) -> str:
    """The chip (esptool's name, e.g. "ESP32-S3") an ESP image's header is made for."""
    from esptool.targets import CHIP_DEFS

    if data[0] != 0xE9:
        raise ProvisionError(f"--image {image}: not an ESP firmware image (first byte 0x{data[0]:02x}, expected 0xe9)")
    if len(data) < 16:
        raise ProvisionError(f"--image {image}: an ESP image header is 24 bytes; the file has {len(data)}")
    chip_id = struct.unpack_from("<H", data, 12)[0]
    for cls in CHIP_DEFS.values():
        if getattr(cls, "IMAGE_CHIP_ID", None) == chip_id:
            return str(cls.CHIP_NAME)
    raise ProvisionError(f"--image {image}: header names chip id {chip_id}, which esptool does not know")


def plan_image(port: str, image: Path, baud: int = DEFAULT_BAUD) -> ImagePlan:
    """Check an ESP image file and build the plan; ProvisionError when the file is unusable."""
    image = Path(image)
    data = _read_image(image)
    chip = esp_image_chip(image, data)
    return ImagePlan(port, image, hashlib.sha256(data).hexdigest(), len(data), baud, chip)


def write_image(plan: ImagePlan) -> str:
    """Erase, write and verify the image on the chip at plan.port; returns the chip name."""
    from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, verify_flash, write_flash
    from esptool.logger import log
    from esptool.util import FatalError

    log.set_verbosity("silent")
    step = "connect"
    try:
        with detect_chip(plan.port, plan.baud, "default-reset", connect_attempts=CONNECT_ATTEMPTS) as esp:
            chip = str(esp.CHIP_NAME)
            if plan.chip and chip.upper() != plan.chip.upper():
                raise DeviceError("image", f"{plan.port} is an {chip}; the image is for an {plan.chip}; nothing erased")
            step = "stub"
            stub = esp.run_stub()
            attach_flash(stub)
            addr_data: list[tuple[int, str | bytes]] = [(plan.offset(chip), str(plan.image))]
            step = "erase"
            erase_flash(stub)
            step = "write"
            write_flash(stub, addr_data, no_progress=True)
            step = "verify"
            verify_flash(stub, addr_data)
            reset_chip(stub, "hard-reset")
            return chip
    except FatalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if step == "connect":
            raise DeviceError("image", f"no Espressif chip answered on {plan.port}: {first}") from None
        raise DeviceError("image", f"esptool {step} failed on {plan.port}: {first}") from None
    except OSError as exc:
        raise DeviceError("image", f"{plan.port}: {exc}") from None


# ------------------------------------------------------------------------------------ UF2

UF2_MAGIC0, UF2_MAGIC1, UF2_END = 0x0A324655, 0x9E5D5157, 0x0AB16F30
UF2_FLAG_NOFLASH, UF2_FLAG_FAMILY = 0x00000001, 0x00002000
UF2_BLOCK = 512
UF2_PAYLOAD_MAX = 476
# port -> {family id: (chip, flash start, flash end)}; ids from Microsoft's uf2families.json
UF2_FAMILIES: dict[str, dict[int, tuple[str, int, int]]] = {
    "rp2": {
        0xE48BFF56: ("RP2040", 0x10000000, 0x11000000),
        0xE48BFF59: ("RP2350 (Arm)", 0x10000000, 0x11000000),
        0xE48BFF5A: ("RP2350 (RISC-V)", 0x10000000, 0x11000000),
        0xE48BFF57: ("RP2 absolute block", 0x10000000, 0x11000000),
    },
    "zephyr": {0xADA52840: ("nRF52840", 0x00000000, 0x00100000)},
    "nrf": {0xADA52840: ("nRF52840", 0x00000000, 0x00100000)},
}
DRIVE_IDS = {"rp2": ("RPI-RP2", "RP2350"), "zephyr": ("nRF52",), "nrf": ("nRF52",)}
DRIVE_INFO = "INFO_UF2.TXT"
PORT_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class Uf2Plan:
    """A checked UF2 image and where it goes: a bootloader drive, or picotool (RP2)."""

    port: str  # the serial port the board's console appears on afterwards
    image: Path
    sha256: str
    size: int
    chips: tuple[str, ...]
    board_port: str
    drive: Path | None = None


def check_uf2(image: Path, data: bytes, board_port: str) -> tuple[str, ...]:
    """Check every block of a UF2 file for `board_port`; the chips its families name."""
    families = UF2_FAMILIES.get(board_port)
    if families is None:
        raise ProvisionError(f"--image {image}: the {board_port} port takes no UF2 image")
    if len(data) % UF2_BLOCK:
        raise ProvisionError(f"--image {image}: {len(data)} bytes is not a whole number of 512-byte UF2 blocks")
    counts: dict[int, int] = {}
    seen: dict[int, set[int]] = {}
    for i in range(len(data) // UF2_BLOCK):
        m0, m1, flags, addr, size, no, total, family = struct.unpack_from("<8I", data, i * UF2_BLOCK)
        (end,) = struct.unpack_from("<I", data, i * UF2_BLOCK + 508)
        where = f"--image {image}: block {i}"
        if (m0, m1, end) != (UF2_MAGIC0, UF2_MAGIC1, UF2_END):
            raise ProvisionError(f"{where}: not a UF2 block (bad magic)")
        if flags & UF2_FLAG_NOFLASH:
            continue
        if not flags & UF2_FLAG_FAMILY:
            raise ProvisionError(f"{where}: no family id; the chip it is for cannot be checked")
        if family not in families:
            known = ", ".join(f"0x{f:08x} {c[0]}" for f, c in families.items())
            raise ProvisionError(f"{where}: family 0x{family:08x} is not for the {board_port} port (expected {known})")
        if not 0 < size <= UF2_PAYLOAD_MAX:
            raise ProvisionError(f"{where}: payload of {size} bytes (at most {UF2_PAYLOAD_MAX})")
        _, start, stop = families[family]
        if not (start <= addr and addr + size <= stop):
            raise ProvisionError(f"{where}: address 0x{addr:08x} is outside the chip's flash")
        if counts.setdefault(family, total) != total or no >= total or no in seen.setdefault(family, set()):
            raise ProvisionError(f"{where}: block {no} of {total} does not fit the file's numbering")
        seen[family].add(no)
    if not counts:
        raise ProvisionError(f"--image {image}: no block to write")
    for family, total in counts.items():
        if len(seen[family]) != total:
            raise ProvisionError(f"--image {image}: {len(seen[family])} of {total} blocks (truncated?)")
    return tuple(sorted({families[f][0] for f in counts}))


def check_drive(drive: Path, board_port: str) -> None:
    """The drive must be a UF2 bootloader drive of the board's kind (INFO_UF2.TXT)."""
    try:
        info = (Path(drive) / DRIVE_INFO).read_text(errors="replace")[:4096]
    except OSError as exc:
        raise ProvisionError(f"--drive {drive}: not a UF2 bootloader drive ({DRIVE_INFO}: {exc.strerror})") from None
    ids = DRIVE_IDS[board_port]
    if not any(i in info for i in ids):
        raise ProvisionError(f"--drive {drive}: {DRIVE_INFO} names no {' or '.join(ids)} bootloader")


def plan_uf2(port: str, image: Path, board_port: str, drive: Path | None) -> Uf2Plan:
    """Check a UF2 image (and its drive) for a board; ProvisionError when unusable."""
    image = Path(image)
    data = _read_image(image)
    chips = check_uf2(image, data, board_port)
    if drive is not None:
        check_drive(drive, board_port)
    elif board_port != "rp2" or shutil.which("picotool") is None:
        raise ProvisionError(
            f"--image {image}: put the board in its bootloader (BOOTSEL, or a double reset) and pass --drive "
            "with the drive it shows" + (" (or install picotool)" if board_port == "rp2" else "")
        )
    return Uf2Plan(port, image, hashlib.sha256(data).hexdigest(), len(data), chips, board_port, drive)


def write_uf2(plan: Uf2Plan, wait_s: float = PORT_WAIT_S) -> str:
    """Copy the image to the drive (or load it with picotool), then wait for the console port."""
    data = plan.image.read_bytes()
    if hashlib.sha256(data).hexdigest() != plan.sha256:
        raise DeviceError("image", f"{plan.image} changed since it was checked; nothing written")
    if plan.drive is not None:
        dest = plan.drive / plan.image.name
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeviceError("image", f"copy to {plan.drive}: {exc}") from None
    else:
        try:
            subprocess.run(
                ["picotool", "load", "-v", "-x", str(plan.image)], check=True, capture_output=True, timeout=120
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise DeviceError("image", f"picotool load failed: {exc}") from None
    deadline = time.monotonic() + wait_s
    while not os.path.exists(plan.port):
        if time.monotonic() >= deadline:
            raise DeviceError("image", f"{plan.port} did not appear within {wait_s:.0f}s after the image was written")
        time.sleep(0.2)
    return ", ".join(plan.chips)
