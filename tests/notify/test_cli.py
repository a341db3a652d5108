"""guardian-notify check and test CONTACT: what an administrator runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.notify.cli import main
from tests.notify.conftest import circle_toml
from tests.notify.receiver import Receiver


def config(tmp_path: Path, rx: Receiver, circle: str | None = None) -> Path:
    (tmp_path / "home.toml").write_text(circle if circle is not None else circle_toml(rx))
    path = tmp_path / "notify.toml"
    path.write_text(f'[notifier]\ndata_dir = "{tmp_path / "data"}"\ncircles = ["home.toml"]\n')
    return path


def test_check_reports_each_file(tmp_path: Path, rx: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(config(tmp_path, rx))]) == 0
    out = capsys.readouterr().out
    assert "home.toml: ok (venue rosewood, 1 residents, 3 contacts, 1 staff, 5 channels)" in out


def test_check_refuses_a_bad_url_without_showing_it(
    tmp_path: Path, rx: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = circle_toml(rx).replace(rx.url("tom"), "bark://")
    assert main(["check", "--config", str(config(tmp_path, rx, bad))]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("guardian-notify: ") and "home.toml: contacts[2].channels[0]: bark:// URL is incomplete" in err
    )
    assert "Traceback" not in err


def test_test_sends_to_each_channel_and_reports(
    tmp_path: Path, rx: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, rx)
    assert main(["test", "anna", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == 2 and "anna (Anna): 2 of 2 channels ok" in out
    assert [r.path for r in rx.received] == ["anna", "anna-mail"]
    assert "this channel works" in rx.received[0].message
    assert str(rx.port) in out and "/anna" not in out  # host shown, path (a secret for some services) not
    rx.fail["anna-mail"] = 1
    assert main(["test", "anna", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "channels[1]" in out and "FAILED" in out and "500" in out
    assert main(["test", "nobody", "--config", str(cfg)]) == 1
    assert "no contact or staff member 'nobody'" in capsys.readouterr().err
