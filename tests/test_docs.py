"""The docs stay true to the tree: the README layout names every module, and every "§N"
reference to docs/protocol.md names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("firmware", "agent", "provisioning", "hil_tests")


def layout_sections(readme: str) -> dict[str, str]:
    """The README's layout block, split at its top-level entries ("agent/", "firmware/", ...)."""
    start = readme.index("\n## Layout\n")
    block = readme[start:].split("```")[1]
    sections: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"([a-z_]+)/\s", line + " ")
        if m:
            current = m.group(1)
            sections[current] = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


def modules(top: Path) -> list[Path]:
    """The modules a newcomer navigates: every .py but package markers and the rig's own tests."""
    return [
        p
        for p in sorted(top.rglob("*.py"))
        if p.name != "__init__.py" and not p.name.startswith("test_") and p.name != "conftest.py"
    ]


def unnamed(root: Path, readme: str) -> list[str]:
    """Modules the layout does not name by a path suffix that is unique within their top directory."""
    sections = layout_sections(readme)
    missing = []
    for top in TOPS:
        text = sections.get(top, "")
        files = [p.relative_to(root / top).as_posix() for p in modules(root / top)]
        for rel in files:
            parts = rel.split("/")
            suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
            # a suffix shared by two modules (apps/*/app.py) does not say which one is meant
            unique = [s for s in suffixes if sum(f == s or f.endswith("/" + s) for f in files) == 1]
            unique.append(f"{top}/{rel}")  # the full path always says which one
            if not any(re.search(rf"(?<![\w/.]){re.escape(s)}(?![\w])", text) for s in unique):
                missing.append(f"{top}/{rel}")
    return missing


def test_the_readme_layout_names_every_module() -> None:
    assert unnamed(ROOT, (ROOT / "README.md").read_text()) == []


def test_the_layout_check_catches_a_module_named_nowhere(tmp_path: Path) -> None:
    for rel in ("agent/gateway/app.py", "agent/central/app.py", "firmware/lib/frame.py", "hil_tests/tests/test_x.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    readme = "# x\n\n## Layout\n\n```\nagent/   the agent\n  app.py  two of them\nfirmware/\n  lib/frame.py\n```\n"
    assert unnamed(tmp_path, readme) == ["agent/central/app.py", "agent/gateway/app.py"]
    readme = readme.replace("  app.py  two of them", "  gateway/app.py central/app.py")
    assert unnamed(tmp_path, readme) == []


# --- "§N" references ---------------------------------------------------------------------------

# a "§" after one of these refers to that document or standard, not to docs/protocol.md
_OTHER = re.compile(r"(RFC ?\d+|MQTT \d(\.\d)*|(?<!protocol)\.md,?|FIPS[\w -]*|SP [\d-]+[A-Z]?)\s*$")


def protocol_sections(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#+ (\d+(?:\.\d+)*)\.? ", text, re.M)}


def section_references(root: Path) -> list[tuple[str, str]]:
    """(where, section) of every § reference to docs/protocol.md in code, docs and tests."""
    out = []
    paths = [*(p for top in (*TOPS, "tests", "docs", "packaging") for p in (root / top).rglob("*") if p.is_file())]
    paths.append(root / "README.md")
    for path in sorted(paths):
        if path.suffix not in (".py", ".md", ".toml", ".yaml", ".conf", ".service"):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in re.finditer(r"§ ?(\d+(?:\.\d+)*)", line):
                if _OTHER.search(line[: m.start()]):
                    continue
                out.append((f"{path.relative_to(root)}:{n}", m.group(1)))
    return out


def test_every_protocol_section_reference_exists() -> None:
    sections = protocol_sections((ROOT / "docs" / "protocol.md").read_text())
    refs = section_references(ROOT)
    assert len(refs) > 50, "the reference scan found almost nothing; is the pattern still right?"
    assert [f"{where}: §{s}" for where, s in refs if s not in sections] == []


def test_a_reference_to_a_missing_section_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "protocol.md").write_text("# P\n## 8. Command\n### 8.2 Acceptance\n")
    (tmp_path / "agent").mkdir()
    missing = "8." + "3"  # spelled in two parts, so this file's own scan does not find it
    (tmp_path / "agent" / "a.py").write_text(
        f'"""In the order of docs/protocol.md §{missing}; MQTT 5 §4.6 and RFC 9052 §4.4 are not ours."""\n'
    )
    (tmp_path / "README.md").write_text("see §8.2\n")
    sections = protocol_sections((tmp_path / "docs" / "protocol.md").read_text())
    assert sections == {"8", "8.2"}
    refs = section_references(tmp_path)
    assert refs == [("README.md:1", "8.2"), ("agent/a.py:1", "8.3")]
