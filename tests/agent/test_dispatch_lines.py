"""What a dispatcher reads from `guardian-agent verify`: readable lines built from the verifier's
records (types by name, venue and zone, the venue's local time, latency, the event reference),
device lists for the zone names, and the event reference `command ack` takes."""

from __future__ import annotations

import json
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from agent.central.batch_verifier import BatchVerifier
from agent.central.command_sender import parse_ref
from agent.central.dispatch_lines import DeviceInfo, Lines, load_devices, parse_timezones
from agent.cli import main
from agent.shared.errors import CommandError, ConfigError
from agent.shared.registry import Device, write_registry
from tests.agent.test_verifier import KEY, batches

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
DEVICES = {
    "AP-1": DeviceInfo("alarm_post", "rosewood", "大厅"),
    "WB-1": DeviceInfo("wristband", "rosewood", "room 4"),
}
# 2023-11-14 22:13:20 UTC = 2023-11-15 06:13:20 in Shanghai
T = 1_700_000_000_000


def record(device: str, typ: int, data: dict[str, Any], gateway: str = "GW-1", **extra: Any) -> dict[str, Any]:
    from agent.shared.protocol import priority_of, type_name

    return {
        "kind": "event",
        "gateway": gateway,
        "venue": "rosewood",
        "ref": f"{device}/3/17",
        "device": device,
        "boot": 3,
        "seq": 17,
        "type": typ,
        "type_name": type_name(typ),
        "priority": priority_of(typ),
        "received_ms": T,
        "gateway_to_central_ms": 12,
        "data": data,
        **extra,
    }


def test_an_alarm_reads_with_its_type_zone_local_time_latency_and_reference() -> None:
    line = Lines(DEVICES, SHANGHAI)(record("AP-1", 1, {}))
    assert line is not None
    assert line.startswith("2023-11-15 06:13:20 CST  ALARM")
    for part in ("P0", "rosewood / 大厅", "AP-1/3/17", "via GW-1", "12 ms"):
        assert part in line, (part, line)
    assert "{" not in line, "no raw data maps"


def test_each_venue_can_have_its_own_time_zone() -> None:
    _, per_venue = parse_timezones(["rosewood=Europe/London"])
    line = Lines(DEVICES, SHANGHAI, per_venue)(record("AP-1", 1, {}))
    assert line is not None and line.startswith("2023-11-14 22:13:20 GMT")


def test_zones_come_from_the_band_alert_or_the_named_device() -> None:
    lines = Lines(DEVICES, SHANGHAI)
    sos = lines(record("WB-1", 3, {"1": "Resident 4", "2": "garden", "3": {}}))
    assert sos is not None and "rosewood / garden" in sos and "Resident 4" in sos
    offline = lines(record("GW-1", 74, {"1": "AP-1", "2": 95_000, "3": "heartbeat", "4": 60_000}))
    assert (
        offline is not None
        and "rosewood / 大厅" in offline
        and "device AP-1 in 大厅, silent 95 s (heartbeat)" in offline
    )
    smoke = lines(record("AP-1", 7, {"1": 0, "2": 180, "3": "kitchen"}))
    assert smoke is not None and "channel kitchen, reading 180" in smoke
    unknown = lines(record("AP-9", 1, {}))
    assert unknown is not None and "rosewood / -" in unknown, "an unlisted device: no zone, not a guess"


def test_telemetry_only_when_asked_and_problems_stand_out() -> None:
    heartbeat = record("AP-1", 128, {"1": 5, "2": 0})
    assert Lines(DEVICES)(heartbeat) is None
    assert Lines(DEVICES, telemetry=True)(heartbeat) is not None
    gap = Lines(DEVICES)({"kind": "gap", "gateway": "GW-1", "epoch": 1, "missing": [5, 6]})
    assert gap == "!! GAP: gateway GW-1, epoch 1, missing 5, 6"
    joined = Lines(DEVICES)({"kind": "joined", "gateway": "GW-1", "epoch": 1, "seq": 4})
    assert joined is not None and joined.startswith("-- joined")
    assert Lines(DEVICES)({"kind": "duplicate_batch", "gateway": "GW-1", "epoch": 1, "seq": 2}) is None


def test_verifier_records_read_as_lines_end_to_end() -> None:
    v = BatchVerifier({b"GW-1": KEY.public_key()}, clock=lambda: T / 1000 + 1)
    b = batches(1)[0]
    lines = [
        Lines({"AP-1": DeviceInfo("alarm_post", "v", "hall")}, SHANGHAI)(r)
        for r in v.feed("venues/v/gateways/GW-1/batches", b.blob)
    ]
    assert all(line is not None and "v / hall" in line and "AP-1/1/" in line for line in lines), lines


def test_device_lists_from_provisioning_exports_and_registries(tmp_path: Path) -> None:
    export = [
        {"id": "AP-1", "kind": "alarm_post", "venue": "rosewood", "zone": "大厅", "state": "provisioned", "fw": "1.2"}
    ]
    (tmp_path / "devices.json").write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")
    assert load_devices(tmp_path / "devices.json") == {"AP-1": DeviceInfo("alarm_post", "rosewood", "大厅")}
    (tmp_path / "devices.csv").write_text("id,kind,uid,venue,zone,state\nAP-2,sensor,u1,rosewood,kitchen,provisioned\n")
    assert load_devices(tmp_path / "devices.csv") == {"AP-2": DeviceInfo("sensor", "rosewood", "kitchen")}
    # the zone's id stays ASCII; the name people read comes with it (guardian-provision export)
    named = "id,kind,uid,venue,zone,zone_name\nAP-3,alarm_post,u3,rosewood,lobby,前台\n"
    (tmp_path / "named.csv").write_text(named, encoding="utf-8")
    assert load_devices(tmp_path / "named.csv") == {"AP-3": DeviceInfo("alarm_post", "rosewood", "前台")}
    write_registry(tmp_path / "devices.toml", [Device("WB-1", "wristband", bytes(32), "rosewood", "room 4")])
    assert load_devices(tmp_path / "devices.toml") == {"WB-1": DeviceInfo("wristband", "rosewood", "room 4")}
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "AP-1", "kind": "alarm_post"}]))
    with pytest.raises(ConfigError, match=r"bad.json: device 1: id, kind, venue and zone"):
        load_devices(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text('[{"id": "AP-1"')
    with pytest.raises(ConfigError, match=r"cut\.json: cannot read the device list"):
        load_devices(tmp_path / "cut.json")
    with pytest.raises(ConfigError, match="not an IANA time zone"):
        parse_timezones(["Mars/Olympus"])


def test_the_event_reference_parses_and_bad_ones_say_what_is_expected() -> None:
    assert parse_ref("AP-0001/3/17") == ("AP-0001", 3, 17)
    assert parse_ref("WB-0001/1700000000/5") == ("WB-0001", 1700000000, 5)
    for bad in (
        "AP-0001/3",
        "AP-0001/0/1",
        "AP 1/3/17",
        "AP-0001/3/17/1",
        "AP-0001/x/17",
        "AP-0001/3/4294967296",
        "AP-0001/3/\u0661\u0667",  # Arabic-Indic digits: str.isdigit() says yes, the wire says no
    ):
        with pytest.raises(CommandError, match="expected DEVICE/BOOT/SEQ"):
            parse_ref(bad)


def test_ack_takes_the_reference_or_the_old_options_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "command",
        "--broker",
        "127.0.0.1:1",
        "--central-key",
        str(tmp_path / "none.key"),
        "--gateway",
        "GW-1",
        "--venue",
        "v",
    ]
    assert main([*base, "ack", "AP-1/3/17", "--device", "AP-1"]) == 1
    assert "not both" in capsys.readouterr().err
    assert main([*base, "ack", "--device", "AP-1", "--boot", "3"]) == 1
    assert "e.g. AP-0001/3/17" in capsys.readouterr().err
    assert main([*base, "ack", "AP-1/three/17"]) == 1
    assert "expected DEVICE/BOOT/SEQ" in capsys.readouterr().err


def test_the_event_kind_used_here_is_a_real_verifier_record() -> None:
    # the records above are shaped like feed()'s: every key they use is one feed() writes
    v = BatchVerifier({b"GW-1": KEY.public_key()})
    real = v.feed("venues/rosewood/gateways/GW-1/batches", batches(1)[0].blob)[0]
    assert set(record("AP-1", 1, {})) <= set(real)
