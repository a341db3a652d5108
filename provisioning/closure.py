"""The modules one device app needs: the import closure of its code in the firmware tree.

A bundle carries only what the app imports, so its .mpy bytes and the heap spent loading
them are the app's own (docs/provisioning.md, "Bundle"). The closure starts from the files a
board runs by name (boot.py, main.py, selftest.py), the app's package (apps/<kind>/, every
file: selftest.py loads its `check` module by name) and the hardware layer of the board's
port (hal/__init__.py, hal/<port>.py), and follows every `import` and `from ... import`
anywhere in those files (inside functions and try/except ImportError too: an optional
module that exists in the tree is carried), resolved as the board resolves them: sys.path is
the flash root, then lib/. So a real board's bundle holds its port module and what that
imports (hal/machineboard.py), the virtual board's hal/unix.py.

Some modules are one variant of several, and only the variant the device runs is carried:
apps.<kind> (main.py names every app, config.json picks one), hal.<port> (hal/__init__.py
names every port's module, sys.platform picks one) and hal.<part>, the driver of an optional
part (hal/machineboard.py imports hal/lis3dh.py when the board file's "accel" names the
part lis3dh: a board file without it gets no driver), and the link to the gateway (config.json's
"transport" picks one: lib/reporter.py imports lib/uartlink.py, which brings the serial
framing, only for "uart", and lib/mqttlink.py, which brings the MQTT client lib/mqtt.py and
lib/linktls.py, only for "mqtt", which on a Wi-Fi board rides on hal/wifi.py; both links are
carried when no transport is given). A module the tree does not hold (a MicroPython built-in such as `machine` or
`cryptolib`) is the firmware image's, not the bundle's. A dynamic import (`__import__(name)`)
is not followed; nothing outside the app's package and selftest.py uses one.

A board part that only some apps use has its code loaded by the Board method that gives it
out, on first call (hal/machineboard.py: radio() imports hal/ble.py, sensor() and battery()
hal/analog.py, rtc() hal/civil.py, accel() hal/accel.py; the virtual board's radio() and
uart() likewise). Such an import, inside a public method of a class in hal/, is followed only
when some other file of the closure names the method (an attribute `board.radio`, or a
string for getattr/hasattr): the alarm post, which never asks for a radio, a clock or an ADC,
carries none of their code, and a method the app starts to use brings its module along.

Written here rather than taken from a library: modulefinder and importlib resolve against the
running CPython's sys.path and execute nothing of MicroPython's, while this has to resolve
against a board's path and to know the two variant packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ProvisionError

SEARCH = ("", "lib")  # a board's sys.path: the flash root, then /lib
# transport -> the modules its link loads (and with them what they import): the MQTT link,
# and the Wi-Fi it reaches the broker over on a board that has it; the serial link
TRANSPORT_MODULES = {"mqtt": ("mqttlink", "hal.wifi"), "uart": ("uartlink",)}
ENTRY_FILES = ("boot.py", "main.py", "selftest.py")
VARIANT_PACKAGES = ("apps", "hal")
_BY_NAME = ("getattr", "hasattr")  # calls whose second argument names an attribute


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


@dataclass(frozen=True, slots=True)
class _Scan:
    """What one firmware file imports, and what it names."""

    imports: set[str]  # module names imported as the file runs (with a `from X import y`'s X.y)
    on_use: dict[str, set[str]]  # method -> modules a hal class's public method imports when called
    names: set[str]  # attribute names the file uses, written out or as getattr/hasattr's string


def _import_names(node: ast.Import | ast.ImportFrom, package: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        parent = package.split(".") if package else []
        parent = parent[: len(parent) - (node.level - 1)] if node.level > 1 else parent
        base = ".".join([*parent, base] if base else parent)
    names = {base} if base else set()
    names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return names


def _on_use(tree: ast.Module) -> dict[ast.AST, str]:
    """Import node -> the public method of a class it is in (for a hal file)."""
    out: dict[ast.AST, str] = {}
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef):
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_"):
                    out.update((n, fn.name) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return out


def _attribute_named(node: ast.AST) -> str | None:
    """The attribute a node names: `x.name`, or getattr(x, "name") / hasattr(x, "name")."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BY_NAME:
        arg = node.args[1] if len(node.args) > 1 else None
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def _scan(path: Path, package: str) -> _Scan:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ProvisionError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from exc
    deferred = _on_use(tree) if package == "hal" or package.startswith("hal.") else {}
    scan = _Scan(set(), {}, set())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found = _import_names(node, package)
            method = deferred.get(node)
            if method is None:
                scan.imports.update(found)
            else:
                scan.on_use.setdefault(method, set()).update(found)
        elif (name := _attribute_named(node)) is not None:
            scan.names.add(name)
    return scan


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _excluded(name: str, kind: str, hal_variants: set[str], hal_chosen: set[str], links: set[str]) -> bool:
    parts = name.split(".")
    if any(name == m or name.startswith(m + ".") for m in links):
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
    links = {m for t, ms in TRANSPORT_MODULES.items() if transport is not None and t != transport for m in ms}
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
    seen: dict[Path, _Scan] = {}

    def follow(names: set[str]) -> list[Path]:
        # the files these module names load, not carried yet
        out = []
        for name in sorted(names):
            if not _excluded(name, kind, variants, chosen, links):
                out += [f for p in _with_parents(name) if (f := module_file(root, p)) is not None and f not in seen]
        return out

    while todo:
        while todo:
            path = todo.pop()
            if path not in seen:
                seen[path] = scan = _scan(path, _package_of(root, path))
                todo += follow(scan.imports)
        # a hal method's on-use imports, for the methods another file of the closure names
        for path, scan in list(seen.items()):
            named = set().union(*(s.names for p, s in seen.items() if p != path))
            todo += follow(set().union(*(m for method, m in scan.on_use.items() if method in named)))
    return sorted(seen)
