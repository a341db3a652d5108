"""Log lines stay logfmt whatever the values hold; rejected frames are logged per reason, not per id."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from agent.gateway.frame_verifier import FrameVerifier
from agent.gateway.pipeline import Pipeline
from agent.gateway.receipts import ReceiptLedger, ReceiptRouter
from agent.gateway.sources.mqtt import INVALID_TOPIC, LocalBroker
from agent.shared import log as agent_log
from agent.shared.log import Fields, logfmt
from agent.shared.registry import Device, Registry
from hil_tests.sim.tools import FIRMWARE_DIR

sys.path.insert(0, str(FIRMWARE_DIR / "lib"))
import frame as fwframe  # firmware modules, found through the path above

# a logfmt pair: key=bare or key="quoted with \" and \\ escapes"
_PAIR = re.compile(r'([A-Za-z0-9_]+)=("(?:[^"\\]|\\.)*"|[^ "=]*)(?: |$)')


def parse(line: str) -> dict[str, str]:
    """The key=value pairs after the event name; AssertionError when the line is not logfmt."""
    event, _, rest = line.partition(" ")
    assert re.fullmatch(r"[a-z_]+", event), line
    pairs: dict[str, str] = {}
    i = 0
    while i < len(rest):
        m = _PAIR.match(rest, i)
        assert m is not None, f"not logfmt at {i}: {rest!r}"
        assert m.group(1) not in pairs, f"field {m.group(1)} twice: {rest!r}"
        pairs[m.group(1)] = m.group(2)
        i = m.end()
    return pairs


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("AP-0001", "AP-0001"),
        ("", '""'),
        ("a b", '"a b"'),
        ("x reason=forged", '"x reason=forged"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak\r\t", '"line\\nbreak\\r\\t"'),
        ("\x00\x1b[31m", '"\\u0000\\u001b[31m"'),
        ("\u202eevil", '"\\u202eevil"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("café", '"café"'),
        (b"kid b", "\"b'kid b'\""),
    ],
)
def test_logfmt_values(value: object, written: str) -> None:
    assert logfmt(repr(value) if isinstance(value, bytes) else value) == written


@pytest.fixture
def agent_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(agent_log.Formatter(journald=False))
    lg = logging.getLogger("test.log")
    lg.addHandler(handler)
    lg.propagate = False
    lg.setLevel(logging.INFO)
    yield lg, out
    lg.removeHandler(handler)
    lg.propagate = True


def test_no_value_can_plant_a_field_or_a_line(agent_logger: tuple[logging.Logger, io.StringIO]) -> None:
    lg, out = agent_logger
    forged = 'AP-1 reason=ok\n<0>agent_started gateway=EVIL "x'
    record = lg.makeRecord(
        lg.name,
        logging.WARNING,
        __file__,
        1,
        "frame_rejected device=%s reason=%s detail=%r n=%d",
        (forged, "bad_mac", forged.encode(), 3),
        None,
    )
    lg.handle(record)
    lg.handle(record)
    lg.info("stats %s", Fields("accepted=1 rejected={'bad_mac':2}"))
    err = out.getvalue().splitlines()
    assert err[0] == err[1], "formatting a record twice gives the same line"
    del err[1]
    assert len(err) == 2, err
    fields = parse(err[0].split(" ", 3)[3])
    assert fields["reason"] == "bad_mac" and fields["n"] == "3" and set(fields) == {"device", "reason", "detail", "n"}
    assert err[1].endswith("test.log stats accepted=1 rejected={'bad_mac':2}")


def pipeline() -> tuple[Pipeline, Registry]:
    registry = Registry([Device("AP-0001", "alarm_post", bytes(32), "v", "hall")])
    router = ReceiptRouter("GW-T", registry)
    router.register("mqtt", lambda device, msg: None, default=True)

    class Commits:
        def submit(self, item: object) -> None: ...
        def submit_group(self, items: object, band_rows: object) -> None: ...

    p = Pipeline(
        "GW-T",
        FrameVerifier(registry),
        replay={},
        ledger=ReceiptLedger({}, router, registry),
        receipts=router,
        commits=Commits(),
        publish=lambda batch, oldest: None,
    )
    return p, registry


def test_junk_under_invented_ids_logs_once_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    p, _ = pipeline()
    caplog.set_level(logging.WARNING, logger="agent.gateway.pipeline")
    for i in range(10_000):
        device = f"X{i:05d}"
        p.ingest(fwframe.build(bytes(32), device, 1, 1, 1, 0, {}, 1), device, lambda: None, "mqtt")  # unknown_device
        p.ingest(b"\xa0junk%d" % i, device, lambda: None, "mqtt")  # malformed
        p.ingest(fwframe.build(bytes(range(32)), "AP-0001", 1, i + 1, 1, 0, {}, 1), "AP-0001", lambda: None)  # bad_mac
    assert p.counters.rejected == {"unknown_device": 10_000, "malformed": 10_000, "bad_mac": 10_000}
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.gateway.pipeline"]
    assert len(lines) == 3, lines


def test_a_topic_that_names_no_device_is_never_a_device() -> None:
    src = LocalBroker.__new__(LocalBroker)  # only the topic parser, no connection
    src._devices = {}
    topics = (b"ge/dev/AP-0001/up", b"ge/dev/a b reason=x/up", b"ge/dev//up", b"ge/dev/\xff\xfe/up", b"x/AP-0001/up")
    got = [src._device_of(topic) for topic in topics]
    assert got == ["AP-0001", INVALID_TOPIC, INVALID_TOPIC, INVALID_TOPIC, INVALID_TOPIC]
    # a frame of a registered device under an invalid topic is refused, not taken as topic-less
    p, _ = pipeline()
    frame = fwframe.build(bytes(32), "AP-0001", 1, 1, 1, 0, {}, 1)
    assert not p.ingest(frame, INVALID_TOPIC, lambda: None, "mqtt")
    assert p.counters.rejected == {"topic_mismatch": 1}
