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


class Table:
    """A TOML table being read; every getter names the file and the dotted key on error."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}: {self.prefix}{key}"

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._where(key)}: {message}")

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self.fail(key, "missing (required)")
            return default
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {type(value).__name__} {value!r}")
        return value

    def ident(self, key: str, default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if value is not default and not IDENT_RE.fullmatch(value):
            raise self.fail(key, f"expected 1-32 characters from A-Z a-z 0-9 . _ -, got {value!r}")
        return value

    def integer(self, key: str, default: Any = _MISSING, lo: int | None = None, hi: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if type(value) is not int:
            raise self.fail(key, f"expected an integer, got {type(value).__name__} {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(key, f"expected an integer in {lo}..{hi}, got {value}")
        return value

    def number(self, key: str, default: Any = _MISSING, lo: float | None = None, hi: float | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if type(value) not in (int, float):
            raise self.fail(key, f"expected a number, got {type(value).__name__} {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(key, f"expected a number in {lo}..{hi}, got {value}")
        return float(value)

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def address(self, key: str, default: Any = _MISSING) -> Any:
        """A "HOST:PORT" string as (host, port)."""
        value = self.text(key, default)
        if value is default:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.fail(key, f"expected HOST:PORT (port 1..65535), got {value!r}")
        return host, int(port)

    def path_value(self, key: str, base: Path, default: Any = _MISSING) -> Any:
        """A path; relative ones (given or defaulted) are taken relative to `base`."""
        value = self.text(key, default)
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else (base / p)

    def table(self, key: str, required: bool = True) -> Table:
        self.used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self.fail(key, "missing table (required)")
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        return Table(self.path, value, f"{self.prefix}{key}.")

    def tables(self, key: str) -> list[Table]:
        self.used.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, "expected an array of tables ([[...]])")
        return [Table(self.path, v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def no_unknown_keys(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known here: {', '.join(sorted(self.used))})")
