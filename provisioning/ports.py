"""The serial ports of this machine, as `guardian-provision ports` lists them (the way `mpremote
devs` does, from pyserial's list_ports) and as a wrong `--port` is answered: with the ports
that do exist, closest name first.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from provisioning.errors import ProvisionError

BY_ID = "/dev/serial/by-id"


@dataclass(frozen=True, slots=True)
class Port:
    device: str
    description: str
    vid_pid: str  # "10c4:ea60", "" when not USB
    serial: str
    manufacturer: str
    by_id: str  # the stable /dev/serial/by-id link to it, if any

    def line(self) -> str:
        parts = [
            self.device,
            self.vid_pid or "-",
            self.serial or "-",
            self.manufacturer or "-",
            self.description or "-",
        ]
        return "  ".join(parts) + (f"  ({self.by_id})" if self.by_id else "")


def _links() -> dict[str, str]:
    """/dev/ttyUSB0 -> /dev/serial/by-id/usb-... (the name that survives replugging)."""
    out: dict[str, str] = {}
    try:
        names = os.listdir(BY_ID)
    except OSError:
        return out
    for name in names:
        link = os.path.join(BY_ID, name)
        out[os.path.realpath(link)] = link
    return out


def list_ports() -> list[Port]:
    """USB and other serial ports pyserial finds, with vendor, product and serial number."""
    from serial.tools import list_ports as lp

    links = _links()
    found = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        vid_pid = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else ""
        if not vid_pid and p.description in ("n/a", ""):
            continue  # a built-in UART with nothing behind it (ttyS*)
        found.append(
            Port(
                p.device,
                p.product or p.description or "",
                vid_pid,
                p.serial_number or "",
                p.manufacturer or "",
                links.get(os.path.realpath(p.device), ""),
            )
        )
    return found


def check_ports(ports: Sequence[str]) -> None:
    """Every --port exists; ProvisionError naming the missing one and the ports there are."""
    for port in ports:
        if os.path.exists(port):
            continue
        known = list_ports()
        names = [p.device for p in known] + [p.by_id for p in known if p.by_id]
        close = difflib.get_close_matches(port, names, n=3, cutoff=0.5)
        if close:
            hint = f"did you mean {' or '.join(close)}?"
        elif known:
            hint = "ports here: " + ", ".join(p.device for p in known)
        else:
            hint = "no serial port is connected (is the board plugged in, the cable a data cable?)"
        raise ProvisionError(f"flash: --port {port}: no such port; {hint} (guardian-provision ports lists them)")
