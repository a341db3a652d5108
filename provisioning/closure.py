"""The modules one device app needs: the import closure of its code in the firmware tree.

A bundle carries only what the app imports, so its .mpy bytes and the heap spent loading
them are the app's own (docs/provisioning.md, "Bundle"). The closure starts from the files a
board runs by name (boot.py, main.py, selftest.py), the app's package (apps/<kind>/, every
file: selftest.py loads its `check` module by name) and the hardware layer of the board's
port (hal/__init__.py, hal/<port>.py), and follows every `import` and `from ... import`
anywhere in those files (inside functions and try/except ImportError too: an optional
module that exists in the tree is carried), resolved as the board resolves them: sys.path is
the flash root, then lib/. So a real board's bundle holds its port module and what that
imports (hal/machineboard.py, hal/boardspec.py, hal/wake.py), the virtual board's hal/unix.py.

Some modules are one variant of several, and only the variant the device runs is carried:
apps.<kind> (main.py names every app, config.json picks one), hal.<port> (hal/__init__.py
names every port's module, sys.platform picks one) and hal.<part>, the driver of an optional
part (hal/machineboard.py imports hal/lis3dh.py when the board file's "accel" names the
part lis3dh: a board file without it gets no driver), and the link to the gateway (config.json's
"transport" picks one: lib/reporter.py imports lib/uartlink.py, which brings the serial
framing, only for "uart", and lib/link.py imports the MQTT client lib/mqtt.py only for
"mqtt"; both links are carried when no transport is given). A module the tree does not hold (a
MicroPython built-in such as `machine` or `cryptolib`) is the firmware image's, not the
bundle's. A dynamic import (`__import__(name)`) is not followed; nothing outside the app's
package and selftest.py uses one.

Written here rather than taken from a library: modulefinder and importlib resolve against the
running CPython's sys.path and execute nothing of MicroPython's, while this has to resolve
against a board's path and to know the two variant packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from provisioning.errors import ProvisionError

SEARCH = ("", "lib")  # a board's sys.path: the flash root, then /lib
# transport -> the module its link loads (and with it what that module imports)
TRANSPORT_MODULES = {"mqtt": "mqtt", "uart": "uartlink"}
ENTRY_FILES = ("boot.py", "main.py", "selftest.py")
VARIANT_PACKAGES = ("apps", "hal")


def module_file(root: Path, name: str) -> Path | None:
    """The file `import name` loads on a board with this firmware tree, or None."""
    parts = name.split(".")
    for base in SEARCH:
        d = root / base if base else root
        stem = d.joinpath(*parts)
        for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _imported_names(path: Path, package: str) -> set[str]:
    """Every module name the file imports, with the submodules a `from X import y` may name."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ProvisionError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from exc
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".") if package else []
                parent = parent[: len(parent) - (node.level - 1)] if node.level > 1 else parent
                base = ".".join([*parent, base] if base else parent)
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _excluded(name: str, kind: str, hal_variants: set[str], hal_chosen: set[str], links: set[str]) -> bool:
    parts = name.split(".")
    if parts[0] in links:
        return True
    if len(parts) < 2:
        return False
    if parts[0] == "apps":
        return parts[1] != kind
    if parts[0] == "hal":
        return parts[1] in hal_variants and parts[1] not in hal_chosen
    return False


def _package_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    parts = list(rel.parts[:-1])
    if parts and parts[0] == "lib":
        parts = parts[1:]
    return ".".join(parts)


def app_closure(
    root: Path,
    kind: str,
    port: str,
    ports: Iterable[str],
    parts: Iterable[str] = (),
    all_parts: Iterable[str] = (),
    transport: str | None = None,
) -> list[Path]:
    """The firmware files (sorted) that a board of `kind` on `port` with these `parts` runs.

    `ports` and `all_parts` name every hal variant the tree may hold (hal/<port>.py, the part
    drivers hal/<part>.py); of those only `port` and `parts` are carried. `transport` ("mqtt"
    or "uart") leaves out the other link's modules; None carries both.

    Raises:
        ProvisionError: the tree lacks the app, the port's hardware layer or an entry file,
            or a file does not parse.
    """
    root = Path(root)
    if transport is not None and transport not in TRANSPORT_MODULES:
        raise ProvisionError(f"unknown transport {transport!r} (known: {', '.join(TRANSPORT_MODULES)})")
    links = {m for t, m in TRANSPORT_MODULES.items() if transport is not None and t != transport}
    chosen = {port, *parts}
    variants = set(ports) | set(all_parts) | chosen
    app_dir = root / "apps" / kind
    if not app_dir.is_dir():
        raise ProvisionError(f"firmware tree {root} has no app for {kind} (apps/{kind}/)")
    hal = root / "hal" / f"{port}.py"
    if not hal.is_file():
        raise ProvisionError(f"firmware tree {root} has no hardware layer for port {port} (hal/{port}.py)")
    for part in sorted(set(parts)):
        if not (root / "hal" / f"{part}.py").is_file():
            raise ProvisionError(f"firmware tree {root} has no driver for the part {part} (hal/{part}.py)")
    todo: list[Path] = [root / name for name in ENTRY_FILES]
    todo += [root / "apps" / "__init__.py", root / "hal" / "__init__.py", hal]
    todo += [root / "hal" / f"{part}.py" for part in sorted(set(parts))]
    todo += sorted(app_dir.glob("*.py"))
    missing = [str(p) for p in todo if not p.is_file()]
    if missing:
        raise ProvisionError(f"firmware tree {root} is incomplete: missing {', '.join(missing)}")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(_imported_names(path, _package_of(root, path))):
            if _excluded(name, kind, variants, chosen, links):
                continue
            for part in _with_parents(name):
                found = module_file(root, part)
                if found is not None and found not in seen:
                    todo.append(found)
    return sorted(seen)
