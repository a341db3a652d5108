"""The status page's view as terminal text, for `guardian-agent status` (the same figures as the page).

Times are the machine's local time (on the gateway: the venue's) and, for recency, relative to
the gateway's clock in the view (`now_ms`).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

RECEIPT_NAMES = ("stored", "delivered", "acknowledged")


def duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = max(0, round(ms / 1000))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def local_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%H:%M:%S")


def _width(text: str) -> int:
    # CJK zone names take two columns in a terminal
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def render(view: dict[str, Any]) -> str:
    """The whole view as text lines."""
    gw = view["gateway"]
    now = gw["now_ms"]
    lines = [
        f"{gw['id']} at {gw['venue']}, up {duration(gw['uptime_s'] * 1000)}, "
        f"{dt.datetime.fromtimestamp(now / 1000).astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}"
    ]
    if view["problems"]:
        lines.append("NEEDS ATTENTION")
        lines += [f"  ! {p}" for p in view["problems"]]
    else:
        lines.append("all well: central and the local broker are connected; nothing is waiting")
    lines += _health(view["health"])
    lines += _events(view["events"], now)
    lines += _devices(view["devices"], now)
    if view["scanners"]:
        lines.append("BLE scanners")
        lines += _table(
            [
                [
                    s["name"],
                    s["backend"],
                    f"blind (restarts {s['restarts']})" if s["blind"] else ("scanning" if s["running"] else "starting"),
                    f"last advert {duration(int(s['silent_s'] * 1000))} ago",
                ]
                for s in view["scanners"]
            ]
        )
    lines.append("Rejected input (last hour / since start)")
    rejects = [[r["source"], r["reason"], f"{r['last_hour']} / {r['total']}"] for r in view["rejects"]]
    lines += _table(rejects) or ["  nothing rejected since the agent started"]
    lines.append("Counters since start")
    lines += _table([[k.replace("_", " "), str(v)] for k, v in view["counters"].items()])
    return "\n".join(lines) + "\n"


def _health(h: dict[str, Any]) -> list[str]:
    lanes = h["buffer"]["lanes"]
    d = h["disk"]
    disk = (
        f"unreadable: {d['error']}"
        if "error" in d
        else f"{size(d['free_bytes'])} free of {size(d['total_bytes'])} (buffer {size(d['buffer_bytes'])})"
    )
    rows = [
        [
            "central",
            f"{'connected' if h['uplink']['up'] else 'DOWN'} ({h['uplink']['inflight_batches']} batches awaiting ack)",
        ],
        ["local broker", "connected" if h["local_broker"]["up"] else "DOWN"],
        *[
            [f"buffer {lane['lane']}", f"{lane['events']} waiting ({size(lane['bytes'])}), {lane['evicted']} evicted"]
            for lane in lanes
        ],
        [
            "oldest undelivered",
            duration(h["buffer"]["oldest_undelivered_ms"]) if h["buffer"]["oldest_undelivered_ms"] else "none",
        ],
        ["disk", disk],
    ]
    if h["buffer"]["store_error"]:
        rows.append(["store error", h["buffer"]["store_error"]])
    return ["Health", *_table(rows)]


def _events(events: list[dict[str, Any]], now: int) -> list[str]:
    out = ["Alarms and alerts (newest first; receipts 1 stored, 2 delivered, 3 acknowledged)"]
    rows = []
    for e in events:
        marks = " ".join(
            str(i + 1) if e[f"{name}_ms"] is not None else "-"
            for i, name in enumerate(("stored", "delivered", "acked"))
        )
        rows.append(
            [
                local_time(e["received_ms"]),
                f"{e['type_name']} P{e['priority']}",
                e["ref"],
                e["zone"] or "-",
                f"receipts {marks}" + (" DROPPED" if e["dropped"] else ""),
                "-" if e["latency_ms"] is None else f"{e['latency_ms']} ms",
            ]
        )
    return out + (_table(rows) or ["  none since the agent started"])


def _devices(devices: list[dict[str, Any]], now: int) -> list[str]:
    rows = []
    for d in devices:
        heard = "-" if d["last_heard_ms"] is None else f"heard {duration(now - d['last_heard_ms'])} ago"
        rows.append(
            [
                d["id"],
                d["kind"].replace("_", " "),
                d["zone"],
                d["state"],
                heard,
                "battery -" if d["battery"] is None else f"battery {d['battery']} %",
                "rssi -" if d["rssi"] is None else f"rssi {d['rssi']} dBm ({d['scanner']})",
                f"fw {d['firmware'] or '-'}",
            ]
        )
    return ["Devices", *(_table(rows) or ["  none registered"])]
