# config.json of a device app: read, defaults applied, identity and key checked, and for a
# reporting device (alarm post, venue sensor) its link to the gateway (load_link). Errors
# name the file and the field and never show the key or the password. Each app checks its
# own settings with check_ints() and whatever else it needs. Configuration only: launch.py
# drops this module once the config is read, so none of it stays in the app's heap.
import json


class ConfigError(ValueError):
    pass


def id_ok(s):
    if not 1 <= len(s) <= 32:
        return False
    return all("A" <= c <= "Z" or "a" <= c <= "z" or "0" <= c <= "9" or c in "-_." for c in s)


def int_ok(v, low, high):
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def load(path, defaults, key_min=16, key_max=64):
    # -> dict: defaults, then the file; "id" checked, "key" turned from hex into bytes
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (path, e))
    except ValueError as e:
        raise ConfigError("%s: not valid JSON: %s" % (path, e))
    if not isinstance(raw, dict):
        raise ConfigError("%s: must hold a JSON object" % path)
    cfg = dict(defaults)
    cfg.update(raw)
    dev = cfg.get("id")
    if not isinstance(dev, str) or not id_ok(dev):
        raise ConfigError("%s: id must be 1-32 characters from A-Z a-z 0-9 - _ ." % path)
    key = cfg.get("key")
    try:
        key = bytes.fromhex(key) if isinstance(key, str) else None
    except ValueError:
        key = None
    if key is None or not key_min <= len(key) <= key_max:
        n = "%d" % key_min if key_min == key_max else "%d to %d" % (key_min, key_max)
        raise ConfigError("%s: key must be %s bytes in hex digits" % (path, n))
    cfg["key"] = key
    return cfg


# the link settings of every reporting device (lib/reporter.py, lib/link.py), and their limits
_LINK_DEFAULTS = {
    "transport": "mqtt",  # or "uart"
    "baud": 115200,  # UART line speed
    "port": 1883,
    "heartbeat_s": 60,
    "keepalive_s": 30,
    "resend_s": 5,
    "recheck_s": 60,
    "green_s": 30,
    "ack_s": 120,
    "outbox": 32,
    "data_dir": "data",
}
_LINK_LIMITS = (
    ("port", 1, 65535),
    ("heartbeat_s", 1, 86400),
    ("keepalive_s", 0, 65535),
    ("resend_s", 1, 3600),
    ("recheck_s", 1, 86400),
    ("green_s", 0, 86400),
    ("ack_s", 0, 86400),
    ("baud", 300, 4000000),
)


def load_link(path, defaults, limits):
    # load() for a reporting device: the link settings' defaults under the app's `defaults`,
    # the link checked (transport, broker, password, tls_ca) and every (name, low, high) of
    # the link's and the app's `limits`
    d = dict(_LINK_DEFAULTS)
    d.update(defaults)
    cfg = load(path, d)
    t = cfg.get("transport")
    if t != "mqtt" and t != "uart":
        raise ConfigError('%s: transport must be "mqtt" or "uart"' % path)
    if t == "mqtt" and (not isinstance(cfg.get("broker"), str) or not cfg["broker"]):
        raise ConfigError("%s: broker must be a host name or address" % path)
    # the local broker password (user name = device id), optional; the error never shows it
    pw = cfg.get("password")
    if pw is not None and (not isinstance(pw, str) or not 16 <= len(pw) <= 128 or not all("!" <= c <= "~" for c in pw)):
        raise ConfigError("%s: password must be 16-128 printable ASCII characters without spaces" % path)
    tls = cfg.get("tls_ca")
    if tls is not None and (not isinstance(tls, str) or not tls):
        raise ConfigError("%s: tls_ca must be the path of the broker's CA certificate (DER)" % path)
    check_ints(cfg, path, _LINK_LIMITS + limits)
    return cfg


def check_ints(cfg, path, limits):
    # limits: (name, low, high) for settings that must be integers in range
    for name, low, high in limits:
        if not int_ok(cfg.get(name), low, high):
            raise ConfigError("%s: %s must be an integer from %d to %d" % (path, name, low, high))
