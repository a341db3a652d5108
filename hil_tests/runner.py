"""Runs a scenario (hil_tests/scenario.py) on a rig and judges its expectations.

The simulated rig (`SimRig`) is the real software on this machine: two Mosquitto brokers (the
gateway's local one and central's), the agent, central's verifier (with the device keys, so
every device MAC is audited), and one virtual board per device running the real firmware
under the MicroPython unix port. Only the hardware is simulated (hil_tests/sim/board.py).

A bench (`BenchRig`, from a bench file, docs/hil.md) has real boards: the fixture presses,
cuts power and feeds sensor readings, its phototransistors are sampled for the LED history,
the consoles are read for what each device saved, and central's verifier listens on the
bench's central broker. The gateway is the bench's own Raspberry Pi, so a scenario that stops
or kills a broker or the agent, or moves a wristband, needs the simulated rig; that is
refused before anything runs, naming the line.

Times: actions are stamped with the wall clock when they start (central's verifier stamps
events with the same clock) and with the monotonic clock (LED changes are stamped with it).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.shared.broker_auth import new_password, password_hash
from agent.shared.registry import Device
from hil_tests.rig.drivers import FixtureDriver
from hil_tests.rig.errors import RigInfraError
from hil_tests.scenario import ENGINE_FLOATS, GATEWAY, PROCESSES, Expect, RigSettings, Scenario, ScenarioError, Step
from hil_tests.sim.air import VirtualAir, parse_venue
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, firmware_files, sensor_config, wristband_config
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto, Packaged
from hil_tests.sim.tools import free_port
from provisioning.venue import Door, Resident, Scanner, Venue, Zone, air_venue, alerts_toml

# an event a device wrote to its flash outbox; the alarms (types 1-63) must all reach central
_SAVED = re.compile(rb"(?:alarm_post|sensor): event (\d+)/(\d+) type (\d+) saved")
_NOT_LOSS = ("new_epoch", "reordered", "duplicate_batch", "joined")


def _saved_alarms(device: str, console: bytes) -> set[tuple[str, int, int]]:
    """(device, boot, seq) of every P0 event (types 1-63) the console says was saved."""
    return {(device, int(m[1]), int(m[2])) for m in _SAVED.finditer(console) if int(m[3]) < 64}


@dataclass
class Outcome:
    """One expectation's verdict."""

    expect: Expect
    passed: bool
    detail: str = ""
    latency_ms: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "line": self.expect.line,
            "kind": self.expect.kind,
            "what": self.expect.describe(),
            "passed": self.passed,
        }
        if self.detail:
            out["detail"] = self.detail
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 1)
        return out


@dataclass
class Result:
    scenario: Scenario
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0
    rig: str = "sim"
    infra: list[str] = field(default_factory=list)  # rig trouble seen during the run (benches)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "file": str(self.scenario.path),
            "rig": self.rig,
            "passed": self.passed,
            "duration_s": round(self.duration_s, 2),
            "expectations": [o.as_json() for o in self.outcomes],
            **({"infra_errors": self.infra[:20]} if self.infra else {}),
        }


def _move(board: VirtualBoard, step: Step) -> None:
    for i, (x, y) in enumerate(step.points):
        board.set_position(x, y)
        if step.action == "walk" and i + 1 < len(step.points):
            time.sleep(step.seconds)  # the resident takes this long per point of the path


def _fall(board: VirtualBoard, _: Step) -> None:
    # free fall, impact, lying still (milli-g at 50 Hz), as the accelerometer reports it
    for x, y, z in [(0, 0, 100)] * 10 + [(0, 2900, 1500)] + [(0, 0, 1000)] * 150:
        board.accel(x, y, z)
        time.sleep(0.02)  # the samples' own pace: the fall is the scenario


# how the simulated rig performs each device action of hil_tests/scenario.py's ACTIONS
SIM_DEVICE_ACTIONS: dict[str, Callable[[VirtualBoard, Step], None]] = {
    "press": lambda board, _: board.press(),
    "release": lambda board, _: board.release(),
    "click": lambda board, step: board.click(step.ms),
    "hold": lambda board, step: board.hold(step.ms),
    "tamper_open": lambda board, _: board.set_input("tamper", 1),
    "tamper_close": lambda board, _: board.set_input("tamper", 0),
    "power_cut": lambda board, _: board.power_cut(),
    "power_on": lambda board, _: board.power_on(),
    "move": _move,
    "walk": _move,
    "fall": _fall,
    "strap_open": lambda board, _: board.set_input("strap", 1),
    "strap_close": lambda board, _: board.set_input("strap", 0),
    "battery": lambda board, step: board.set_battery(step.value),
    "set": lambda board, step: board.set_value(step.sensor, step.value),
}


class SimRig:
    """The simulated venue for one scenario; `close()` stops everything it started."""

    def __init__(self, scenario: Scenario, workdir: Path, micropython: str | None = None) -> None:
        self.scenario = scenario
        self.keys = {d.id: secrets.token_bytes(32) for d in scenario.devices}
        packaged = scenario.settings.local_broker == "packaged"
        # with the packaged broker every post and sensor logs in with its own password, and
        # the agent writes the broker's password and ACL files from the registry
        self.passwords = {d.id: new_password() for d in scenario.devices if d.kind != "wristband" and packaged}
        devices = [
            Device(d.id, d.kind, self.keys[d.id], scenario.venue, d.zone or "-", _hash(self.passwords.get(d.id)))
            for d in scenario.devices
        ]
        if packaged:
            files = Packaged(workdir / "local" / "passwd", workdir / "local" / "acl")
            self.local = Mosquitto(workdir / "local", name="local", packaged=files)
        else:
            self.local = Mosquitto(workdir / "local", name="local", persistence=True)
        self.central = Mosquitto(workdir / "central", name="central", persistence=True)
        self.metrics_port = free_port()
        extra = f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
        self.air: VirtualAir | None = None
        bands = [d for d in scenario.devices if d.kind == "wristband"]
        if bands:
            self.air = VirtualAir(parse_venue(self._air_venue()))
            alerts = workdir / "residents.toml"
            workdir.mkdir(parents=True, exist_ok=True)
            alerts.write_text(self._alerts_file())
            watchdog = "".join(f"{k} = {v}\n" for k, v in scenario.settings.scanners)
            for sc in scenario.scanners:
                extra += (
                    f'[[ble]]\nname = "{sc.id}"\nbackend = "sim"\n'
                    f'air = "{self.air.address[0]}:{self.air.address[1]}"\nposition = [{sc.at[0]}, {sc.at[1]}]\n'
                    + watchdog
                )
            extra += f'[wristbands]\nalerts = "{alerts}"\n'
        self.agent = AgentProcess(
            workdir / "gateway",
            self.local.address,
            self.central.address,
            devices,
            venue=scenario.venue,
            extra_config=extra,
            local_broker=self.local if packaged else None,
        )
        self.verifier = CentralVerifier(self.central.address, [self.agent.public_key_file], self.agent.devices_file)
        self.kinds = {d.id: d.kind for d in scenario.devices}
        self.boards = {
            d.id: VirtualBoard(
                d.id,
                workdir / d.id,
                micropython=micropython,
                air=self.air.address if d.kind == "wristband" and self.air is not None else None,
                sensors=tuple(c.name for c in d.channels),
            )
            for d in scenario.devices
        }
        self._closers: list[Callable[[], None]] = [b.close for b in self.boards.values()]
        if self.air is not None:
            self._closers.insert(0, self.air.close)

    def _venue(self) -> Venue:
        """The scenario's venue as one description (provisioning/venue.py): the air and the
        agent's venue file are both made from it."""
        sc = self.scenario
        return Venue(
            sc.venue,
            sc.venue,
            zones=tuple(Zone(z.id, z.name, "exit" if z.exit else "inside", z.rect) for z in sc.zones),
            scanners=tuple(Scanner(s.id, s.zone, s.at) for s in sc.scanners),
            doors=tuple(Door(d.id, d.zone, d.sensor, d.channel, d.approach) for d in sc.doors),
            residents=tuple(Resident(d.resident or d.id, d.id) for d in sc.devices if d.kind == "wristband"),
            # short confirmations so scenarios stay short; `settings.engine` overrides any of them
            settings={
                "zone_confirm": 2,
                "rssi_window_s": 2.0,
                **{k: float(v) if ENGINE_FLOATS.get(k) else int(v) for k, v in sc.settings.engine},
            },
            air={"shadowing_db": 1, "loss": 0.0, "sensitivity_dbm": -105, "seed": 7, **dict(sc.settings.radio)},
        )

    def _air_venue(self) -> dict[str, Any]:
        return air_venue(self._venue())

    def _alerts_file(self) -> str:
        return alerts_toml(self._venue(), str(self.scenario.path))

    def start(self) -> None:
        if self.local.packaged is not None:
            self.agent.write_broker_files()
        for broker in (self.local, self.central):
            broker.start()
            self._closers.append(broker.kill)
        self.verifier.start()
        self._closers.append(self.verifier.stop)
        self.agent.start()
        self._closers.append(self.agent.kill)
        self.agent.wait_log("uplink_up")
        specs = {d.id: d for d in self.scenario.devices}
        for dev_id, board in self.boards.items():
            kind = self.kinds[dev_id]
            tuned: dict[str, Any] = dict(self.scenario.settings.for_kind(kind))
            if dev_id in self.passwords:
                tuned["password"] = self.passwords[dev_id]
            if kind == "wristband":
                at = specs[dev_id].at or (0.0, 0.0)
                # simulated bands confirm a fall after 2 s of stillness (the default is 40 s)
                fall = {"settle_ms": 300, "still_ms": 2000, "cancel_ms": 1000}
                board.install(
                    firmware_files("wristband"), wristband_config(dev_id, self.keys[dev_id], fall=fall, **tuned)
                )
                board.set_position(*at)
            elif kind == "sensor":
                channels = [c.config() for c in specs[dev_id].channels]
                tuned = {"sample_ms": 200, **tuned}
                cfg = sensor_config(dev_id, self.keys[dev_id], self.local.address, channels, **tuned)
                board.install(firmware_files("sensor"), cfg)
            else:
                cfg = alarm_post_config(dev_id, self.keys[dev_id], self.local.address, **tuned)
                board.install(firmware_files("alarm_post"), cfg)
            board.power_on()
        for dev_id, board in self.boards.items():
            ready = {"wristband": f"wristband: {dev_id} up", "sensor": "sensor: connected"}.get(
                self.kinds[dev_id], "alarm_post: connected"
            )
            board.wait_console(ready, timeout=15)
        if self.air is not None:
            self.air.wait_scanners({s.id for s in self.scenario.scanners}, timeout=15)

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()

    def do(self, step: Step) -> None:
        if step.action == "wait":
            time.sleep(step.seconds)  # the scenario asks for time to pass
        elif step.target in self.boards:
            SIM_DEVICE_ACTIONS[step.action](self.boards[step.target], step)
        elif step.action in ("scanner_down", "scanner_up"):
            assert self.air is not None  # the scenario names a scanner: the venue has wristbands
            self.air.mute(step.target, step.action == "scanner_down")
        elif step.action == "reboot":
            self._power("kill" if step.hard else "stop", step.target)
            time.sleep(step.seconds)  # the gateway is off this long
            self._power("start", step.target)
        else:
            self._power(step.action, step.target)

    def _power(self, action: str, process: str) -> None:
        """stop (graceful), kill (-9), start or restart a process; "gateway" is the agent and the
        local broker together (its Pi): the agent goes first and comes back last."""
        if action == "restart":
            self._power("stop", process)
            self._power("start", process)
            return
        if process == "gateway":
            order = ("agent", "local_broker") if action != "start" else ("local_broker", "agent")
            for part in order:
                self._power(action, part)
        elif process == "agent":
            if action == "start":
                self.agent.start(wait=False)
            elif action == "kill":
                self.agent.kill()
            else:
                self.agent.stop()
        else:
            broker = self.local if process == "local_broker" else self.central
            if action != "start" and broker is self.central:
                broker.wait_saved()  # what central acknowledged stays acknowledged, as on a real platform
            {"kill": broker.kill, "stop": broker.stop, "start": broker.start}[action]()

    def buzzer_history(self, device: str) -> list[tuple[float, int]]:
        """(monotonic time, level) of the device's buzzer changes."""
        return [(c.time, c.level) for c in self.boards[device].output_history if c.pin == "buzzer"]

    def led_history(self, device: str) -> list[tuple[float, str]]:
        """(monotonic time, colour) of the device's LED changes."""
        return self.boards[device].led_history

    def gateway_metrics(self) -> dict[str, float]:
        """The agent's Prometheus metrics as {name or name{labels}: value}; {} when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def saved_alarms(self) -> set[tuple[str, int, int]]:
        """Alarms (P0: ALARM, ALARM_HELD, SMOKE, GAS) the devices reported saved to flash
        (console), as (device, boot, seq)."""
        return {a for dev_id, board in self.boards.items() for a in _saved_alarms(dev_id, board.console_output(0))}


class Judge:
    """Evaluates expectations against what central verified and what the boards showed."""

    def __init__(self, scenario: Scenario, rig: SimRig | BenchRig, start_wall: float, start_mono: float) -> None:
        self.scenario = scenario
        self.rig = rig
        self.wall: dict[str, float] = {"": start_wall}
        self.mono: dict[str, float] = {"": start_mono}

    def stamp(self, step: Step, wall: float, mono: float) -> None:
        self.wall[step.label] = wall
        self.mono[step.label] = mono

    def _events(self, typ: str, device: str) -> list[dict[str, Any]]:
        match: dict[str, Any] = {"type_name": typ}
        if device and device != GATEWAY:
            match["device"] = device
        found = self.rig.verifier.events(**match)
        # the gateway's own events: device = the id of the gateway that signed the batch
        return [ev for ev in found if ev["device"] == ev["gateway"]] if device == GATEWAY else found

    def check(self, e: Expect, final: bool) -> Outcome | None:
        """The verdict, or None while it can still change (not final and window open)."""
        if e.after not in self.wall:
            return None if not final else Outcome(e, False, f"step {e.after!r} never ran")
        checks: dict[str, Callable[[Expect, bool], Outcome | None]] = {
            "event": self._event,
            "none": self._none,
            "led": self._led,
            "count": self._count,
            "zero_loss": self._zero_loss,
            "order": self._order,
            "once": self._once,
            "held": self._held,
            "sound": self._sound,
        }
        return checks[e.kind](e, final) if e.kind in checks else None  # latency: from the others

    def verdicts(self) -> list[Outcome]:
        """Every expectation's verdict, in file order, each taken once it can no longer change
        or its window has closed (count, once, order and zero_loss: once they hold, or after
        settle_s)."""
        sc = self.scenario
        timed = [e for e in sc.expects if e.kind in _TIMED]
        final = [e for e in sc.expects if e.kind in _SETTLED]
        verdicts: dict[int, Outcome] = {}
        ends = [self.wall.get(e.after, time.time()) + e.start + e.within for e in timed]
        horizon = max([*ends, time.time() + sc.settle_s])
        while time.time() < horizon:
            for e in timed:
                if e.line not in verdicts:
                    v = self.check(e, final=False)
                    if v is not None:
                        verdicts[e.line] = v
            settled = all(self.check(e, final=False) is not None for e in final)
            if all(e.line in verdicts for e in timed) and settled:
                break
            time.sleep(0.05)  # polling the collected evidence; every check has its own deadline
        outcomes = [verdicts.get(e.line) or self._final(e) for e in sc.expects if e.kind != "latency"]
        outcomes += [self._latency(e, outcomes) for e in sc.expects if e.kind == "latency"]
        return sorted(outcomes, key=lambda o: o.expect.line)

    def _final(self, e: Expect) -> Outcome:
        v = self.check(e, final=True)
        assert v is not None, "a final check always has a verdict"
        return v

    @staticmethod
    def _latency(e: Expect, outcomes: list[Outcome]) -> Outcome:
        lat = [
            o.latency_ms
            for o in outcomes
            if o.expect.kind == "event" and o.expect.type == e.type and o.latency_ms is not None
        ]
        if not lat:
            return Outcome(e, False, f"no measured {e.type} events to judge")
        p50, p99 = _percentile(lat, 50), _percentile(lat, 99)
        ok = (e.p50_ms is None or p50 <= e.p50_ms) and (e.p99_ms is None or p99 <= e.p99_ms)
        return Outcome(e, ok, f"p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(lat)}", p99)

    def _hits(self, e: Expect) -> list[dict[str, Any]]:
        t0 = self.wall[e.after]
        return [ev for ev in self._events(e.type, e.device) if t0 * 1000 <= ev["central_ms"] <= (t0 + e.within) * 1000]

    def _event(self, e: Expect, final: bool) -> Outcome | None:
        t0 = self.wall[e.after]
        hits = self._hits(e)
        if hits:
            first = min(hits, key=lambda ev: ev["central_ms"])
            return Outcome(e, True, f"boot {first['boot']} seq {first['seq']}", first["central_ms"] - t0 * 1000)
        if time.time() < t0 + e.within and not final:
            return None
        return Outcome(e, False, f"no {e.type} from {e.device} at central within {e.within:g} s")

    def _none(self, e: Expect, final: bool) -> Outcome | None:
        hits = self._hits(e)
        if hits:
            return Outcome(e, False, f"{len(hits)} seen, first seq {hits[0]['seq']} from {hits[0]['device']}")
        if time.time() < self.wall[e.after] + e.within and not final:
            return None
        return Outcome(e, True)

    def _led(self, e: Expect, final: bool) -> Outcome | None:
        m0 = self.mono[e.after]
        history = self.rig.led_history(e.device)
        for t, colour in history:
            if m0 <= t <= m0 + e.within and colour == e.colour:
                return Outcome(e, True, latency_ms=(t - m0) * 1000)
        if time.monotonic() < m0 + e.within and not final:
            return None
        seen = [c for t, c in history if t >= m0]
        return Outcome(e, False, f"LED went {' -> '.join(seen) or 'nowhere'}")

    def _count(self, e: Expect, final: bool) -> Outcome | None:
        keys = {(ev["device"], ev["boot"], ev["seq"]) for ev in self._events(e.type, e.device)}
        if len(keys) == e.equals:
            return Outcome(e, True, f"{len(keys)} at central")
        return Outcome(e, False, f"{len(keys)} at central") if final else None

    def _after(self, e: Expect, typ: str) -> list[dict[str, Any]]:
        """Events of `typ` (from e.device) verified at central since the step `e.after` began."""
        t0 = self.wall[e.after] * 1000
        return [ev for ev in self._events(typ, e.device) if ev["central_ms"] >= t0]

    def _order(self, e: Expect, final: bool) -> Outcome | None:
        t0 = self.wall[e.after] * 1000
        wanted = set(e.types)
        seen = [
            ev["type_name"]
            for ev in self.rig.verifier.events()
            if ev["type_name"] in wanted and ev["central_ms"] >= t0 and _from(ev, e.device)
        ]
        if seen == list(e.types):
            return Outcome(e, True, " then ".join(seen))
        return Outcome(e, False, f"central got {' then '.join(seen) or 'none of them'}") if final else None

    def _once(self, e: Expect, final: bool) -> Outcome | None:
        found = self._after(e, e.type)
        repeats = _deliveries(self.rig.verifier, found) - len(found)
        if len(found) == 1 and repeats <= e.duplicates:
            ev = found[0]
            return Outcome(e, True, f"boot {ev['boot']} seq {ev['seq']}, delivered {1 + repeats} time(s)")
        if not final:
            return None
        keys = [(ev["boot"], ev["seq"]) for ev in found]
        return Outcome(e, False, f"{len(found)} distinct {e.type} at central {keys[:5]}, {repeats} repeated deliveries")

    def _held(self, e: Expect, final: bool) -> Outcome | None:
        m0 = self.mono[e.after] + e.start
        if time.monotonic() < m0 + e.within and not final:
            return None
        history = self.rig.led_history(e.device)
        at_start = [c for t, c in history if t <= m0]
        colour = at_start[-1] if at_start else "off"
        changes = [(t - m0, c) for t, c in history if m0 < t <= m0 + e.within]
        if colour == e.colour and not changes:
            return Outcome(e, True, f"{e.colour} from {e.start:g} to {e.start + e.within:g} s")
        if colour != e.colour:
            return Outcome(e, False, f"LED was {colour} when the window began")
        t, c = changes[0]
        return Outcome(e, False, f"LED went {c} {t:.2f} s into the window")

    def _sound(self, e: Expect, final: bool) -> Outcome | None:
        m0 = self.mono[e.after]
        done = time.monotonic() >= m0 + e.within or final
        history = self.rig.buzzer_history(e.device)
        heard = sound_of(history, m0, m0 + e.within)
        if e.sound == "t3" and heard == ["t3"]:
            return Outcome(e, True, "temporal-three")
        if e.sound == "silent":
            before = [level for t, level in history if t <= m0]
            if (before and before[-1]) or heard:
                return Outcome(e, False, f"heard {', '.join(heard) or 'the buzzer on'}")
        if not done:
            return None
        ok = heard == [] if e.sound == "silent" else heard == [e.sound]
        return Outcome(e, ok, f"heard {', '.join(heard) or 'nothing'}")

    def _zero_loss(self, e: Expect, final: bool) -> Outcome | None:
        saved = self.rig.saved_alarms()
        central = {(ev["device"], ev["boot"], ev["seq"]) for ev in self.rig.verifier.events()}
        missing = saved - central
        problems = [p for p in self.rig.verifier.problems() if p["kind"] not in _NOT_LOSS]
        if not missing and not problems:
            return Outcome(e, True, f"{len(saved)} saved alarms all at central")
        if not final:
            return None
        detail = f"missing at central: {sorted(missing)[:5]}" if missing else f"verifier: {problems[:3]}"
        return Outcome(e, False, detail)


def _hash(password: str | None) -> str | None:
    return password_hash(password) if password is not None else None


def _from(ev: dict[str, Any], device: str) -> bool:
    """The event is from `device` ("": any; "gateway": the gateway's own)."""
    if device == GATEWAY:
        return bool(ev["device"] == ev["gateway"])
    return not device or ev["device"] == device


_TIMED = ("event", "none", "led", "held", "sound")  # judged in a window after a step
_SETTLED = ("count", "zero_loss", "once", "order")  # judged when they hold, or at the end


def _deliveries(verifier: CentralVerifier, events: list[dict[str, Any]]) -> int:
    """How many times central received these events: once each, plus every time one came again
    in another batch (duplicate_event) or in its own batch delivered again (duplicate_batch)."""
    keys = {(ev["device"], ev["boot"], ev["seq"]) for ev in events}
    batches = {(ev["gateway"], ev["epoch"], ev["batch"]) for ev in events}
    again = verifier.records_of("duplicate_event", "duplicate_batch")
    n = len(events)
    for r in again:
        if r["kind"] == "duplicate_event" and (r["device"], r["boot"], r["seq"]) in keys:
            n += 1
        elif r["kind"] == "duplicate_batch" and (r["gateway"], r["epoch"], r["seq"]) in batches:
            n += sum(
                1 for ev in events if (ev["gateway"], ev["epoch"], ev["batch"]) == (r["gateway"], r["epoch"], r["seq"])
            )
    return n


# the buzzer's patterns (docs/scenarios.md): a beep is a pulse of at most _BEEP_MAX_S; two of them
# within _DOUBLE_GAP_S of each other are a double; temporal-three is three 0.5 s tones 0.5 s apart
# then 1.5 s of silence (ISO 8201), with _T3_SLACK_S either way for the loop's pace
_BEEP_MAX_S = 0.4
_DOUBLE_GAP_S = 0.5
_T3_TONE_S = 0.5
_T3_PAUSE_S = 1.5
_T3_SLACK_S = 0.2


def sound_of(history: list[tuple[float, int]], m0: float, m1: float) -> list[str]:
    """What the buzzer played between monotonic times m0 and m1, from its (time, level) changes:
    "t3" once when a full temporal-three cycle is in it, else one "beep" or "double" per group
    of short pulses (a pulse longer than a beep that is not part of t3 is "tone")."""
    pulses: list[tuple[float, float]] = []
    on: float | None = None
    for t, level in history:
        if level and on is None:
            on = t
        elif not level and on is not None:
            if on >= m0 and t <= m1:
                pulses.append((on, t))
            on = None
    if on is not None and m0 <= on <= m1:
        pulses.append((on, m1))
    if _has_t3(pulses, m1):
        return ["t3"]
    out: list[str] = []
    for i, (a, b) in enumerate(pulses):
        if b - a > _BEEP_MAX_S:
            out.append("tone")
        elif out and out[-1] == "beep" and a - pulses[i - 1][1] <= _DOUBLE_GAP_S:
            out[-1] = "double"
        else:
            out.append("beep")
    return out


def _has_t3(pulses: list[tuple[float, float]], m1: float) -> bool:
    def near(x: float, want: float) -> bool:
        return abs(x - want) <= _T3_SLACK_S

    for i in range(len(pulses) - 2):
        three = pulses[i : i + 3]
        tones = all(near(b - a, _T3_TONE_S) for a, b in three)
        gaps = near(three[1][0] - three[0][1], _T3_TONE_S) and near(three[2][0] - three[1][1], _T3_TONE_S)
        after = pulses[i + 3][0] if i + 3 < len(pulses) else m1
        if tones and gaps and after - three[2][1] >= _T3_PAUSE_S - _T3_SLACK_S:
            return True
    return False


def _percentile(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def run(
    scenario: Scenario,
    workdir: Path,
    micropython: str | None = None,
    say: Callable[[str], None] = lambda _: None,
    on_start: Callable[[SimRig], None] | None = None,
    on_end: Callable[[SimRig], None] | None = None,
    bench: Path | None = None,
) -> Result:
    """Run `scenario` on a fresh simulated rig under `workdir`, or on the bench file `bench`.

    `on_start(rig)` is called once the simulated rig is up, `on_end(rig)` after the verdicts,
    while the rig still runs. A bench that cannot run the scenario raises ScenarioError
    before anything is touched.
    """
    started = time.monotonic()
    result = Result(scenario, rig="sim" if bench is None else str(bench))
    rig: SimRig | BenchRig
    rig = SimRig(scenario, workdir, micropython) if bench is None else BenchRig(scenario, bench)
    try:
        rig.start()
        say(f"rig up: {len(rig.boards)} device(s), agent, brokers, verifier")
        if on_start is not None and isinstance(rig, SimRig):
            on_start(rig)
        judge = Judge(scenario, rig, time.time(), time.monotonic())
        for step in scenario.steps:
            judge.stamp(step, time.time(), time.monotonic())
            say(f"line {step.line}: {step.action} {step.target}".rstrip())
            rig.do(step)
        result.outcomes = judge.verdicts()
        if on_end is not None and isinstance(rig, SimRig):
            on_end(rig)
        if isinstance(rig, BenchRig):
            result.infra = list(rig.infra_errors)
    finally:
        rig.close()
        result.duration_s = time.monotonic() - started
    return result


def _press_for(fixture: FixtureDriver, ch: int, step: Step) -> None:
    # press and release from here, so the LED sampler is not held up by a long HOLD
    fixture.press(ch)
    time.sleep(step.ms / 1000)  # the button is held this long
    fixture.release(ch)


# how a bench performs the device actions its fixture can: buttons, power, sensor inputs
BENCH_DEVICE_ACTIONS: dict[str, Callable[[FixtureDriver, int, Step], None]] = {
    "click": _press_for,
    "hold": _press_for,
    "press": lambda fixture, ch, _: fixture.press(ch),
    "release": lambda fixture, ch, _: fixture.release(ch),
    "tamper_open": lambda fixture, ch, _: fixture.press(ch, "tamper"),
    "tamper_close": lambda fixture, ch, _: fixture.release(ch, "tamper"),
    "power_cut": lambda fixture, ch, _: fixture.power(ch, False),
    "power_on": lambda fixture, ch, _: fixture.power(ch, True),
    "set": lambda fixture, ch, step: fixture.set_value(ch, step.sensor, step.value),
}
BENCH_ACTIONS = tuple(BENCH_DEVICE_ACTIONS)
_LED_PERIOD_S = 0.02  # the LED sampler's period: 50 Hz, like FixtureDriver.wait_led


class BenchRig:
    """The scenario's devices on a real bench (or any bench file, e.g. one naming simulated
    boards' ptys): the fixture acts, a sampler thread keeps each LED's history, a reader
    thread per console keeps what each device printed."""

    def __init__(self, scenario: Scenario, bench: Path) -> None:
        from hil_tests.plugin import load_bench

        for step in scenario.steps:
            if step.action == "wait" or (step.action in BENCH_ACTIONS and step.target not in PROCESSES):
                continue
            raise ScenarioError(
                f"{scenario.path}:{step.line}: '{step.action} {step.target}' cannot run on a bench "
                f"(the fixture presses, powers and feeds sensors; processes, scanners and wristband movement "
                f"need --rig sim)"
            )
        if scenario.settings != RigSettings():
            raise ScenarioError(
                f"{scenario.path}: 'settings' tune the simulated rig; a bench's devices, gateway and "
                "radio are its own (run it with --rig sim, or drop them)"
            )
        for e in scenario.expects:
            if e.kind == "sound":
                raise ScenarioError(
                    f"{scenario.path}:{e.line}: 'sound' cannot be judged on a bench (the fixture has "
                    "no microphone); it needs --rig sim"
                )
        self.scenario = scenario
        self.bench = load_bench(bench)
        try:
            missing = [d.id for d in scenario.devices if d.id not in self.bench.duts]
            if missing:
                raise ScenarioError(
                    f"{scenario.path}: device(s) {', '.join(missing)} are not on the bench {bench} "
                    f"(it has {', '.join(self.bench.duts)})"
                )
        except BaseException:
            self.bench.close()
            raise
        self.verifier = self.bench.central
        self.boards = {d.id: self.bench.duts[d.id] for d in scenario.devices}
        self._lock = threading.Lock()
        self._leds: dict[str, list[tuple[float, str]]] = {d: [] for d in self.boards}
        self._consoles: dict[str, bytearray] = {d: bytearray() for d in self.boards}
        self.infra_errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for dut in self.boards.values():
            self.bench.fixture.power(dut.channel, True)
            dut.console.drain()  # what the devices printed before this run is not evidence
        self._threads.append(threading.Thread(target=self._sample_leds, name="bench-leds", daemon=True))
        for dev_id in self.boards:
            self._threads.append(threading.Thread(target=self._read_console, args=(dev_id,), daemon=True))
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.bench.close()

    def _infra(self, what: str) -> None:
        with self._lock:
            self.infra_errors.append(what)

    def _sample_leds(self) -> None:
        while not self._stop.is_set():
            for dev_id, dut in self.boards.items():
                try:
                    colour = dut.led()
                except RigInfraError as exc:
                    self._infra(str(exc))
                    continue
                with self._lock:
                    history = self._leds[dev_id]
                    if not history or history[-1][1] != colour:
                        history.append((time.monotonic(), colour))
            self._stop.wait(_LED_PERIOD_S)

    def _read_console(self, dev_id: str) -> None:
        console = self.boards[dev_id].console
        while not self._stop.is_set():
            try:
                data = console.read_available()
            except RigInfraError as exc:
                # a port that vanished during a power cycle: found again on the next read
                self._infra(str(exc))
                self._stop.wait(0.2)
                continue
            if data:
                with self._lock:
                    self._consoles[dev_id] += data

    def do(self, step: Step) -> None:
        if step.action == "wait":
            time.sleep(step.seconds)  # the scenario asks for time to pass
            return
        dut = self.boards[step.target]
        BENCH_DEVICE_ACTIONS[step.action](self.bench.fixture, dut.channel, step)

    def led_history(self, device: str) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._leds[device])

    def console_output(self, device: str) -> bytes:
        with self._lock:
            return bytes(self._consoles[device])

    def gateway_metrics(self) -> dict[str, float]:
        return {}  # the bench's gateway is not this machine's to scrape

    def buzzer_history(self, device: str) -> list[tuple[float, int]]:
        return []  # the fixture cannot hear a buzzer: `sound` expectations are refused before a run

    def saved_alarms(self) -> set[tuple[str, int, int]]:
        """Alarms the devices printed as saved to flash during this run."""
        return {a for dev_id in self.boards for a in _saved_alarms(dev_id, self.console_output(dev_id))}
