"""`guardian-agent enroll`: the gateway enrolls itself with a claim (zero-touch enrollment).

New keys are made on the gateway and never leave it; the request (agent/shared/enroll_protocol.py)
goes over HTTPS to the URL the claim names, with the server's certificate pinned by the claim;
central's signed config is verified under the central key the claim pins before anything is
installed: the keys, central.pub (central's command key) and the agent config.
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import re
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.gateway.config import load_config
from agent.gateway.device_import import load_or_create_seal_key, seal_key_path
from agent.gateway.signer import load_or_create_key
from agent.shared.enroll_protocol import (
    CONTENT_TYPE,
    MAX_RESPONSE,
    SERIAL_RE,
    Claim,
    EnrolledConfig,
    EnrollError,
    build_request,
    check_url,
    load_claim,
    parse_config,
)
from agent.shared.errors import ConfigError
from agent.shared.files import fsync_dir, write_atomic
from agent.shared.keyfiles import KEY_ID, labelled_pem, public_pem, raw_public
from agent.shared.protocol import gateway_topics
from agent.shared.registry import write_registry

REASON_RE = re.compile(r"[a-z_]{1,32}")
KEY_FILE = "gateway.key"
# a refusal that no retry with the same claim can turn into a success: the keys made for it go
KEY_FILES = (KEY_FILE, KEY_FILE + ".pub", KEY_FILE + ".x25519", KEY_FILE + ".x25519.pub")
FINAL_REFUSALS = frozenset(
    {
        "malformed",
        "bad_signature",
        "wrong_central",
        "unknown_claim",
        "bad_proof",
        "expired",
        "not_allowed",
        "wrong_gateway",
        "claim_used",
        "revoked_key",
    }
)


def hardware_serial() -> str:
    """The Raspberry Pi's CPU serial, else an id derived from /etc/machine-id.

    machine-id is not sent as it is (systemd asks applications not to expose it): the id is
    HMAC-SHA256(machine-id, "guardian-edge enrollment"), cut to 16 bytes, as `mid-<hex>`.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    m = re.search(r"^Serial\s*:\s*([0-9A-Fa-f]{8,32})\s*$", cpuinfo, re.M)
    if m and m.group(1).strip("0"):
        return m.group(1).lower()
    for name in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            mid = Path(name).read_text().strip()
        except OSError:
            continue
        if re.fullmatch(r"[0-9a-f]{32}", mid):
            return "mid-" + hmac.digest(mid.encode(), b"guardian-edge enrollment", "sha256")[:16].hex()
    raise EnrollError("no_serial", "no Serial in /proc/cpuinfo and no /etc/machine-id; pass --serial")


def tls_client_context(cert_pem: str) -> ssl.SSLContext:
    """Trusts exactly the certificate the claim pins; host name checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=cert_pem)
    return ctx


def post(url: str, cert_pem: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    """POST `body` over TLS to the claim's URL; (HTTP status, response body)."""
    host, port, path = check_url(url)
    conn = http.client.HTTPSConnection(host, port, context=tls_client_context(cert_pem), timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": CONTENT_TYPE})
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE + 1)
        return resp.status, data
    except ssl.SSLCertVerificationError as exc:
        raise EnrollError(
            "tls", f"{host}:{port} did not present the certificate the claim pins ({exc.verify_message})"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollError("unreachable", f"{url}: {exc.__class__.__name__}: {exc}") from None
    finally:
        conn.close()


def refusal(status: int, data: bytes) -> tuple[str, str]:
    """(reason, detail) from an error response; untrusted, so checked and cut to printable text."""
    try:
        doc = json.loads(data[:1024])
        reason, detail = doc["error"], doc["detail"]
        if not isinstance(reason, str) or not REASON_RE.fullmatch(reason) or not isinstance(detail, str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return "bad_response", f"HTTP {status} without a readable error"
    return reason, "".join(c if " " <= c <= "~" else "?" for c in detail[:200])


def _config_text(cfg: EnrolledConfig, data_dir: Path, devices_file: Path, local: tuple[str, int], claim: Claim) -> str:
    def q(p: Path) -> str:
        return json.dumps(str(p))  # a JSON string is a valid TOML basic string

    return "\n".join(
        [
            f"# written by guardian-agent enroll: claim {cfg.claim}, signed by central key {claim.central_kid},",
            f"# issued at unix time {cfg.issued}. Local settings may be added below; enrolling again",
            "# rewrites this file (the previous one is kept as <file>.previous).",
            "[gateway]",
            f'id = "{cfg.gateway}"',
            f'venue = "{cfg.venue}"',
            f"data_dir = {q(data_dir)}",
            f'key_file = "{KEY_FILE}"',
            f"devices_file = {q(devices_file)}",
            "",
            "[local]",
            f"host = {json.dumps(local[0])}",
            f"port = {local[1]}",
            "",
            "[central]",
            f"host = {json.dumps(cfg.host)}",
            f"port = {cfg.port}",
            'command_key = "central.pub"',
            "",
        ]
    )


@dataclass(frozen=True, slots=True)
class Enrolled:
    config: EnrolledConfig
    out: Path
    data_dir: Path
    rotated: bool


def enroll(
    claim_path: Path,
    out: Path,
    data_dir: Path,
    devices_file: Path | None = None,
    local: tuple[str, int] = ("127.0.0.1", 1883),
    serial: str | None = None,
    timeout: float = 15.0,
) -> Enrolled:
    """Enroll this gateway with the claim; writes keys, central.pub and the agent config.

    Keys are made in `<data_dir>/enroll-<claim>/` and reused when the same claim is tried again
    (a lost response: central answers the same keys again). A final refusal removes them; the
    config, central.pub and the gateway's current keys change only after central's signed
    config verified.
    """
    claim = load_claim(claim_path)
    if serial is None:
        serial = hardware_serial()
    elif not SERIAL_RE.fullmatch(serial):
        raise EnrollError("bad_serial", f"--serial must be 1-64 characters from A-Z a-z 0-9 . _ : -, got {serial!r}")
    out, data_dir = Path(out).absolute(), Path(data_dir).absolute()
    devices_file = Path(devices_file).absolute() if devices_file else out.parent / "devices.toml"
    # directories this run creates: a final refusal removes them again
    made = [d for d in (data_dir, *data_dir.parents) if not d.exists()]
    pending = data_dir / f"enroll-{claim.id}"
    pending.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = load_or_create_key(pending / KEY_FILE, claim.gateway)
    seal, _ = load_or_create_seal_key(seal_key_path(pending / KEY_FILE), claim.gateway)

    status, data = post(claim.url, claim.tls_cert, build_request(claim, key, seal.public_key(), serial), timeout)
    if status != 200:
        reason, detail = refusal(status, data)
        if reason in FINAL_REFUSALS:
            shutil.rmtree(pending)
            for d in made:
                if d.exists() and not any(d.iterdir()):
                    d.rmdir()
        raise EnrollError(reason, f"central refused the enrollment (HTTP {status}): {detail}; nothing written")
    cfg = parse_config(data, claim.central_kid, claim.central_key)
    mine = (claim.gateway, claim.id, raw_public(key.public_key()), raw_public(seal.public_key()))
    if (cfg.gateway, cfg.claim, cfg.sign_key, cfg.seal_key) != mine:
        raise EnrollError("mismatch", "the signed config is for another gateway, claim or key; nothing written")
    if cfg.topics != gateway_topics(cfg.venue, cfg.gateway):
        raise EnrollError(
            "unsupported_topics",
            f"central names topics {list(cfg.topics)}, this agent uses {list(gateway_topics(cfg.venue, cfg.gateway))}",
        )

    # verified: install central's key, the config (checked by the agent's own loader), the keys
    out.parent.mkdir(parents=True, exist_ok=True)
    command_key = Ed25519PublicKey.from_public_bytes(cfg.command_key)
    write_atomic(out.parent / "central.pub", labelled_pem(KEY_ID, cfg.command_kid, public_pem(command_key)), 0o644)
    if not devices_file.exists():
        write_registry(devices_file, [])
    candidate = out.with_name(out.name + ".new")
    write_atomic(candidate, _config_text(cfg, data_dir, devices_file, local, claim).encode(), 0o644)
    try:
        load_config(candidate)
    except ConfigError:
        candidate.unlink()
        raise
    rotated = (data_dir / KEY_FILE).exists()
    for name in KEY_FILES:
        os.replace(pending / name, data_dir / name)
    if out.exists():
        os.replace(out, out.with_name(out.name + ".previous"))
    os.replace(candidate, out)
    shutil.rmtree(pending)
    fsync_dir(data_dir)
    fsync_dir(out.parent)
    return Enrolled(cfg, out, data_dir, rotated)
