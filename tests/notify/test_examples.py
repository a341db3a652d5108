"""What packaging/ ships for guardian-notify: the example config and care circle validate, the
systemd unit parses cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.notify.circle import load_circle
from agent.notify.config import load_config
from hil_tests.sim.tools import REPO_ROOT

PACKAGING = REPO_ROOT / "packaging"


def test_example_config_and_circle_validate(tmp_path: Path) -> None:
    cfg = load_config(PACKAGING / "config" / "notify.toml")
    assert cfg.ack_base_url == "https://notify.example.org" and cfg.settings.fallback_after_s == 20
    assert [p.name for p in cfg.circles] == ["rosewood-house.toml"]
    circle = load_circle(cfg.circles[0])
    assert circle.residents["WB-0001"].rounds == (("li-wei",), ("li-na", "sam"))
    services = {c.service for contact in circle.contacts.values() for c in contact.channels}
    assert {"DingTalk", "Bark", "WeCom Bot", "ntfy", "E-Mail", "Feishu"} <= services, services
    assert "0123456789abcdef" not in repr(circle) and all("PASSWORD" not in str(c) for c in circle.contacts.values())


def test_systemd_unit_has_no_warnings(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    unit = (PACKAGING / "systemd" / "guardian-notify.service").read_text()
    unit = unit.replace("/opt/guardian-edge/.venv/bin/guardian-notify", "/bin/true")
    path = tmp_path / "guardian-notify.service"
    path.write_text(unit)
    proc = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and out == "", out
