"""The gateway's status page in a real browser: Debian's headless Chromium driven by Playwright.

Everything behind the page is real: Mosquitto brokers, the agent as a process with its page
and Prometheus metrics on, an alarm post running the firmware on a virtual board, central's
verifier and command tool. The page's figures are checked against the agent's own counters
(its Prometheus endpoint, a separate reader of the same Stats) and against what the post and
central saw. Screenshots (login, desktop, phone) are written to artifacts/status-page/ and
named at the end of the test run.

Chromium is the Debian package (`make setup` installs it through packaging/install-os-deps.sh);
Playwright drives it through `executable_path` and never downloads a browser. A machine
without it fails this test, loudly: a browser test that skips would hide a page nobody checked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from agent.central.keys import generate_central_key
from agent.gateway.status.auth import write_token_file
from agent.shared.registry import Device
from hil_tests.sim.board import VirtualBoard
from hil_tests.sim.firmware import alarm_post_config, firmware_files
from hil_tests.sim.gateway import AgentProcess, CentralVerifier
from hil_tests.sim.mosquitto import Mosquitto
from hil_tests.sim.tools import FIRMWARE_DIR, free_port, wait_until
from tests.artifacts import artifact_dir
from tests.test_metrics import scrape

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
from mqtt import MQTTClient  # firmware module, found through the path above

KEY = bytes([7]) * 32
DEVICES = [
    Device("AP-0001", "alarm_post", KEY, "venue-1", "hall"),
    Device("AP-0002", "alarm_post", bytes([8]) * 32, "venue-1", "大厅"),
]
# how Chromium runs here (and in CI, as root, with no network): no sandbox, no GPU, nothing
# fetched in the background
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Chromium is not installed, so the status page cannot be tested in a browser: run `make setup` "
            "(packaging/install-os-deps.sh installs Debian's chromium) or `apt-get install chromium`",
            pytrace=False,
        )
    return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Site:
    """Brokers, the agent with its page, metrics and central's key, the verifier, one virtual post."""

    def __init__(self, workdir: Path, local: Mosquitto, central: Mosquitto, micropython: str) -> None:
        self.workdir = workdir
        self.local, self.central = local, central
        self.micropython = micropython
        self.page_port, self.metrics_port = free_port(), free_port()
        self.token_file = workdir / "status.token"
        digest = write_token_file(self.token_file)
        self.central_key = workdir / "central.key"
        generate_central_key(self.central_key, "central")
        self.agent = AgentProcess(
            workdir / "gw",
            local.address,
            central.address,
            DEVICES,
            central_options=f'command_key = "{self.central_key}.pub"',
            extra_config=(
                f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
                f'[status_page]\nlisten = "127.0.0.1:{self.page_port}"\ntoken_sha256 = "{digest.hex()}"\n'
            ),
        )
        self.verifier = CentralVerifier(central.address, [self.agent.public_key_file])
        self.post: VirtualBoard | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self) -> None:
        self.verifier.start()
        self.agent.start()
        self.agent.wait_log("status_page_listening")
        self.agent.wait_log("uplink_up")

    def start_post(self) -> VirtualBoard:
        board = VirtualBoard("AP-0001", self.workdir / "AP-0001", micropython=self.micropython)
        self.post = board
        board.install(firmware_files("alarm_post"), alarm_post_config("AP-0001", KEY, self.local.address))
        board.power_on()
        board.wait_console("alarm_post: connected", timeout=10)
        return board

    def ack(self, ref: str) -> None:
        out = subprocess.run(
            [
                *(sys.executable, "-m", "agent", "command", "--broker", f"127.0.0.1:{self.central.port}"),
                *("--central-key", str(self.central_key), "--gateway", "GW-1", "--venue", "venue-1", "ack", ref),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr

    def close(self) -> None:
        if self.post is not None:
            self.post.close()
        self.verifier.stop()
        self.agent.kill()


@pytest.fixture
def site(tmp_path: Path, broker_pair: tuple[Mosquitto, Mosquitto], micropython: str) -> Iterator[Site]:
    s = Site(tmp_path, *broker_pair, micropython)
    try:
        s.start()
        yield s
    finally:
        s.close()


def log_in(page: Page, site: Site) -> None:
    page.goto(site.url)
    page.fill("#token", site.token)
    page.click("button[type=submit]")
    page.wait_for_selector("#conn[data-mode=live]", timeout=10_000)


def counters(page: Page) -> dict[str, int]:
    return {
        el.get_attribute("data-counter") or "": int(el.inner_text().split("\n")[-1].split("\t")[-1])
        for el in page.query_selector_all("#counters [data-counter]")
    }


def dom_lanes(page: Page) -> dict[str, int]:
    return {
        row.get_attribute("data-lane") or "": int(row.query_selector_all("td")[1].inner_text())
        for row in page.query_selector_all("#lanes tbody tr")
    }


def test_login_is_required_and_a_wrong_token_is_refused(site: Site, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site.url)
    assert page.is_visible("#token"), "the page asks for the token first"
    page.screenshot(path=str(artifact_dir("status-page") / "login.png"))
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#failed:not([hidden])", timeout=5000)
    assert page.request.get(f"{site.url}api/status").status == 401
    log_in(page, site)
    assert page.inner_text("#gateway") == "GW-1"
    assert site.token not in site.agent.log_text(), "the token never reaches the log"


def test_an_alarm_shows_its_receipts_and_the_figures_match_the_agent(site: Site, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, site)
    post = site.start_post()
    post.click()
    post.wait_led("green", timeout=10)  # receipt 2 reached the post
    row = page.wait_for_selector('#events tr[data-ref="AP-0001/1/2"][data-receipt="2"]', timeout=10_000)
    assert row is not None
    assert "ALARM" in row.inner_text() and "hall" in row.inner_text()
    pills = {
        p.get_attribute("data-receipt"): "on" in (p.get_attribute("class") or "")
        for p in row.query_selector_all(".pill")
    }
    assert pills == {"1": True, "2": True, "3": False}
    # central has the same event, and the agent logged it once with its zone and latency
    assert [(e["boot"], e["seq"]) for e in site.verifier.wait_events(1, 10, type_name="ALARM")] == [(1, 2)]
    site.agent.wait_log("alarm device=AP-0001 zone=hall type=ALARM ref=AP-0001/1/2 stored_ms=")

    # the dispatcher acknowledges with the reference: receipt 3 on the page and at the post
    site.ack("AP-0001/1/2")
    page.wait_for_selector('#events tr[data-ref="AP-0001/1/2"][data-receipt="3"]', timeout=10_000)
    post.wait_led("white", timeout=10)

    # the page's counters and buffer are the agent's own (Prometheus reads the same Stats)
    def agreed() -> dict[str, int] | None:
        shown, lanes = counters(page), dom_lanes(page)
        m = scrape(site.metrics_port)
        expected = {
            "frames_accepted": m[("ge_frames_accepted_total", ())],
            "events_delivered": m[("ge_events_delivered_total", ())],
            "receipts_sent": m[("ge_receipts_sent_total", ())],
            "batches_acked": m[("ge_batches_acked_total", ())],
        }
        backlog = {lane: m[("ge_backlog_events", (("lane", lane),))] for lane in ("P0", "P1", "P2")}
        same = all(shown.get(k) == v for k, v in expected.items()) and lanes == backlog
        return shown if same else None

    shown = wait_until(agreed, 10, "the page's counters to equal the agent's metrics")
    assert shown["frames_accepted"] >= 2, "ONLINE and the ALARM"  # the post's heartbeats may add more
    assert page.inner_text("#uplink") == "connected" and page.inner_text("#local") == "connected"
    rows = page.query_selector_all("#devices tbody tr")
    states = {r.get_attribute("data-device"): r.get_attribute("data-state") for r in rows}
    assert states == {"AP-0001": "online", "AP-0002": "not heard"}, "the liveness tracker's view"
    texts = {r.get_attribute("data-device"): r.inner_text() for r in rows}
    assert "大厅" in texts["AP-0002"], "UTF-8 zone names are shown as they are"
    assert " ago" in texts["AP-0001"], "last heard"
    page.screenshot(path=str(artifact_dir("status-page") / "desktop.png"), full_page=True)


def test_rejects_appear_by_reason_and_the_page_fits_a_phone(site: Site, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    log_in(page, site)
    intruder = MQTTClient("intruder", *site.local.address)
    intruder.connect()
    intruder.publish("ge/dev/AP-0001/up", b"\x00not a frame", qos=1)
    intruder.disconnect()
    row = page.wait_for_selector('#rejects tr[data-reason="frames:malformed"]', timeout=10_000)
    assert row is not None and row.inner_text().split()[-2:] == ["1", "1"]
    # phone layout: no sideways scrolling, tables turned into labelled cards
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px phone"
    assert page.is_hidden("#devices thead")
    page.screenshot(path=str(artifact_dir("status-page") / "phone.png"), full_page=True)
    context.close()
