"""Checks made on the host before any board is touched: the broker's address (and, online, that
an MQTT broker answers there), a sensor's channels as the sensor itself will judge them, and
the names people read.

- `broker_address`: HOST:PORT with a host that is a dotted IPv4 address (four numbers 0-255)
  or a DNS name (RFC 1123 labels), a port 1-65535; a typo such as 192.168.10.256 or
  192.168.10 is named, not accepted.
- `broker_answers`: a TCP connection and an MQTT CONNECT (paho-mqtt, which aiomqtt runs on);
  any CONNACK, even "not authorised", shows a broker is there.
- `check_channels`: the firmware's own `load_config` (firmware/apps/sensor/app.py, plain
  Python) runs in a child interpreter on the config.json the board would get, so a tuning the
  sensor would refuse at boot (a threshold out of range, `off` on the wrong side of `on`) is
  refused here, naming the `--channel` it came from; the board's self-test stays the final
  judge.
- `display_name`: a zone's or venue's name as people read it (UTF-8, 大厅), next to its
  ASCII id.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from provisioning.channels import SensorChannel
from provisioning.errors import ProvisionError

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
NAME_MAX = 48

_CHECK = """\
import sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + '/lib']
from apps.sensor import app
try:
    app.load_config(sys.argv[2])
except app.ConfigError as e:
    print('refused', e)
else:
    print('ok')
"""


def broker_address(text: str) -> tuple[str, int]:
    """HOST:PORT checked as a device will use it; ProvisionError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ProvisionError(f"--broker {text!r}: expected HOST:PORT, e.g. 192.168.10.2:1883")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ProvisionError(f"--broker {text!r}: the port must be a number from 1 to 65535, got {port!r}")
    if re.fullmatch(r"[0-9.]+", host):
        parts = host.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ProvisionError(f"--broker {text!r}: an IPv4 address has four numbers, e.g. 192.168.10.2")
        bad = [p for p in parts if int(p) > 255 or (len(p) > 1 and p[0] == "0")]
        if bad:
            raise ProvisionError(f"--broker {text!r}: {bad[0]} is not a number from 0 to 255")
    elif len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ProvisionError(f"--broker {text!r}: {host!r} is neither an IPv4 address nor a host name")
    return host, int(port)


def broker_answers(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when an MQTT broker answers at host:port, else why not (one line)."""

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answered: list[object] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ge-provision-probe")
    client.on_connect = lambda _c, _u, _f, rc, _p: answered.append(rc)
    try:
        client.connect(host, port, keepalive=10)
    except (TimeoutError, OSError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    try:
        for _ in range(int(timeout / 0.1)):
            client.loop(0.1)
            if answered:
                return None
    finally:
        client.disconnect()
    return "something accepted the connection but no MQTT broker answered"


def check_channels(channels: Sequence[SensorChannel], given: Sequence[str], firmware: Path) -> None:
    """The sensor's own config check on the channels; ProvisionError naming the --channel."""
    cfg = {
        "kind": "sensor", "id": "VS-CHECK", "key": "00" * 32, "transport": "mqtt",
        "broker": "127.0.0.1", "port": 1883, "channels": [c.config() for c in channels],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(cfg))
        run = subprocess.run(  # noqa: S603 - this interpreter, the firmware tree, a file made here
            [sys.executable, "-I", "-c", _CHECK, str(firmware), str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    out = run.stdout.strip()
    if out == "ok":
        return
    if not out.startswith("refused "):
        last = (run.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ProvisionError(f"the sensor's config check did not run ({last})")
    reason = out.removeprefix("refused ").replace(str(path), "config.json")
    m = re.search(r"channels\[(\d+)\] \([^)]*\): (.*)", reason)
    if m and int(m.group(1)) < len(given):
        raise ProvisionError(f"--channel {given[int(m.group(1))]!r}: {m.group(2)} (the sensor would refuse it)")
    raise ProvisionError(f"the sensor would refuse its config: {reason}")


def display_name(text: str, what: str) -> str:
    """A name people read (UTF-8): 1-48 printable characters, no leading or trailing space."""
    if not text or len(text) > NAME_MAX or not text.isprintable() or text.strip() != text:
        raise ProvisionError(f"{what} {text!r}: expected 1-{NAME_MAX} printable characters (any script)")
    return text
