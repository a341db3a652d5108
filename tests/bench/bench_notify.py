"""`family_alert_latency`: a wristband's SOS, FALL and EXIT to the family's phone, with central up.

Each run is a care home in miniature, every part real except the radio and the phones: the
wristband firmware on the MicroPython unix port in the virtual air (hil_tests/sim/air.py), the
gateway agent with its BLE scanners and alert engine, the local and central Mosquitto,
guardian-notify (verifier in-process) and Apprise's json:// webhook to a local HTTP receiver
that stands for the family's phone (tests/notify/receiver.py). Per run:

  SOS   the button is held 2.5 s (the band's own confirmation); timed from the start of the press.
        Nobody acknowledges: the circle's second contact after escalate_after_s (3 s), then staff.
  FALL  free fall, impact, lying still (the band's fall check with a short stillness window and
        cancel window); timed from the band's "FALL event" console line, since the band-side
        confirmation (settle + stillness + cancel window, 41.5 s by default) is measured by the
        wristband benchmarks.
  EXIT  the resident steps into the front-door zone; timed from that step (includes the
        gateway's zone confirmation). BACK_INSIDE afterwards closes the loop.
  (A second SOS in the same run is not possible: the band keeps its SOS flag, and ignores the
  button for SOS, until the event ages out; more samples come from more runs.)

Figures: `value` = p99 (over every alert of every run) of the time to the first contact's
receiver, in seconds, target <= 10 s; `duplicates` = messages a contact received beyond one per
(alert, kind of message), told apart by the webhook's ge_alert and ge_kind fields, repeats with
the same delivery key included, target 0; `escalation_error_s` = the worst
|(arrival at the next round) - (arrival at the previous round) - escalate_after_s|, target <= 1 s.
"""

from __future__ import annotations

import re
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.central.keys import generate_central_key
from agent.shared.registry import Device
from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import firmware_files, wristband_config
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.notifier import NotifierProcess
from hil_tests.sim.tools import find_micropython
from tests.notify.receiver import Received, Receiver

NAME = "family_alert_latency"
NAMES = (NAME,)
TARGET_P99_S = 10.0
TARGET_ESCALATION_ERROR_S = 1.0
ESCALATE_S = 3
BAND = "WB-0001"
KEY = bytes(range(0x40, 0x60))
FALL = {"settle_ms": 300, "still_ms": 2000, "cancel_ms": 1000}
AIR = {
    "name": "care-home",
    "model": {"shadowing_db": 1, "loss": 0.0, "sensitivity_dbm": -105, "seed": 11},
    "zones": [
        {"name": "lounge", "rect": [0, 0, 10, 8]},
        {"name": "corridor", "rect": [10, 0, 20, 3]},
        {"name": "front-door", "rect": [20, 0, 24, 3], "exit": True},
    ],
    "scanners": [
        {"name": "scan-lounge", "at": [5, 4]},
        {"name": "scan-corridor", "at": [15, 1.5]},
        {"name": "scan-door", "at": [22, 1.5]},
    ],
}
ALERTS = """\
venue = "venue-1"
timezone = "Asia/Shanghai"
[settings]
zone_confirm = 2
rssi_window_s = 2.0
[[zones]]
id = "lounge"
name = "Lounge"
[[zones]]
id = "corridor"
name = "Corridor"
[[zones]]
id = "front-door"
name = "Front door"
kind = "exit"
[[scanners]]
id = "scan-lounge"
zone = "lounge"
[[scanners]]
id = "scan-corridor"
zone = "corridor"
[[scanners]]
id = "scan-door"
zone = "front-door"
[[residents]]
band = "WB-0001"
reference = "Resident 4 (room 4)"
"""


def circle(rx: Receiver) -> str:
    return f"""\
venue = "venue-1"
name = "Rosewood House"
timezone = "Asia/Shanghai"
escalate_after_s = {ESCALATE_S}
[[contacts]]
id = "li"
name = "Li Wei"
language = "zh"
channels = ["{rx.url("li")}"]
[[contacts]]
id = "sam"
name = "Sam"
channels = ["{rx.url("sam")}"]
[[staff]]
id = "desk"
name = "Night desk"
channels = ["{rx.url("desk")}"]
[[residents]]
band = "WB-0001"
reference = "Resident 4 (room 4)"
circle = ["li", "sam"]
"""


def _wait(rx: Receiver, path: str, kind: str, known: set[str | None], timeout: float, what: str) -> Received:
    """The first message of `kind` to `path` about an alert not in `known` (which it joins)."""

    def fresh() -> list[Received]:
        return [r for r in rx.at(path) if r.kind == kind and r.alert not in known]

    if not rx.wait_for(lambda: bool(fresh()), timeout):
        raise RuntimeError(f"{what}: no {kind} message reached {path} within {timeout} s")
    first = fresh()[0]
    known.add(first.alert)
    return first


def _ack(message: str) -> None:
    found = re.search(r"http://[0-9.:]+/a/[A-Za-z0-9_-]{32}", message)
    if found is None:
        raise RuntimeError("no acknowledgement link in the message")
    url = found.group(0)
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as r:
        if r.status != 200:
            raise RuntimeError(f"acknowledgement refused: HTTP {r.status}")


def one_run(micropython: str, progress: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ge-bench-notify-") as tmp:
        work = Path(tmp)
        rx = Receiver()
        local = Mosquitto(work / "local", name="local", persistence=True)
        central = Mosquitto(work / "central", name="central", persistence=True)
        air = VirtualAir(parse_venue(AIR))
        band = agent = notifier = None
        try:
            local.start()
            central.start()
            central_pub = generate_central_key(work / "central.key", "central")
            (work / "residents.toml").write_text(ALERTS)
            ble = "\n".join(
                f'[[ble]]\nname = "{n}"\nbackend = "sim"\nair = "{air.address[0]}:{air.address[1]}"\n'
                f"position = [{x}, {y}]"
                for n, (x, y) in air.venue.scanners.items()
            )
            agent = AgentProcess(
                work / "gw",
                local.address,
                central.address,
                [Device(BAND, "wristband", KEY, "venue-1", "lounge")],
                extra_config=f'{ble}\n[wristbands]\nalerts = "{work / "residents.toml"}"\n',
                central_options=f'command_key = "{central_pub}"',
            )
            band = VirtualBoard(BAND, work / BAND, micropython=micropython, air=air.address)
            band.install(firmware_files("wristband"), wristband_config(BAND, KEY, fall=FALL))
            band.set_position(5, 4)
            band.power_on()
            band.wait_console(f"wristband: {BAND} up", timeout=10)
            notifier = NotifierProcess(
                work / "notify",
                central.address,
                circle(rx),
                [(agent.public_key_file, "venue-1")],
                command_key=work / "central.key",
                device_keys=agent.devices_file,
            )
            notifier.start()
            agent.start()
            agent.wait_log("uplink_up")
            air.wait_scanners({"scan-lounge", "scan-corridor", "scan-door"}, timeout=10)
            time.sleep(4)  # the band settles in the lounge (zone confirmed) before anything happens
            latencies: dict[str, list[float]] = {"SOS": [], "FALL": [], "EXIT": []}
            escalation_errors: list[float] = []

            # SOS, not acknowledged: Li, then Sam, then the desk
            told: dict[str, set[str | None]] = {"li": set(), "sam": set(), "desk": set(), "back": set()}
            t0 = time.time()
            band.hold(2500)
            li = _wait(rx, "li", "alert", told["li"], 30, "SOS")
            latencies["SOS"].append(li.t - t0)
            sam = _wait(rx, "sam", "alert", told["sam"], ESCALATE_S + 10, "SOS escalation")
            desk = _wait(rx, "desk", "alert", told["desk"], ESCALATE_S + 10, "SOS escalation to staff")
            escalation_errors += [abs(sam.t - li.t - ESCALATE_S), abs(desk.t - sam.t - ESCALATE_S)]
            _ack(desk.message)
            progress(f"  SOS {li.t - t0:.2f} s, escalations {sam.t - li.t:.2f} s, {desk.t - sam.t:.2f} s")

            # FALL, acknowledged by Li
            since = band.console_offset
            for x, y, z in [(0, 0, 100)] * 10 + [(0, 2900, 1500)] + [(0, 0, 1000)] * 150:
                band.accel(x, y, z)
                time.sleep(0.02)
            band.wait_console("wristband: FALL event", timeout=15, since=since)
            t0 = time.time()
            li = _wait(rx, "li", "alert", told["li"], 20, "FALL")
            latencies["FALL"].append(li.t - t0)
            _ack(li.message)

            # EXIT through the front door, acknowledged, then back inside
            for x, y in [(12, 1.5), (17, 1.5)]:
                band.set_position(x, y)
                time.sleep(2)
            t0 = time.time()
            band.set_position(22, 1.5)
            li = _wait(rx, "li", "alert", told["li"], 30, "EXIT")
            latencies["EXIT"].append(li.t - t0)
            _ack(li.message)
            for x, y in [(15, 1.5), (5, 4)]:
                band.set_position(x, y)
                time.sleep(3)
            _wait(rx, "li", "followup", told["back"], 20, "BACK_INSIDE follow-up")

            time.sleep(ESCALATE_S + 1)  # nothing more may arrive

            # one message per (contact, alert, kind of message); a repeat with the same delivery
            # key counts too (a phone does not drop it)
            seen: dict[tuple[str, str | None, str | None], int] = {}
            for r in rx.received:
                seen[(r.path, r.alert, r.kind)] = seen.get((r.path, r.alert, r.kind), 0) + 1
            duplicates = sum(c - 1 for c in seen.values())
            return {"latencies": latencies, "escalation_errors": escalation_errors, "duplicates": duplicates}
        except Exception:
            for proc, name in ((notifier, "notifier"), (agent, "agent")):
                if proc is not None:
                    progress(f"{name} log tail:\n" + "\n".join(proc.log_text().splitlines()[-25:]))
            if band is not None:
                progress("band console tail:\n" + band.console_output().decode(errors="replace")[-1500:])
            raise
        finally:
            if band is not None:
                band.close()
            if notifier is not None:
                notifier.stop()
            if agent is not None:
                agent.kill()
            air.close()
            local.kill()
            central.kill()
            rx.close()


def _p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    from tests.bench.rig import progress

    micropython = find_micropython()
    if micropython is None:
        raise RuntimeError("family_alert_latency needs the MicroPython unix port (MICROPYTHON=...)")
    results = []
    for i in range(runs):
        progress(f"{NAME}: run {i + 1}/{runs}")
        results.append(one_run(micropython, progress))
    every = [x for r in results for xs in r["latencies"].values() for x in xs]
    by_type = {t: sorted(round(x, 2) for r in results for x in r["latencies"][t]) for t in ("SOS", "FALL", "EXIT")}
    esc = max(e for r in results for e in r["escalation_errors"])
    dup = sum(r["duplicates"] for r in results)
    p99 = _p99(every)
    return [
        {
            "name": NAME,
            "value": round(p99, 2),
            "unit": "s, band alert to the family's endpoint (p99)",
            "target": TARGET_P99_S,
            "ok": p99 <= TARGET_P99_S and dup == 0 and esc <= TARGET_ESCALATION_ERROR_S,
            "p50": round(sorted(every)[len(every) // 2], 2),
            "p99": round(p99, 2),
            "alerts": len(every),
            "by_type_s": by_type,
            "duplicates": dup,
            "duplicates_target": 0,
            "escalation_error_s": round(esc, 3),
            "escalation_error_target_s": TARGET_ESCALATION_ERROR_S,
            "escalate_after_s": ESCALATE_S,
            "runs": [round(_p99([x for xs in r["latencies"].values() for x in xs]), 2) for r in results],
        }
    ]
