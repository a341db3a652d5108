"""Messages people can read: Chinese and English texts for every alert, follow-up and notice.

A message names the resident by the reference the home chose (never a key or band secret),
the zone, the local time in the venue's time zone, what happened and what to do, and carries
the acknowledgement link. Texts are short enough for one or two SMS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.notify.alert import (
    Alert,
)
from agent.shared.protocol import EventType, type_name

if TYPE_CHECKING:
    from agent.notify.circle import Circle

LANGUAGES = ("zh", "en")
LATE_S = 60  # an alert older than this when sent says how old it is

# what happened, per type and language; {who} {zone} {device} {name} {pct} {min} are filled in
WHAT: dict[str, dict[int, str]] = {
    "en": {
        EventType.SOS: "{who} pressed the SOS button{at_zone}.",
        EventType.FALL: "{who} may have fallen{at_zone}.",
        EventType.EXIT: "{who} has left the safe area: seen at {zone}{from_zone}.",
        EventType.MISSING: "{who} has not been heard by any scanner for {min} min{last_zone}.",
        EventType.STRAP_REMOVED: "{who}'s wristband is off (strap open or not worn).",
        EventType.BATTERY_LOW: "{who}'s wristband battery is low ({pct} %): please charge it.",
        EventType.SCANNER_BLIND: "{who} cannot be located: the scanners{at_zone} hear nothing.",
        EventType.ALARM: "Alarm post {device}{at_place} was pressed.",
        EventType.ALARM_HELD: "Alarm post {device}{at_place} was held down (urgent).",
        EventType.SMOKE: "Smoke detected by {device}{at_place} ({name}).",
        EventType.GAS: "Gas detected by {device}{at_place} ({name}).",
        EventType.TAMPER: "Device {device}{at_place} was opened (tamper switch).",
        EventType.DOOR_HELD_OPEN: "Fire door {name} ({device}{at_place}) is standing open.",
        EventType.EXTINGUISHER: "Extinguisher {name} ({device}{at_place}): low pressure or off its bracket.",
        EventType.SENSOR_FAULT: "Sensor {name} ({device}{at_place}) reports a fault.",
        EventType.DEVICE_OFFLINE: "{subject}{at_place} stopped reporting {min} min ago.",
    },
    "zh": {
        EventType.SOS: "{who}{at_zone}按下了紧急求助按钮。",
        EventType.FALL: "{who}{at_zone}可能跌倒了。",
        EventType.EXIT: "{who}已离开安全区域：出现在{zone}{from_zone}。",
        EventType.MISSING: "{who}已有{min}分钟未被任何接收器检测到{last_zone}。",
        EventType.STRAP_REMOVED: "{who}的手环已摘下（表带打开或未佩戴）。",
        EventType.BATTERY_LOW: "{who}的手环电量低（{pct}%），请充电。",
        EventType.SCANNER_BLIND: "无法定位{who}：{zone}的接收器没有信号。",
        EventType.ALARM: "报警按钮{device}{at_place}被按下。",
        EventType.ALARM_HELD: "报警按钮{device}{at_place}被长按（紧急）。",
        EventType.SMOKE: "{device}{at_place}（{name}）检测到烟雾。",
        EventType.GAS: "{device}{at_place}（{name}）检测到可燃气体。",
        EventType.TAMPER: "设备{device}{at_place}被打开（防拆开关）。",
        EventType.DOOR_HELD_OPEN: "防火门{name}（{device}{at_place}）一直开着。",
        EventType.EXTINGUISHER: "灭火器{name}（{device}{at_place}）压力低或不在支架上。",
        EventType.SENSOR_FAULT: "传感器{name}（{device}{at_place}）故障。",
        EventType.DEVICE_OFFLINE: "{subject}{at_place}已{min}分钟没有上报。",
    },
}

# a venue SCANNER_BLIND about an exit zone (Alert.exit_watch): not watched (0), watched again (1)
EXIT_WATCH: dict[str, tuple[str, str]] = {
    "en": (
        "Exit {zone} is not watched: scanner(s) {scanners} down since {since}. Residents leaving there are not seen.",
        "Exit {zone} is watched again: scanner {scanner} is back.",
    ),
    "zh": (
        "出口{zone}无人监测：接收器{scanners}自{since}起离线，从该处离开的住户不会被发现。",
        "出口{zone}已恢复监测：接收器{scanner}已恢复。",
    ),
}
# a gateway SCANNER_BLIND about one scanner that heard nothing and was restarted
SCANNER_RESTARTED = {
    "en": "BLE scanner {scanner} heard no band for {min} min and was restarted.",
    "zh": "蓝牙接收器{scanner}已{min}分钟未收到任何手环信号，已重新启动。",
}
EXIT_WATCH_TITLE = {"en": ("Exit not watched", "Exit watched again"), "zh": ("出口无人监测", "出口恢复监测")}

TODO: dict[str, dict[str, str]] = {
    "en": {
        "urgent": "Call the home or go to them now. If nobody acknowledges, the next contact and then staff are told.",
        "whereabouts": "Check where they are now; the home's staff can help.",
        "venue": "Go there now and follow the venue's emergency plan.",
        "check": "Please check the device.",
        "exit": "Check the scanner's power and network; until it is back, have someone watch that exit.",
        "info": "",
    },
    "zh": {
        "urgent": "请立即联系护理院或前往查看。若无人确认，将依次通知下一位联系人和值班人员。",
        "whereabouts": "请确认其当前位置，护理院工作人员可以协助。",
        "venue": "请立即前往现场，并按照应急预案处理。",
        "check": "请检查该设备。",
        "exit": "请检查接收器的电源和网络；恢复之前请安排人员看守该出口。",
        "info": "",
    },
}

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "{what_short}: {who} ({venue})",
        "time": "Time: {time}",
        "late": "(reported late: {min} min ago)",
        "ack": "I'm on it: {link}",
        "reply": "Or reply OK {code}",
        "acked": "{by} acknowledged this at {time}. No need to act unless they ask.",
        "acked_title": "Acknowledged: {what_short} {who}",
        "back_exit": "{who} is back inside{at_zone} at {time} (away {min} min).",
        "back_missing": "{who} is heard again{at_zone} at {time}.",
        "online": "{subject} is reporting again at {time}.",
        "clear": "{name} ({device}): {ended} is over at {time}.",
        "resolved_title": "Resolved: {what_short} {who}",
        "failing": "Messages to {contact} on {channel} keep failing ({attempts} attempts, last: {error}). "
        "Please check the channel.",
        "failing_title": "Notification channel failing ({venue})",
        "test": "Test message from {venue}: this channel works. No action needed.",
        "test_title": "Guardian Edge test",
        "zone_at": " in {zone}",
        "from_zone": " (last zone: {zone}, {min} min ago)",
        "last_zone": " (last seen in {zone} at {time})",
        "someone": "A resident",
    },
    "zh": {
        "title": "{what_short}：{who}（{venue}）",
        "time": "时间：{time}",
        "late": "（延迟送达：{min}分钟前发生）",
        "ack": "确认并处理：{link}",
        "reply": "或回复 OK {code} 确认",
        "acked": "{by}已于{time}确认处理。如无特别请求，您无需操作。",
        "acked_title": "已确认：{what_short} {who}",
        "back_exit": "{who}已于{time}回到室内{at_zone}（离开{min}分钟）。",
        "back_missing": "{who}已于{time}重新被检测到{at_zone}。",
        "online": "{subject}已于{time}恢复上报。",
        "clear": "{name}（{device}）：{ended}已于{time}解除。",
        "resolved_title": "已解除：{what_short} {who}",
        "failing": "发给{contact}的消息在{channel}上持续失败（已尝试{attempts}次，最后错误：{error}）。请检查该渠道。",
        "failing_title": "通知渠道故障（{venue}）",
        "test": "来自{venue}的测试消息：此渠道工作正常，无需操作。",
        "test_title": "Guardian Edge 测试",
        "zone_at": "在{zone}",
        "from_zone": "（最后所在区域：{zone}，{min}分钟前）",
        "last_zone": "（最后于{time}出现在{zone}）",
        "someone": "一位住户",
    },
}

SHORT: dict[str, dict[int, str]] = {
    "en": {
        EventType.SOS: "SOS",
        EventType.FALL: "Fall",
        EventType.EXIT: "Left the home",
        EventType.MISSING: "Missing",
        EventType.STRAP_REMOVED: "Band off",
        EventType.BATTERY_LOW: "Band battery low",
        EventType.SCANNER_BLIND: "Cannot locate",
        EventType.ALARM: "Alarm",
        EventType.ALARM_HELD: "Alarm (held)",
        EventType.SMOKE: "SMOKE",
        EventType.GAS: "GAS",
        EventType.TAMPER: "Tamper",
        EventType.DOOR_HELD_OPEN: "Fire door open",
        EventType.EXTINGUISHER: "Extinguisher",
        EventType.SENSOR_FAULT: "Sensor fault",
        EventType.DEVICE_OFFLINE: "Device offline",
        EventType.DEVICE_ONLINE: "Device online",
    },
    "zh": {
        EventType.SOS: "紧急求助",
        EventType.FALL: "跌倒",
        EventType.EXIT: "离开护理院",
        EventType.MISSING: "失去联系",
        EventType.STRAP_REMOVED: "手环摘下",
        EventType.BATTERY_LOW: "手环电量低",
        EventType.SCANNER_BLIND: "无法定位",
        EventType.ALARM: "报警",
        EventType.ALARM_HELD: "报警（长按）",
        EventType.SMOKE: "烟雾报警",
        EventType.GAS: "燃气报警",
        EventType.TAMPER: "防拆报警",
        EventType.DOOR_HELD_OPEN: "防火门未关",
        EventType.EXTINGUISHER: "灭火器异常",
        EventType.SENSOR_FAULT: "传感器故障",
        EventType.DEVICE_OFFLINE: "设备离线",
        EventType.DEVICE_ONLINE: "设备恢复",
    },
}


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str


def local_time(ms: int, circle: Circle, lang: str) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).astimezone(circle.timezone)
    if lang == "zh":
        return f"{t.month}月{t.day}日 {t:%H:%M}"
    return f"{t:%H:%M} on {t.day} {t:%b}"


def _todo(alert: Alert) -> str:
    watch = alert.exit_watch
    if watch is not None:
        return "exit" if watch["watched"] == 0 else "info"
    if alert.type in (EventType.SOS, EventType.FALL):
        return "urgent"
    if alert.type in (EventType.EXIT, EventType.MISSING, EventType.SCANNER_BLIND) and alert.wristband:
        return "whereabouts"
    if alert.type in (EventType.ALARM, EventType.ALARM_HELD, EventType.SMOKE, EventType.GAS):
        return "venue"
    if alert.type in (
        EventType.DEVICE_OFFLINE,
        EventType.TAMPER,
        EventType.SENSOR_FAULT,
        EventType.EXTINGUISHER,
        EventType.DOOR_HELD_OPEN,
    ):
        return "check"
    return "info"


def _minutes(ms: int) -> int:
    return max(0, round(ms / 60000))


def _fields(alert: Alert, circle: Circle, lang: str, now_ms: int, places: Mapping[str, str]) -> dict[str, Any]:
    w = WORDS[lang]
    ctx = alert.context
    who = circle.reference(alert) or w["someone"]
    zone = alert.zone or ""
    subject_device = (
        alert.data.get("1") if alert.type in (EventType.DEVICE_OFFLINE, EventType.DEVICE_ONLINE) else alert.device
    )
    place = places.get(str(subject_device), "")
    f: dict[str, Any] = {
        "who": who,
        "zone": zone,
        "at_zone": w["zone_at"].format(zone=zone) if zone else "",
        "device": alert.device,
        "subject": str(subject_device),
        "at_place": f" ({place})" if place and lang == "en" else f"（{place}）" if place else "",
        "name": str(alert.data.get("3", "")) if not alert.wristband else "",
        "pct": ctx.get("battery_pct", "?"),
        "min": _minutes(now_ms - alert.received_ms),
        "venue": circle.name,
        "time": local_time(alert.received_ms, circle, lang),
        "from_zone": "",
        "last_zone": "",
        "what_short": SHORT[lang].get(alert.type, type_name(alert.type)),
    }
    if alert.type == EventType.EXIT and isinstance(ctx.get("from_zone"), str):
        f["from_zone"] = w["from_zone"].format(zone=ctx["from_zone"], min=f["min"])
    if alert.type == EventType.MISSING:
        unheard = ctx.get("unheard_s")
        if isinstance(unheard, int):
            f["min"] = _minutes(unheard * 1000 + now_ms - alert.received_ms)
        if zone:
            f["last_zone"] = w["last_zone"].format(zone=zone, time=_clock(ctx.get("last_seen"), circle, lang))
    if alert.type == EventType.DEVICE_OFFLINE:
        silent = alert.data.get("2")
        f["min"] = _minutes((silent if isinstance(silent, int) else 0) + now_ms - alert.received_ms)
    return f


def _clock(iso: Any, circle: Circle, lang: str) -> str:
    if not isinstance(iso, str):
        return "?"
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return "?"
    return local_time(int(t.timestamp() * 1000), circle, lang)


def alert_message(
    alert: Alert,
    circle: Circle,
    lang: str,
    now_ms: int,
    link: str | None = None,
    places: Mapping[str, str] | None = None,
    repeat: bool = False,
    reply_code: str | None = None,
) -> Message:
    """The first message about an alert."""
    f = _fields(alert, circle, lang, now_ms, places or {})
    w = WORDS[lang]
    watch = alert.exit_watch
    if watch is not None:
        watched = watch["watched"]  # 0 or 1 (Alert.exit_watch)
        what = EXIT_WATCH[lang][watched].format(
            zone=watch.get("zone", "?"),
            scanners=watch.get("scanners_down", alert.data.get("1", "?")),
            since=_clock(watch.get("since"), circle, lang),
            scanner=watch.get("scanner", "?"),
        )
        f["what_short"] = EXIT_WATCH_TITLE[lang][watched]
    elif alert.type == EventType.SCANNER_BLIND and not alert.wristband:
        blind = alert.data.get("2")
        what = SCANNER_RESTARTED[lang].format(
            scanner=alert.data.get("1", "?"), min=_minutes(blind if isinstance(blind, int) else 0)
        )
    else:
        what = WHAT[lang].get(alert.type, "{what_short}: {device}").format(**f)
    lines = [what, w["time"].format(time=f["time"])]
    if now_ms - alert.received_ms > LATE_S * 1000:
        lines.append(w["late"].format(min=_minutes(now_ms - alert.received_ms)))
    todo = TODO[lang][_todo(alert)]
    if todo:
        lines.append(todo)
    if link is not None:
        lines.append(w["ack"].format(link=link))
    if reply_code is not None:
        lines.append(w["reply"].format(code=reply_code))
    title = w["title"].format(**f) if alert.wristband else f"{f['what_short']} ({circle.name})"
    if repeat:
        title = ("(repeat) " if lang == "en" else "（重发）") + title
    return Message(title, "\n".join(lines))


def followup_message(
    closer: Alert, alert: Alert, circle: Circle, lang: str, now_ms: int, places: Mapping[str, str] | None = None
) -> Message:
    """The message that closes the loop on `alert` (BACK_INSIDE, DEVICE_ONLINE, SENSOR_CLEAR)."""
    w = WORDS[lang]
    f = _fields(alert, circle, lang, now_ms, places or {})
    cf = _fields(closer, circle, lang, now_ms, places or {})
    time = local_time(closer.received_ms, circle, lang)
    if alert.type == EventType.EXIT:
        away = closer.context.get("away_s")
        minutes = _minutes(away * 1000) if isinstance(away, int) else _minutes(closer.received_ms - alert.received_ms)
        body = w["back_exit"].format(who=f["who"], at_zone=cf["at_zone"], time=time, min=minutes)
    elif alert.type == EventType.MISSING:
        body = w["back_missing"].format(who=f["who"], at_zone=cf["at_zone"], time=time)
    elif alert.type == EventType.DEVICE_OFFLINE:
        body = w["online"].format(subject=f["subject"], time=time)
    else:
        ended = SHORT[lang].get(alert.type, type_name(alert.type))
        body = w["clear"].format(name=f["name"], device=alert.device, ended=ended, time=time)
    return Message(
        w["resolved_title"].format(what_short=f["what_short"], who=f["who"] if alert.wristband else ""), body
    )


def acked_message(alert: Alert, circle: Circle, lang: str, by: str, at_ms: int, now_ms: int) -> Message:
    """To those already told: someone acknowledged, so they can stand down."""
    w = WORDS[lang]
    f = _fields(alert, circle, lang, now_ms, {})
    who = f["who"] if alert.wristband else f"({circle.name})"
    return Message(
        w["acked_title"].format(what_short=f["what_short"], who=who),
        w["acked"].format(by=by, time=local_time(at_ms, circle, lang)),
    )


def failing_message(circle: Circle, lang: str, contact: str, channel: str, attempts: int, error: str) -> Message:
    w = WORDS[lang]
    return Message(
        w["failing_title"].format(venue=circle.name),
        w["failing"].format(contact=contact, channel=channel, attempts=attempts, error=error),
    )


def channel_test_message(circle: Circle, lang: str) -> Message:
    w = WORDS[lang]
    return Message(w["test_title"], w["test"].format(venue=circle.name))
