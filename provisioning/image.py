"""Writing a base MicroPython image with esptool's Python API: erase, write, verify, reset.

`plan_image()` checks the image file and builds the arguments (done before any port is
touched, so a wrong path fails at once); `write_image()` connects to the chip, picks the
image offset for the chip family (the ESP32's second-stage bootloader sits at 0x1000, the
newer families' at 0x0, as in MicroPython's own flashing instructions), then erases,
writes and verifies in one step and hard-resets the chip into the new image. A port where
no chip answers gives DeviceError("image", ...) naming the port.
"""

from __future__ import annotations

import hashlib
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


def plan_image(port: str, image: Path, baud: int = DEFAULT_BAUD) -> ImagePlan:
    """Check the image file and build the plan; ProvisionError when the file is unusable."""
    image = Path(image)
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"--image {image}: {exc.strerror}") from exc
    if not 0 < len(data) <= MAX_IMAGE:
        raise ProvisionError(f"--image {image}: {len(data)} bytes; expected 1 byte to {MAX_IMAGE >> 20} MiB")
    if data[0] != 0xE9:
        raise ProvisionError(f"--image {image}: not an ESP firmware image (first byte 0x{data[0]:02x}, expected 0xe9)")
    return ImagePlan(port, image, hashlib.sha256(data).hexdigest(), len(data), baud)


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
