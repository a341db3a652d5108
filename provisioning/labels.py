"""Device labels: a QR code (PNG and SVG, via segno) and one text line; no secret on them.

QR payload:  GE1|<device id>|<kind>|<venue>|<zone>|<check>
Text line:   <device id>  <kind>  <venue>/<zone>  check <check>

The check code is 6 base32 characters of SHA-256 over the public identity (board unique id,
device id, kind, venue, zone): a technician compares it with the inventory export or the
gateway's records to catch a label stuck on the wrong post. It is derived from nothing secret.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segno


@dataclass(frozen=True, slots=True)
class Label:
    device: str
    kind: str
    venue: str
    zone: str
    check: str

    @property
    def text(self) -> str:
        return f"{self.device}  {self.kind}  {self.venue}/{self.zone}  check {self.check}"

    @property
    def payload(self) -> str:
        return "|".join(("GE1", self.device, self.kind, self.venue, self.zone, self.check))


def check_code(uid: str, device: str, kind: str, venue: str, zone: str) -> str:
    digest = hashlib.sha256("\x00".join(("ge-label", uid, device, kind, venue, zone)).encode()).digest()
    return base64.b32encode(digest).decode()[:6]


def make_label(uid: str, device: str, kind: str, venue: str, zone: str) -> Label:
    return Label(device, kind, venue, zone, check_code(uid, device, kind, venue, zone))


def label_for(uid: str, rec: dict[str, Any]) -> Label:
    """A device's label from its inventory record."""
    return make_label(uid, rec["id"], rec["kind"], rec["venue"], rec["zone"])


def write_label(directory: Path, label: Label) -> list[Path]:
    """<device>.png, <device>.svg and <device>.txt in `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    qr = segno.make(label.payload, error="m")
    png = directory / f"{label.device}.png"
    svg = directory / f"{label.device}.svg"
    txt = directory / f"{label.device}.txt"
    qr.save(str(png), scale=6, border=4)
    qr.save(str(svg), scale=6, border=4, title=label.device)
    txt.write_text(label.text + "\n")
    return [png, svg, txt]
