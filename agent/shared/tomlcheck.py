"""Reading TOML files with errors that name the file, the key and what was expected."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from agent.shared.errors import ConfigError
from agent.shared.protocol import IDENT_RE

_MISSING = object()


def load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise ConfigError(f"{path}: cannot read it (permission denied)") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc


def require_private(path: Path, what: str) -> None:
    """Refuse a secret-bearing file that other users can read (invariant 7)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: mode {stat.S_IMODE(mode):04o} lets other users read {what}; run: chmod 600 {path}")


class Errors:
    """Every error found in one file, so that a check reports them all rather than the first.

    One message per dotted key (the first found: a value that is wrong once is not reported
    again by the checks that follow); `check()` raises them together.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._keys: set[str] = set()

    def add(self, key: str, message: str) -> None:
        if key not in self._keys:
            self._keys.add(key)
            self.messages.append(f"{self.path}: {key}: {message}")

    def add_message(self, message: str) -> None:
        """An error raised by code that stops at its first one (the message names file and key)."""
        if message not in self.messages:
            self.messages.append(message)

    def failed(self, key: str) -> bool:
        """Was an error recorded for `key`, or for a table that holds it?"""
        return any(key == k or key.startswith(k + ".") or key.startswith(k + "[") for k in self._keys)

    def check(self) -> None:
        """Raise ConfigError with every error found, one per line; nothing when there was none."""
        if len(self.messages) == 1:
            raise ConfigError(self.messages[0])
        if self.messages:
            raise ConfigError(f"{len(self.messages)} errors:\n" + "\n".join(self.messages))


class Table:
    """A TOML table being read; every getter names the file and the dotted key on error.

    Without `errors` the first error raises ConfigError. With an `Errors` collector (shared by
    the tables read from it) a getter records the error and returns a stand-in of the right
    type (the default when there is one), so that reading goes on and finds the next error;
    the caller raises them all with `errors.check()` at the end.
    """

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "", errors: Errors | None = None) -> None:
        self.path = path
        self.data = data
        self.prefix = prefix
        self.errors = errors
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}: {self.prefix}{key}"

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._where(key)}: {message}")

    def error(self, key: str, message: str) -> None:
        """Report an error for `key`: raised at once, or recorded when collecting."""
        if self.errors is None:
            raise self.fail(key, message)
        self.errors.add(f"{self.prefix}{key}", message)

    def _bad(self, key: str, message: str, stand_in: Any) -> Any:
        self.error(key, message)
        return stand_in

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                return self._bad(key, "missing (required)", _MISSING)
            return default
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is _MISSING:
            return ""
        if value is not default and not isinstance(value, str):
            return self._bad(key, f"expected a string, got {type(value).__name__} {value!r}", "")
        return value

    def ident(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is _MISSING:
            return "invalid"
        if value is not default and (not isinstance(value, str) or not IDENT_RE.fullmatch(value)):
            return self._bad(key, f"expected 1-32 characters from A-Z a-z 0-9 . _ -, got {value!r}", "invalid")
        return value

    def integer(self, key: str, default: Any = _MISSING, lo: int | None = None, hi: int | None = None) -> Any:
        value = self._get(key, default)
        stand_in = default if default is not _MISSING else (lo if lo is not None else 0)
        if value is _MISSING:
            return stand_in
        if value is default:
            return value
        if type(value) is not int:
            return self._bad(key, f"expected an integer, got {type(value).__name__} {value!r}", stand_in)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return self._bad(key, f"expected an integer in {lo}..{hi}, got {value}", stand_in)
        return value

    def number(self, key: str, default: Any = _MISSING, lo: float | None = None, hi: float | None = None) -> Any:
        value = self._get(key, default)
        stand_in = default if default is not _MISSING else (lo if lo is not None else 0.0)
        if value is _MISSING:
            return stand_in
        if value is default:
            return value
        if type(value) not in (int, float):
            return self._bad(key, f"expected a number, got {type(value).__name__} {value!r}", stand_in)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return self._bad(key, f"expected a number in {lo}..{hi}, got {value}", stand_in)
        return float(value)

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        stand_in = default if default is not _MISSING else False
        if value is _MISSING:
            return stand_in
        if value is not default and not isinstance(value, bool):
            return self._bad(key, f"expected true or false, got {value!r}", stand_in)
        return value

    def address(self, key: str, default: Any = _MISSING) -> Any:
        """A "HOST:PORT" string as (host, port)."""
        value = self._get(key, default)
        stand_in = default if default is not _MISSING else ("invalid", 1)
        if value is _MISSING:
            return stand_in
        if value is default:
            return value
        if not isinstance(value, str):
            return self._bad(key, f"expected a string HOST:PORT, got {type(value).__name__} {value!r}", stand_in)
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip() or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            return self._bad(key, f"expected HOST:PORT (port 1..65535), got {value!r}", stand_in)
        return host, int(port)

    def path_value(self, key: str, base: Path, default: Any = _MISSING) -> Any:
        """A path; relative ones (given or defaulted) are taken relative to `base`."""
        raw = self.data.get(key, _MISSING)
        value = self.text(key, default)
        if value is None:
            return None
        if (raw is _MISSING and default is _MISSING) or (raw is not _MISSING and not isinstance(raw, str)):
            return base / "invalid"  # reported by text()
        if not value or "\0" in value:
            self.error(key, "expected a path, got " + ("one with a NUL character" if value else "an empty string"))
            return base / "invalid"
        p = Path(value)
        return p if p.is_absolute() else (base / p)

    def table(self, key: str, required: bool = True) -> Table:
        self.used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.error(key, "missing table (required)")
            value = {}
        if not isinstance(value, dict):
            self.error(key, f"expected a table, got {type(value).__name__}")
            value = {}
        return self._child(value, f"{self.prefix}{key}.")

    def tables(self, key: str) -> list[Table]:
        self.used.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(key, "expected an array of tables ([[...]])")
            return []
        return [self._child(v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def _child(self, data: dict[str, Any], prefix: str) -> Table:
        errors = self.errors
        if errors is not None and errors.failed(prefix.rstrip(".")):
            errors = Errors(self.path)  # the table itself is wrong: what is missing in it is not news
        return Table(self.path, data, prefix, errors)

    def no_unknown_keys(self) -> None:
        for key in sorted(set(self.data) - self.used):
            self.error(key, f"unknown key (known here: {', '.join(sorted(self.used))})")
