"""Device labels a person can read: the QR code beside the device id, its kind, venue and zone (by
the names people use, any script) and the check code; no secret on them. One label as SVG,
PNG and a text line; a sheet of labels for a tray of devices as PDF or SVG.

QR payload:  GE1|<device id>|<kind>|<venue id>|<zone id>|<check>    (ids: ASCII)
Text line:   <device id>  <kind>  <venue>/<zone>  check <check>      (names where given)

The check code is 6 base32 characters of SHA-256 over the public identity (board unique id,
device id, kind, venue, zone ids): a technician compares it with the inventory export or the
gateway's records to catch a label stuck on the wrong post. It is derived from nothing secret.

Layout (this module's own, in millimetres): a 62 x 29 mm label (the common continuous label
roll), the QR code (segno's module matrix, error level M) in a 25 mm square on the left, four
lines on the right: device id (bold), kind, venue / zone, check code. The SVG draws the QR as
one path and the text as text (the viewer's fonts: any script renders where a font has it);
the PNG (300 dpi) and the PDF draw the text with a font file found through fontconfig that
covers it (fc-list :charset=...; packaging/install-os-deps.sh installs DejaVu and WenQuanYi),
the PDF embedding its subset. PDF and PNG come from reportlab (a PDF library kept since 2000,
which brings Pillow for the PNG): one dependency for both, no HTML renderer or browser.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import segno

W_MM, H_MM = 62.0, 29.0  # one label
QR_MM = 25.0
PAD_MM = 2.0
DPI = 300
KIND_NAMES = {"alarm_post": "alarm post", "sensor": "venue sensor", "wristband": "wristband"}
FONTS = "DejaVu Sans, WenQuanYi Micro Hei, Noto Sans CJK SC, sans-serif"


@dataclass(frozen=True, slots=True)
class Label:
    device: str
    kind: str
    venue: str
    zone: str
    check: str
    venue_name: str = ""
    zone_name: str = ""

    @property
    def where(self) -> str:
        return f"{self.venue_name or self.venue}/{self.zone_name or self.zone}"

    @property
    def text(self) -> str:
        return f"{self.device}  {self.kind}  {self.where}  check {self.check}"

    @property
    def payload(self) -> str:
        return "|".join(("GE1", self.device, self.kind, self.venue, self.zone, self.check))

    @property
    def lines(self) -> tuple[str, str, str, str]:
        """What the label prints beside the QR code, top to bottom."""
        return (self.device, KIND_NAMES.get(self.kind, self.kind), self.where, f"check {self.check}")


def check_code(uid: str, device: str, kind: str, venue: str, zone: str) -> str:
    digest = hashlib.sha256("\x00".join(("ge-label", uid, device, kind, venue, zone)).encode()).digest()
    return base64.b32encode(digest).decode()[:6]


def make_label(
    uid: str, device: str, kind: str, venue: str, zone: str, venue_name: str = "", zone_name: str = ""
) -> Label:
    return Label(device, kind, venue, zone, check_code(uid, device, kind, venue, zone), venue_name, zone_name)


def label_for(uid: str, rec: dict[str, Any]) -> Label:
    """A device's label from its inventory record."""
    return make_label(
        uid, rec["id"], rec["kind"], rec["venue"], rec["zone"], rec.get("venue_name", ""), rec.get("zone_name", "")
    )


def _modules(label: Label) -> tuple[int, list[tuple[int, int]]]:
    """The QR code's size in modules and its dark modules (x, y), without the quiet zone."""
    qr = segno.make(label.payload, error="m")
    dark = [(x, y) for y, row in enumerate(qr.matrix_iter(border=0)) for x, v in enumerate(row) if v]
    return int(qr.symbol_size(border=0)[0]), dark


# --- fonts ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _font_file(chars: str) -> str | None:
    """A font file covering every character of `chars` (fontconfig), or None."""
    if shutil.which("fc-list") is None:
        return None
    want = " ".join(f"{ord(c):x}" for c in sorted(set(chars)) if not c.isspace())
    try:
        # fontconfig's lister, by name (found above), with a charset query
        cmd = ["fc-list", "-f", "%{file}\n", f":charset={want}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return None
    files = {f for f in out.splitlines() if f.endswith((".ttf", ".ttc", ".otf"))}
    # a plain sans-serif face first: what labels and the status page use
    styles = ("Bold", "Light", "Oblique", "Italic", "Mono", "Serif", "Condensed")
    ranked = sorted(files, key=lambda f: (sum(s in Path(f).name for s in styles), "Sans" not in Path(f).name, f))
    return ranked[0] if ranked else None


# --- one label ------------------------------------------------------------------------------


def _svg_group(label: Label, x: float, y: float) -> str:
    """One label as an SVG group at (x, y) mm."""
    n, dark = _modules(label)
    m = QR_MM / n
    path = "".join(
        f"M{x + PAD_MM + i * m:.3f} {y + (H_MM - QR_MM) / 2 + j * m:.3f}h{m:.3f}v{m:.3f}h-{m:.3f}z" for i, j in dark
    )
    tx = x + PAD_MM * 2 + QR_MM
    sizes = (4.2, 3.2, 3.2, 3.2)
    texts = []
    for k, (line, size) in enumerate(zip(label.lines, sizes, strict=True)):
        weight = ' font-weight="bold"' if k == 0 else ""
        texts.append(f'<text x="{tx:.2f}" y="{y + 7.0 + k * 5.6:.2f}" font-size="{size}"{weight}>{escape(line)}</text>')
    return (
        f'<g><rect x="{x}" y="{y}" width="{W_MM}" height="{H_MM}" fill="#fff" stroke="#bbb" stroke-width="0.1"/>'
        f'<path d="{path}" fill="#000"/>' + "".join(texts) + "</g>"
    )


def _svg(groups: Sequence[str], w: float, h: float, title: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}mm" height="{h}mm" viewBox="0 0 {w} {h}" '
        f'font-family="{FONTS}"><title>{escape(title)}</title>' + "".join(groups) + "</svg>\n"
    )


def _png(label: Label, path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    px = DPI / 25.4
    img = Image.new("L", (round(W_MM * px), round(H_MM * px)), 255)
    draw = ImageDraw.Draw(img)
    n, dark = _modules(label)
    m = QR_MM * px / n
    top = (H_MM - QR_MM) / 2 * px
    for i, j in dark:
        x0, y0 = PAD_MM * px + i * m, top + j * m
        draw.rectangle((round(x0), round(y0), round(x0 + m) - 1, round(y0 + m) - 1), fill=0)
    tx = (PAD_MM * 2 + QR_MM) * px
    for k, (line, size) in enumerate(zip(label.lines, (4.2, 3.2, 3.2, 3.2), strict=True)):
        file = _font_file(line)
        size_px = round(size * px)
        font = ImageFont.truetype(file, size_px) if file else ImageFont.load_default(size_px)
        draw.text((tx, (7.0 + k * 5.6) * px), line, fill=0, font=font, anchor="ls")
    img.save(path, dpi=(DPI, DPI))


def write_label(directory: Path, label: Label) -> list[Path]:
    """<device>.png, <device>.svg and <device>.txt in `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / f"{label.device}.png"
    svg = directory / f"{label.device}.svg"
    txt = directory / f"{label.device}.txt"
    svg.write_text(_svg([_svg_group(label, 0, 0)], W_MM, H_MM, label.device), encoding="utf-8")
    _png(label, png)
    txt.write_text(label.text + "\n", encoding="utf-8")
    return [png, svg, txt]


# --- a sheet for a tray ---------------------------------------------------------------------

A4 = (210.0, 297.0)
GAP_MM = 3.0


def _places(count: int) -> Iterator[tuple[int, float, float]]:
    """(page, x, y) mm of each label on A4 sheets: 3 columns, as many rows as fit."""
    cols = int((A4[0] - 2 * 10 + GAP_MM) // (W_MM + GAP_MM))
    rows = int((A4[1] - 2 * 10 + GAP_MM) // (H_MM + GAP_MM))
    x0 = (A4[0] - cols * W_MM - (cols - 1) * GAP_MM) / 2
    y0 = (A4[1] - rows * H_MM - (rows - 1) * GAP_MM) / 2
    for i in range(count):
        page, slot = divmod(i, cols * rows)
        r, c = divmod(slot, cols)
        yield page, x0 + c * (W_MM + GAP_MM), y0 + r * (H_MM + GAP_MM)


def write_sheet(path: Path, labels: Iterable[Label]) -> int:
    """Labels on A4 pages, to cut or to print on a sheet of labels: PDF or SVG (one page per
    file: <name>-2.svg, ...); returns the number of pages."""
    items = list(labels)
    places = list(_places(len(items)))
    pages = (places[-1][0] + 1) if places else 0
    if path.suffix.lower() == ".svg":
        for page in range(pages):
            groups = [_svg_group(lb, x, y) for lb, (p, x, y) in zip(items, places, strict=True) if p == page]
            out = path if page == 0 else path.with_name(f"{path.stem}-{page + 1}{path.suffix}")
            out.write_text(_svg(groups, *A4, f"labels {page + 1}/{pages}"), encoding="utf-8")
        return pages
    _pdf(path, items, places)
    return pages


def _pdf_font(canvas: Any, text: str, size: float) -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    file = _font_file(text)
    if file is None:
        canvas.setFont("Helvetica", size)
        return
    name = Path(file).stem
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(name, file, subfontIndex=0))
    canvas.setFont(name, size)


def _pdf(path: Path, items: Sequence[Label], places: Sequence[tuple[int, float, float]]) -> None:
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    c = Canvas(str(path), pagesize=(A4[0] * mm, A4[1] * mm), invariant=True)
    c.setTitle("Guardian Edge device labels")
    page = 0
    for label, (p, x, y) in zip(items, places, strict=True):
        if p != page:
            c.showPage()
            page = p
        top = A4[1] - y  # reportlab's origin is the bottom left
        c.setStrokeGray(0.75)
        c.setLineWidth(0.1 * mm)
        c.rect(x * mm, (top - H_MM) * mm, W_MM * mm, H_MM * mm)
        n, dark = _modules(label)
        m = QR_MM / n
        qy = top - (H_MM - QR_MM) / 2
        for i, j in dark:
            c.rect((x + PAD_MM + i * m) * mm, (qy - (j + 1) * m) * mm, m * mm, m * mm, stroke=0, fill=1)
        for k, (line, size) in enumerate(zip(label.lines, (4.2, 3.2, 3.2, 3.2), strict=True)):
            _pdf_font(c, line, size * mm)
            c.drawString((x + PAD_MM * 2 + QR_MM) * mm, (top - 7.0 - k * 5.6) * mm, line)
    c.save()
