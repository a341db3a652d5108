"""The venue's Wi-Fi credentials for boards that reach the broker over Wi-Fi.

An alarm post or venue sensor on an ESP32 or a Pico W with the MQTT transport joins the
venue's network with the credentials in its config.json ("wifi": {"ssid", "password"},
firmware/hal/__init__.py). The technician gives them to `guardian-provision flash` in a file
or in the environment, never on the command line (a command line is visible to every user
of the machine in `ps` and lands in shell histories):

    --wifi FILE            TOML with `ssid = "..."` and `password = "..."`, mode 0600
    $GE_WIFI_SSID and $GE_WIFI_PASSWORD    when no --wifi is given

They are checked as WPA2-Personal takes them (SSID 1-32 bytes; passphrase 8-63 printable
ASCII characters, or 64 hex digits for a raw PSK; an empty password for an open network) and
never printed: errors name the file or variable and what is wrong, not the value, and the
object's repr hides the password.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.errors import ProvisionError

ENV_SSID = "GE_WIFI_SSID"
ENV_PASSWORD = "GE_WIFI_PASSWORD"  # noqa: S105 - the variable's name, not a password
MAX_FILE = 4096
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class WifiCredentials:
    ssid: str
    password: str = field(repr=False)
    source: str = ""  # where they came from (a file name or the variables), for messages

    def config(self) -> dict[str, str]:
        """The "wifi" object of config.json."""
        return {"ssid": self.ssid, "password": self.password}


def check(ssid: object, password: object, where: str) -> WifiCredentials:
    """Credentials checked as WPA2-Personal takes them; ProvisionError naming `where`, never the value."""
    if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
        raise ProvisionError(f"{where}: ssid must be 1-32 bytes of text")
    if not ssid.isprintable():
        raise ProvisionError(f"{where}: ssid must not hold control characters")
    if not isinstance(password, str):
        raise ProvisionError(f"{where}: password must be a string (the value is not shown)")
    if password:
        psk = len(password) == 64 and set(password) <= _HEX
        ascii_ok = password.isascii() and password.isprintable() and 8 <= len(password) <= 63
        if not (psk or ascii_ok):
            raise ProvisionError(
                f"{where}: password must be 8-63 printable ASCII characters or 64 hex digits "
                "(WPA2-Personal), or empty for an open network (the value is not shown)"
            )
    return WifiCredentials(ssid, password, where)


def from_file(path: Path) -> WifiCredentials:
    """Credentials from a TOML file that only its owner can read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ProvisionError(f"--wifi {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ProvisionError(f"--wifi {path}: not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisionError(
            f"--wifi {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read the Wi-Fi password; "
            f"run: chmod 600 {path}"
        )
    if st.st_size > MAX_FILE:
        raise ProvisionError(f"--wifi {path}: larger than {MAX_FILE} bytes")
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except OSError as exc:
        raise ProvisionError(f"--wifi {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ProvisionError(f"--wifi {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError:
        # the parser's message may quote the line, and so the password: not shown
        raise ProvisionError(f'--wifi {path}: not valid TOML (expected ssid = "..." and password = "...")') from None
    unknown = sorted(set(data) - {"ssid", "password"})
    if unknown:
        raise ProvisionError(f"--wifi {path}: unknown key {unknown[0]!r} (known: ssid, password)")
    if "password" not in data:
        raise ProvisionError(f'--wifi {path}: password is missing (password = "" for an open network)')
    return check(data.get("ssid"), data["password"], f"--wifi {path}")


def from_environment(environ: Mapping[str, str] | None = None) -> WifiCredentials | None:
    """Credentials from $GE_WIFI_SSID and $GE_WIFI_PASSWORD, or None when neither is set."""
    env = os.environ if environ is None else environ
    ssid, password = env.get(ENV_SSID), env.get(ENV_PASSWORD)
    if ssid is None and password is None:
        return None
    if ssid is None or password is None:
        missing = ENV_SSID if ssid is None else ENV_PASSWORD
        raise ProvisionError(f"${missing} is not set (${ENV_SSID} and ${ENV_PASSWORD} go together)")
    return check(ssid, password, f"${ENV_SSID}/${ENV_PASSWORD}")


def credentials(path: Path | None, environ: Mapping[str, str] | None = None) -> WifiCredentials | None:
    """The --wifi file's credentials, else the environment's, else None."""
    return from_file(path) if path is not None else from_environment(environ)
