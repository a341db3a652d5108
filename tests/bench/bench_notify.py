"""`family_alert_latency`: a wristband's SOS, FALL and EXIT to the family's phone, with central up
and with central down (the gateway's fallback notifier).

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

With central down (a second run per run, the gateway's [notify] with its defaults, its own
notifier and acknowledgement page):

  SOS   central's broker is stopped just before the press: the worst case, as the gateway waits
        the whole fallback_after_s (20 s) for the uplink before it tells anyone itself. Nobody
        acknowledges: the gateway escalates (Sam, then the desk); the desk acknowledges on the
        gateway's page.
  EXIT  central has been away longer than fallback_after_s by then: told at once, acknowledged
        by Li on the gateway's page.
  Then central's broker returns: central's notifier gets the backlog with the gateway's NOTIFIED
  and LOCAL_ACK events and must tell nobody again; BACK_INSIDE afterwards is central's to tell.

Figures: `value` = p99 (over every alert of every run) of the time to the first contact's
receiver, in seconds, target <= 10 s; `duplicates` = messages a contact received beyond one per
(alert, kind of message), told apart by the webhook's ge_alert and ge_kind fields, repeats with
the same delivery key included, target 0; `escalation_error_s` = the worst
|(arrival at the next round) - (arrival at the previous round) - escalate_after_s|, target <= 1 s.
`fallback_p99_s` (target <= 30 s), `fallback_duplicates` (the gateway's and central's messages
together, target 0) and `fallback_escalation_error_s` are the same figures with central down.
"""

from __future__ import annotations

import re
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.central.keys import generate_central_key
from agent.shared.registry import Device
from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import firmware_files, wristband_config
from hil_tests.sim.gateway import AgentProcess
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.notifier import NotifierProcess, fresh_port
from hil_tests.sim.tools import find_micropython
from tests.notify.receiver import Received, Receiver

NAME = "family_alert_latency"
NAMES = (NAME,)
TARGET_P99_S = 10.0
TARGET_ESCALATION_ERROR_S = 1.0
TARGET_FALLBACK_P99_S = 30.0
FALLBACK_AFTER_S = 20  # the gateway's default ([notify] fallback_after_s), which the run keeps
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


class Home:
    """One care home in miniature (see the module docstring); `fallback` gives the agent its own
    notifier ([notify] with the same care circle, the page on a loopback port, defaults else)."""

    def __init__(self, work: Path, micropython: str, rx: Receiver, fallback: bool) -> None:
        self.work = work
        self.rx = rx
        self.local = Mosquitto(work / "local", name="local", persistence=True)
        self.central = Mosquitto(work / "central", name="central", persistence=True)
        self.air = VirtualAir(parse_venue(AIR))
        self.local.start()
        self.central.start()
        central_pub = generate_central_key(work / "central.key", "central")
        (work / "residents.toml").write_text(ALERTS)
        ble = "\n".join(
            f'[[ble]]\nname = "{n}"\nbackend = "sim"\nair = "{self.air.address[0]}:{self.air.address[1]}"\n'
            f"position = [{x}, {y}]"
            for n, (x, y) in self.air.venue.scanners.items()
        )
        extra = f'{ble}\n[wristbands]\nalerts = "{work / "residents.toml"}"\n'
        self.page = fresh_port()
        if fallback:
            (work / "circle-copy.toml").write_text(circle(rx))
            extra += f'[notify]\ncircle = "{work / "circle-copy.toml"}"\nack_listen = "127.0.0.1:{self.page}"\n'
        self.agent = AgentProcess(
            work / "gw",
            self.local.address,
            self.central.address,
            [Device(BAND, "wristband", KEY, "venue-1", "lounge")],
            extra_config=extra,
            central_options=f'command_key = "{central_pub}"',
        )
        self.band = VirtualBoard(BAND, work / BAND, micropython=micropython, air=self.air.address)
        self.notifier = NotifierProcess(
            work / "notify",
            self.central.address,
            circle(rx),
            [(self.agent.public_key_file, "venue-1")],
            command_key=work / "central.key",
            device_keys=self.agent.devices_file,
        )

    def start(self) -> None:
        band = self.band
        band.install(firmware_files("wristband"), wristband_config(BAND, KEY, fall=FALL))
        band.set_position(5, 4)
        band.power_on()
        band.wait_console(f"wristband: {BAND} up", timeout=10)
        self.notifier.start()
        self.agent.start()
        self.agent.wait_log("uplink_up")
        self.air.wait_scanners({"scan-lounge", "scan-corridor", "scan-door"}, timeout=10)
        time.sleep(4)  # the band settles in the lounge (zone confirmed) before anything happens

    def walk_out(self) -> float:
        """Through the corridor to the front door; the time of the step into the exit zone."""
        for x, y in [(12, 1.5), (17, 1.5)]:
            self.band.set_position(x, y)
            time.sleep(2)
        t0 = time.time()
        self.band.set_position(22, 1.5)
        return t0

    def walk_back(self) -> None:
        for x, y in [(15, 1.5), (5, 4)]:
            self.band.set_position(x, y)
            time.sleep(3)

    def tails(self, progress: Any) -> None:
        for proc, name in ((self.notifier, "notifier"), (self.agent, "agent")):
            progress(f"{name} log tail:\n" + "\n".join(proc.log_text().splitlines()[-25:]))
        progress("band console tail:\n" + self.band.console_output().decode(errors="replace")[-1500:])

    def close(self) -> None:
        self.band.close()
        self.notifier.stop()
        self.agent.kill()
        self.air.close()
        self.local.kill()
        self.central.kill()


def _duplicates(rx: Receiver) -> int:
    """Messages beyond one per (contact, alert, kind of message); a repeat with the same delivery
    key counts too (a phone does not drop it)."""
    seen: dict[tuple[str, str | None, str | None], int] = {}
    for r in rx.received:
        seen[(r.path, r.alert, r.kind)] = seen.get((r.path, r.alert, r.kind), 0) + 1
    return sum(c - 1 for c in seen.values())


@contextmanager
def _running(micropython: str, progress: Any, fallback: bool) -> Iterator[Home]:
    """A started home, closed at the end; the logs' tails on the way out of a failure."""
    with tempfile.TemporaryDirectory(prefix="ge-bench-notify-") as tmp:
        rx = Receiver()
        home = None
        try:
            home = Home(Path(tmp), micropython, rx, fallback)
            home.start()
            yield home
        except Exception:
            if home is not None:
                home.tails(progress)
            raise
        finally:
            if home is not None:
                home.close()
            rx.close()


def one_run(micropython: str, progress: Any) -> dict[str, Any]:
    """Central up: central's notifier tells the family."""
    with _running(micropython, progress, fallback=False) as home:
        rx, band = home.rx, home.band
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
        t0 = home.walk_out()
        li = _wait(rx, "li", "alert", told["li"], 30, "EXIT")
        latencies["EXIT"].append(li.t - t0)
        _ack(li.message)
        home.walk_back()
        _wait(rx, "li", "followup", told["back"], 20, "BACK_INSIDE follow-up")

        time.sleep(ESCALATE_S + 1)  # nothing more may arrive
        return {"latencies": latencies, "escalation_errors": escalation_errors, "duplicates": _duplicates(rx)}


def fallback_run(micropython: str, progress: Any) -> dict[str, Any]:
    """Central's broker down: the gateway's own notifier tells the family; then central returns
    and must tell nobody again."""
    with _running(micropython, progress, fallback=True) as home:
        rx = home.rx
        latencies: dict[str, list[float]] = {"SOS": [], "EXIT": []}
        told: dict[str, set[str | None]] = {"li": set(), "sam": set(), "desk": set(), "back": set()}

        # the worst case: central goes away just before the press, so the gateway waits the
        # whole fallback_after_s (20 s) before it tells anyone itself
        home.central.stop()
        t0 = time.time()
        home.band.hold(2500)
        li = _wait(home.rx, "li", "alert", told["li"], 45, "SOS in fallback")
        latencies["SOS"].append(li.t - t0)
        sam = _wait(rx, "sam", "alert", told["sam"], ESCALATE_S + 10, "SOS escalation in fallback")
        desk = _wait(rx, "desk", "alert", told["desk"], ESCALATE_S + 10, "staff in fallback")
        errors = [abs(sam.t - li.t - ESCALATE_S), abs(desk.t - sam.t - ESCALATE_S)]
        if f"127.0.0.1:{home.page}/a/" not in desk.message:
            raise RuntimeError("the fallback's message does not link to the gateway's page")
        _ack(desk.message)  # on the gateway's page on the venue LAN
        progress(f"  fallback SOS {li.t - t0:.2f} s, escalations {sam.t - li.t:.2f} s, {desk.t - sam.t:.2f} s")

        # central has been away for a while now: an exit is told at once
        t0 = home.walk_out()
        li = _wait(rx, "li", "alert", told["li"], 30, "EXIT in fallback")
        latencies["EXIT"].append(li.t - t0)
        _ack(li.message)
        progress(f"  fallback EXIT {li.t - t0:.2f} s")

        # central returns: the backlog with the NOTIFIED and LOCAL_ACK events behind each alert
        home.central.start()
        home.notifier.wait_log("gateway_acked", timeout=60)
        home.walk_back()
        _wait(rx, "li", "followup", told["back"], 20, "BACK_INSIDE follow-up")
        time.sleep(2 * ESCALATE_S + 2)  # nothing more may arrive, from the gateway or from central
        return {"latencies": latencies, "escalation_errors": errors, "duplicates": _duplicates(rx)}


def _p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def run(names: set[str], runs: int, scale: float) -> list[dict[str, Any]]:
    from tests.bench.rig import progress

    micropython = find_micropython()
    if micropython is None:
        raise RuntimeError("family_alert_latency needs the MicroPython unix port (MICROPYTHON=...)")
    results, fallbacks = [], []
    for i in range(runs):
        progress(f"{NAME}: run {i + 1}/{runs}")
        results.append(one_run(micropython, progress))
        progress(f"{NAME}: run {i + 1}/{runs} with central down")
        fallbacks.append(fallback_run(micropython, progress))
    every = [x for r in results for xs in r["latencies"].values() for x in xs]
    by_type = {t: sorted(round(x, 2) for r in results for x in r["latencies"][t]) for t in ("SOS", "FALL", "EXIT")}
    esc = max(e for r in results for e in r["escalation_errors"])
    dup = sum(r["duplicates"] for r in results)
    p99 = _p99(every)
    fb_every = [x for r in fallbacks for xs in r["latencies"].values() for x in xs]
    fb_by_type = {t: sorted(round(x, 2) for r in fallbacks for x in r["latencies"][t]) for t in ("SOS", "EXIT")}
    fb_esc = max(e for r in fallbacks for e in r["escalation_errors"])
    fb_dup = sum(r["duplicates"] for r in fallbacks)
    fb_p99 = _p99(fb_every)
    ok_up = p99 <= TARGET_P99_S and dup == 0 and esc <= TARGET_ESCALATION_ERROR_S
    ok_down = fb_p99 <= TARGET_FALLBACK_P99_S and fb_dup == 0 and fb_esc <= TARGET_ESCALATION_ERROR_S
    return [
        {
            "name": NAME,
            "value": round(p99, 2),
            "unit": "s, band alert to the family's endpoint (p99)",
            "target": TARGET_P99_S,
            "ok": ok_up and ok_down,
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
            "fallback_p99_s": round(fb_p99, 2),
            "fallback_target_s": TARGET_FALLBACK_P99_S,
            "fallback_after_s": FALLBACK_AFTER_S,
            "fallback_by_type_s": fb_by_type,
            "fallback_duplicates": fb_dup,
            "fallback_escalation_error_s": round(fb_esc, 3),
            "fallback_runs": [round(_p99([x for xs in r["latencies"].values() for x in xs]), 2) for r in fallbacks],
        }
    ]
