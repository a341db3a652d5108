"""Who may import whom (docs/architecture.md), checked on every module's imports with ast.

Every import counts: at the top, inside a function (the CLIs import lazily) and under
TYPE_CHECKING. The rule:

    agent.shared     nothing of the project but itself
    agent.notify     agent.shared (the notifier's core: central runs it, the gateway's fallback too)
    agent.notify.cli all of agent (guardian-notify: central's notifier service)
    agent.gateway    agent.shared, agent.notify
    agent.central    agent.shared, agent.notify (never the gateway)
    agent.cli        all of agent (it is the gateway's and central's command line)
    provisioning     agent.shared, agent.central (the enroll server and the command sender)
    hil_tests        anything but tests (the rig drives every part)
    firmware         none of the CPython packages (MicroPython cannot import them)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("agent", "provisioning", "hil_tests", "tests")

# (package prefix, what it may import of the project); the longest matching prefix applies
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("agent.shared", ("agent.shared",)),
    ("agent.notify.cli", ("agent",)),
    ("agent.notify", ("agent.notify", "agent.shared")),
    ("agent.gateway", ("agent.gateway", "agent.shared", "agent.notify")),
    ("agent.central", ("agent.central", "agent.shared", "agent.notify")),
    ("agent", ("agent",)),
    ("provisioning", ("provisioning", "agent.shared", "agent.central")),
    ("hil_tests", ("hil_tests", "agent", "provisioning")),
    ("firmware", ()),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from agent import cose` imports the module agent.cose
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every import that breaks RULES, as `file:line: module imports target`."""
    out = []
    for top in ("agent", "provisioning", "hil_tests", "firmware"):
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(path, root)
            allowed = next(a for prefix, a in RULES if _under(module, prefix))
            for line, target in imports(path, module):
                if not any(_under(target, p) for p in PROJECT):
                    continue  # the standard library, a dependency, or a firmware module by its own name
                if not any(_under(target, a) for a in allowed):
                    out.append(f"{path.relative_to(root)}:{line}: {module} imports {target}")
    return sorted(set(out))


def test_the_tree_keeps_the_import_rule() -> None:
    assert violations(ROOT) == []


def test_the_checker_finds_each_kind_of_violation(tmp_path: Path) -> None:
    files = {
        "agent/shared/protocol.py": "from agent.gateway import pipeline\n",
        "agent/gateway/pipeline.py": "def f():\n    from agent.central.keys import x\n",
        "agent/central/batch_verifier.py": "from ..gateway import signer\n",
        "agent/central/keys.py": "from agent.shared import files\nfrom . import batch_verifier\n",
        "provisioning/cli.py": "import agent.gateway.config\nfrom agent.central import keys\n",
        "hil_tests/runner.py": "from tests import oracle\nfrom agent.gateway import app\n",
        "firmware/lib/frame.py": "import cbor\nfrom agent.shared import protocol\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "agent/central/batch_verifier.py:1: agent.central.batch_verifier imports agent.gateway",
        "agent/central/batch_verifier.py:1: agent.central.batch_verifier imports agent.gateway.signer",
        "agent/gateway/pipeline.py:2: agent.gateway.pipeline imports agent.central.keys",
        "agent/gateway/pipeline.py:2: agent.gateway.pipeline imports agent.central.keys.x",
        "agent/shared/protocol.py:1: agent.shared.protocol imports agent.gateway",
        "agent/shared/protocol.py:1: agent.shared.protocol imports agent.gateway.pipeline",
        "firmware/lib/frame.py:2: firmware.lib.frame imports agent.shared",
        "firmware/lib/frame.py:2: firmware.lib.frame imports agent.shared.protocol",
        "hil_tests/runner.py:1: hil_tests.runner imports tests",
        "hil_tests/runner.py:1: hil_tests.runner imports tests.oracle",
        "provisioning/cli.py:1: provisioning.cli imports agent.gateway.config",
    ]
