"""TLS to an MQTT broker: only the configured CA is trusted (no system store), the host name is checked.

Used by the gateway's uplink and local broker ([central.tls], [local.tls]) and by central's
command sender.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from agent.shared.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS to a broker: only ca_file is trusted (no system store); host name checked."""

    ca_file: Path
    cert_file: Path | None
    key_file: Path | None


def tls_context(tls: TlsConfig, where: str = "central.tls.") -> ssl.SSLContext:
    """A client context trusting only tls.ca_file, host name checked; ConfigError names the key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname, no CAs loaded
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}ca_file: expected a PEM CA certificate in {tls.ca_file}: {exc}") from exc
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{where}cert_file: expected a PEM certificate in {tls.cert_file} matching the key in key_file: {exc}"
            ) from exc
    return ctx
