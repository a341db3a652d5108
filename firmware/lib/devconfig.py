# config.json of a device app: read, defaults applied, identity and key checked. Errors name
# the file and the field and never show the key. Each app checks its own settings with
# check_ints() and whatever else it needs.
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
        if key_min == key_max:
            raise ConfigError("%s: key must be %d hex digits (%d bytes)" % (path, 2 * key_min, key_min))
        raise ConfigError(
            "%s: key must be %d to %d hex digits (%d to %d bytes)" % (path, 2 * key_min, 2 * key_max, key_min, key_max)
        )
    cfg["key"] = key
    return cfg


def check_password(cfg, path):
    # the local broker password (user name = device id), optional: 16-128 printable ASCII
    # characters without spaces; the error never shows it
    pw = cfg.get("password")
    if pw is None:
        return
    if not isinstance(pw, str) or not 16 <= len(pw) <= 128 or not all("!" <= c <= "~" for c in pw):
        raise ConfigError("%s: password must be 16-128 printable ASCII characters without spaces" % path)


def check_ints(cfg, path, limits):
    # limits: (name, low, high) for settings that must be integers in range
    for name, low, high in limits:
        if not int_ok(cfg.get(name), low, high):
            raise ConfigError("%s: %s must be an integer from %d to %d" % (path, name, low, high))
