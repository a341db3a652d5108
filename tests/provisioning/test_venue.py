"""`guardian-provision venue check|build` (provisioning/venue.py): one venue description becomes
the gateway's venue file and the virtual air's. A mistake is one line naming the file and the
line (and the key, the resident or the band), and a refused `venue build` writes nothing: the
gateway keeps the file it had. The practice venue's run (test_technician.py) is the way there
with a flashed band; here the refusals, on a station whose inventory is written directly.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from agent.gateway.wristbands import venue as gateway_venue
from hil_tests.sim.air import parse_venue
from provisioning.workspace import Workspace
from tests.provisioning.conftest import PASSPHRASE, assert_user_error, provision

PROG = "guardian-provision"

# line numbers matter: the messages below name them
DESCRIPTION = """\
venue: rosewood-house
name: Rosewood House
timezone: Asia/Shanghai
zones:
  - {id: lobby, name: 大厅, rect: [0, 0, 10, 8]}
  - {id: front-door, name: 前门, kind: exit, rect: [10, 0, 12, 3]}
scanners:
  - {id: RN1, zone: lobby, at: [5, 4]}
  - {id: RN2, zone: front-door, at: [11, 1]}
doors:
  - {id: front, zone: front-door, sensor: VS-0007, channel: front-door, approach: [RN1]}
residents:
  - {reference: "Resident 4 (room 4)", band: WB-00AA, allowed_zones: [lobby], quiet_hours: "22:00-07:00"}
  - {reference: "Resident 7", band: WB-00BB}
"""
BEFORE = "# the gateway's venue file of an earlier build\n"


def _describe(tmp_path: Path, text: str, **lines: str) -> Path:
    """The description with lines replaced (`l5="..."` is line 5; an empty string drops it)."""
    rows = text.splitlines()
    for key, row in lines.items():
        rows[int(key[1:]) - 1] = row
    path = tmp_path / "venue.yaml"
    path.write_text("\n".join(r for r in rows if r) + "\n", encoding="utf-8")
    return path


def _build(home: Path, source: Path, out: Path, air: Path | None = None) -> subprocess.CompletedProcess[str]:
    return provision(home, "venue", "build", str(source), "--out", str(out), *(["--air", str(air)] if air else []))


def _band(uid: str, resident: str, venue: str, state: str = "provisioned") -> dict[str, object]:
    """A band's inventory record as `flash --kind wristband --resident` leaves it."""
    return {
        "id": f"WB-{uid.upper()}", "uid": uid, "kind": "wristband", "venue": venue, "zone": "lobby",
        "key": bytes(32).hex(), "state": state, "steps": [], "resident": resident,
    }  # fmt: skip


def _station(home: Path, *bands: dict[str, object]) -> None:
    with Workspace(home, create=True, passphrase=PASSPHRASE) as ws:
        for rec in bands:
            ws.inventory.data["devices"][str(rec["uid"])] = rec
            ws.commit("flash.register", str(rec["id"]), uid=rec["uid"])


def test_the_description_becomes_the_gateways_file_and_the_airs(tmp_path: Path) -> None:
    source = _describe(tmp_path, DESCRIPTION)
    checked = provision(tmp_path / "home", "venue", "check", str(source))
    assert checked.returncode == 0, checked.stderr
    assert (
        f"{source}: venue rosewood-house (Rosewood House): 2 zones, 2 scanners, 1 doors, 2 residents" in checked.stdout
    )
    out, air = tmp_path / "venue.toml", tmp_path / "air.yaml"
    built = _build(tmp_path / "home", source, out, air)
    assert built.returncode == 0, built.stderr
    loaded = gateway_venue.load(out)
    assert loaded.residents["WB-00AA"].reference == "Resident 4 (room 4)"
    assert loaded.residents["WB-00AA"].allowed_zones == frozenset({"lobby"})
    assert loaded.doors["front"].sensor == "VS-0007" and loaded.zones["lobby"].name == "大厅"
    # the gateway's parser warns about an exit that one scanner watches (docs/wristband-alerts.md)
    assert len(loaded.warnings) == 1 and "zones[1] (front-door): exit zone with one scanner" in loaded.warnings[0]
    sim = parse_venue(yaml.safe_load(air.read_text(encoding="utf-8")))
    assert sim.zone("front-door").exit and sim.zone_at(5, 4) == sim.zone("lobby")
    # a second scanner on the exit: no warning
    source = _describe(
        tmp_path, DESCRIPTION, l9="  - {id: RN2, zone: front-door, at: [11, 1]}\n  - {id: RN3, zone: front-door}"
    )
    assert _build(tmp_path / "home", source, out).returncode == 0
    assert gateway_venue.load(out).warnings == ()


# (id, lines replaced, the message after the file's directory)
MISTAKES = [
    ("not-yaml", {"l8": "  - {id: RN1, zone: lobby, at: [5, 4]"}, "venue.yaml:9: not valid YAML: expected ',' or '}'"),
    (
        "unknown-key",
        {"l5": "  - {id: lobby, colour: red}"},
        "venue.yaml:5: zones[0].colour: unknown key (known here: id, name,",
    ),
    ("key-twice", {"l3": "name: Rosewood"}, "venue.yaml:3: 'name' given twice"),
    ("no-zones", {"l4": "", "l5": "", "l6": ""}, "venue.yaml:1: missing 'zones'"),
    ("zone-twice", {"l6": "  - {id: lobby}"}, "venue.yaml:6: zones[1].id: zone 'lobby' is described twice"),
    (
        "no-such-zone",
        {"l8": "  - {id: RN1, zone: kitchen}"},
        "venue.yaml:8: scanners[0].zone: no zone 'kitchen' (zones: lobby, front-door)",
    ),
    (
        "door-not-on-exit",
        {"l11": "  - {id: front, zone: lobby}"},
        "venue.yaml:11: doors[0].zone: zone 'lobby' is not an exit zone",
    ),
    (
        "door-twice",
        {"l11": "  - {id: front, zone: front-door}\n  - {id: front, zone: front-door}"},
        "venue.yaml:12: doors[1].id: door 'front' is described twice",
    ),
    (
        "channel-not-a-name",
        {"l11": "  - {id: front, zone: front-door, sensor: VS-0007, channel: [1, 2]}"},
        "venue.yaml:11: doors[0].channel: expected the sensor's channel name (1-32 characters), got [1, 2]",
    ),
    (
        "contact-on-two-doors",
        {
            "l11": "  - {id: front, zone: front-door, sensor: VS-7, channel: c}\n"
            "  - {id: back, zone: front-door, sensor: VS-7, channel: c}"
        },
        "venue.yaml:12: doors[1].channel: VS-7 'c' is already the contact of door 'front'",
    ),
    (
        "allowed-zones-not-ids",
        {"l14": '  - {reference: "Resident 7", allowed_zones: [{lobby: 1}]}'},
        "venue.yaml:14: residents[1].allowed_zones: expected a list of zone ids",
    ),
    (
        "quiet-hours",
        {"l14": '  - {reference: "Resident 7", quiet_hours: 7}'},
        'venue.yaml:14: residents[1].quiet_hours: expected "HH:MM-HH:MM" (24 h), got 7',
    ),
    ("mapping-as-key", {"l2": "? {a: 1}\n: 2"}, "venue.yaml:2: expected a key (a word), got {'a': 1}"),
    (
        "band-for-two-residents",
        {"l14": '  - {reference: "Resident 7", band: WB-00AA}'},
        "venue.yaml:14: residents[1].band: band WB-00AA belongs to two residents: "
        "'Resident 4 (room 4)' (line 13) and 'Resident 7'",
    ),
]


@pytest.mark.parametrize(("lines", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_names_the_file_and_line_and_build_writes_nothing(
    tmp_path: Path, lines: dict[str, str], message: str
) -> None:
    source = _describe(tmp_path, DESCRIPTION, **lines)
    where = str(tmp_path / message)  # the messages name the file as it was given
    assert_user_error(provision(tmp_path / "home", "venue", "check", str(source)), PROG, where)
    out, air = tmp_path / "venue.toml", tmp_path / "air.yaml"
    out.write_text(BEFORE)
    assert_user_error(_build(tmp_path / "home", source, out, air), PROG, where)
    assert out.read_text() == BEFORE and not air.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["venue.toml", "venue.yaml"]  # no temporary left


def test_a_resident_without_a_band_is_refused_by_build(tmp_path: Path) -> None:
    # `check` takes it: the band may be flashed later; `build` makes the gateway's file, which
    # needs it (a band nobody maps to the resident would tell no family)
    source = _describe(tmp_path, DESCRIPTION, l14='  - {reference: "Resident 7", allowed_zones: [lobby]}')
    assert provision(tmp_path / "home", "venue", "check", str(source)).returncode == 0
    out = tmp_path / "venue.toml"
    refused = _build(tmp_path / "home", source, out, tmp_path / "air.yaml")
    assert_user_error(
        refused,
        PROG,
        f"{source}:14: resident 'Resident 7' has no band: flash one with "
        '`guardian-provision flash --kind wristband --resident "Resident 7" ...` or give band:',
    )
    assert not out.exists() and not (tmp_path / "air.yaml").exists()


def test_bands_in_the_inventory_belong_to_one_resident_each(tmp_path: Path) -> None:
    home = tmp_path / "station"
    _station(
        home,
        _band("00cc", "Resident 7", "rosewood-house"),  # the band flashed for Resident 7
        _band("00dd", "Resident 9", "other-house"),
        _band("00de", "Resident 9", "other-house"),  # a replacement, the old one not revoked
        _band("00ee", "Resident 2", "third-house"),  # a resident the description lacks
        _band("00ef", "Resident 3", "third-house", state="pending"),  # its flash did not finish
    )
    no_band = '  - {reference: "Resident 7"}'
    out = tmp_path / "venue.toml"

    # the inventory's band is Resident 7's
    made = _build(home, _describe(tmp_path, DESCRIPTION, l14=no_band), out)
    assert made.returncode == 0, made.stderr
    assert gateway_venue.load(out).residents["WB-00CC"].reference == "Resident 7"

    # ... so it is not also Resident 4's
    out.write_text(BEFORE)
    source = _describe(tmp_path, DESCRIPTION, l13='  - {reference: "Resident 4 (room 4)", band: WB-00CC}', l14=no_band)
    assert provision(home, "venue", "check", str(source)).returncode == 0  # the inventory is build's to read
    assert_user_error(
        _build(home, source, out),
        PROG,
        f"{source}:14: band WB-00CC belongs to two residents: 'Resident 4 (room 4)' (line 13, its band:) "
        "and 'Resident 7' (the inventory's band for it)",
    )
    # two bands for one resident: the gateway would watch one of them; neither is picked
    other = _describe(
        tmp_path, DESCRIPTION.replace("rosewood-house", "other-house"), l14='  - {reference: "Resident 9"}'
    )
    assert_user_error(
        _build(home, other, out),
        PROG,
        f"{other}:14: resident 'Resident 9' has 2 bands in the inventory (WB-00DD, WB-00DE): "
        "revoke the one no longer worn",
    )
    # a band registered for a resident the description does not list; a pending band is no band
    third = _describe(tmp_path, DESCRIPTION.replace("rosewood-house", "third-house"))
    assert_user_error(
        _build(home, third, out),
        PROG,
        f"{third}: band(s) WB-00EE registered for resident(s) 'Resident 2' the description does not list",
    )
    assert out.read_text() == BEFORE


def test_the_airs_refusal_leaves_the_gateways_file_too(tmp_path: Path) -> None:
    # the virtual air needs every zone's rect: found out before the gateway's file is written
    source = _describe(tmp_path, DESCRIPTION, l5="  - {id: lobby, name: 大厅}")
    out, air = tmp_path / "venue.toml", tmp_path / "air.yaml"
    out.write_text(BEFORE)
    assert_user_error(
        _build(tmp_path / "home", source, out, air),
        PROG,
        f"{source}: the virtual air needs rect: for every zone and at: for every scanner; "
        "missing for zone lobby (line 5)",
    )
    assert out.read_text() == BEFORE and not air.exists()
    assert _build(tmp_path / "home", source, out).returncode == 0
