"""Gateway zero-touch enrollment: the claim file, the two messages, and `guardian-agent enroll`.

    gateway                                             central (guardian-provision enroll-server)
    claim file (0600): claim id, secret, gateway id,
      url, central's key and TLS certificate (pinned)
    new Ed25519 + X25519 keys (0600, never leave) --POST https://.../ge/1/enroll (request)--> checks,
                                                  <--200: config signed by central----------- claim spent
    verify against the pinned key, write keys, central.pub, agent.toml

Request: COSE_Sign1 by the gateway's new Ed25519 key (external_aad `ge/1/enroll-request`), kid
the gateway id, payload a canonical CBOR map {1: claim, 2: gateway, 3: Ed25519 public (32),
4: X25519 public (32), 5: hardware serial, 6: fingerprint of the pinned central key (16),
7: HMAC-SHA256(claim secret, "ge/1/enroll-proof" 0x00 || canonical(keys 1-6))}.
Response: COSE_Sign1 by central's Ed25519 key (external_aad `ge/1/enroll-config`), kid central's
key id, payload {1: gateway, 2: venue, 3: claim, 4: Ed25519 public, 5: X25519 public,
6: {1: broker host, 2: port}, 7: {1: batches, 2: status, 3: commands topic},
8: {1: command key id, 2: command key (32)}, 9: issued}. docs/provisioning.md has the tables.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.gateway.config import load_config
from agent.gateway.signer import load_or_create_key
from agent.shared import cose, tomlcheck
from agent.shared.device_bundle import load_or_create_seal_key, seal_key_path
from agent.shared.errors import AgentError, ConfigError, WireError
from agent.shared.keyfiles import IDENT_RE, write_atomic, write_new_private
from agent.shared.registry import write_registry

AAD_REQUEST = b"ge/1/enroll-request"
AAD_CONFIG = b"ge/1/enroll-config"
PROOF_CONTEXT = b"ge/1/enroll-proof\x00"
PATH = "/ge/1/enroll"
CONTENT_TYPE = 'application/cose; cose-type="cose-sign1"'
MAX_REQUEST = 2048
MAX_RESPONSE = 8192
SECRET_BYTES = 32
FINGERPRINT_BYTES = 16
SERIAL_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
HOST_RE = re.compile(r"[A-Za-z0-9._:-]{1,253}")
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


class EnrollError(AgentError):
    """Enrollment failed; `reason` is the named reason (docs/provisioning.md), never a secret."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"enroll: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


def central_fingerprint(key: Ed25519PublicKey) -> bytes:
    """The 16-byte fingerprint of a central key: SHA-256 over its raw 32 bytes, cut."""
    return hashlib.sha256(raw_public(key)).digest()[:FINGERPRINT_BYTES]


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- the claim file ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A single-use claim as the gateway holds it; the secret is kept out of repr."""

    id: str
    gateway: str
    expires: int
    url: str
    central_kid: str
    central_key: Ed25519PublicKey
    tls_cert: str
    secret: bytes = field(repr=False)


def check_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an https URL; ValueError says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"expected https://HOST[:PORT]/PATH, got {url!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError(f"expected a port in 1..65535 in {url!r}") from None
    return parts.hostname, port, parts.path or "/"


def write_claim(path: Path, claim: Claim) -> None:
    """The claim file (TOML, mode 0600, never overwritten): everything a gateway needs to enroll."""
    text = (
        f"# Guardian Edge enrollment claim for gateway {claim.gateway}: single use, expires at unix time\n"
        f"# {claim.expires}. It holds a secret: keep it mode 0600, give it only to that gateway\n"
        "# (`guardian-agent enroll --claim FILE`), and delete it once the gateway is enrolled.\n"
        "[claim]\n"
        f'id = "{claim.id}"\n'
        f'gateway = "{claim.gateway}"\n'
        f'secret = "{claim.secret.hex()}"\n'
        f"expires = {claim.expires}\n"
        f"url = {json.dumps(claim.url)}\n\n"
        "[central]\n"
        f'kid = "{claim.central_kid}"\n'
        f'key = """\n{_pem(claim.central_key).decode()}"""\n'
        f'tls_cert = """\n{claim.tls_cert.strip()}\n"""\n'
    )
    write_new_private(path, text.encode(), "exists; refusing to overwrite a claim file")


def load_claim(path: Path) -> Claim:
    """The claim in `path` (mode 0600); ConfigError names the key and what was expected."""
    path = Path(path)
    data = tomlcheck.load(path)
    tomlcheck.require_private(path, "the claim's secret")
    top = tomlcheck.Table(path, data)
    ct = top.table("claim")
    claim_id, gateway = ct.ident("id"), ct.ident("gateway")
    ct.used.add("secret")
    secret_text = ct.data.get("secret")
    # the value is never echoed: it is (or is meant to be) the secret
    if not isinstance(secret_text, str) or not re.fullmatch(r"[0-9a-f]{64}", secret_text):
        raise ct.fail("secret", f"expected {2 * SECRET_BYTES} lower-case hex digits (the value is not shown)")
    expires = ct.integer("expires", lo=0, hi=2**63 - 1)
    url = ct.text("url")
    try:
        check_url(url)
    except ValueError as exc:
        raise ct.fail("url", str(exc)) from None
    ct.no_unknown_keys()
    cen = top.table("central")
    kid = cen.ident("kid")
    try:
        key = serialization.load_pem_public_key(cen.text("key").encode())
    except ValueError:
        raise cen.fail("key", "expected central's Ed25519 public key as a PEM block") from None
    if not isinstance(key, Ed25519PublicKey):
        raise cen.fail("key", "expected an Ed25519 public key")
    tls_cert = cen.text("tls_cert")
    try:
        x509.load_pem_x509_certificate(tls_cert.encode())
    except ValueError:
        raise cen.fail("tls_cert", "expected the enrollment server's certificate as a PEM block") from None
    cen.no_unknown_keys()
    top.no_unknown_keys()
    return Claim(claim_id, gateway, expires, url, kid, key, tls_cert, bytes.fromhex(secret_text))


# --- the request ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """An enrollment request whose signature verified (the claim proof is checked by central)."""

    claim: str
    gateway: str
    sign_key: bytes
    seal_key: bytes
    serial: str
    central: bytes
    proof: bytes

    def proof_ok(self, secret: bytes) -> bool:
        fields = {1: self.claim, 2: self.gateway, 3: self.sign_key, 4: self.seal_key, 5: self.serial, 6: self.central}
        return hmac.compare_digest(request_proof(secret, fields), self.proof)


def request_proof(secret: bytes, fields: dict[int, Any]) -> bytes:
    return hmac.digest(secret, PROOF_CONTEXT + cbor2.dumps(fields, canonical=True), "sha256")


def build_request(claim: Claim, key: Ed25519PrivateKey, seal: X25519PublicKey, serial: str) -> bytes:
    """The signed request for `claim`, carrying both public keys and the claim proof."""
    fields: dict[int, Any] = {
        1: claim.id,
        2: claim.gateway,
        3: raw_public(key.public_key()),
        4: raw_public(seal),
        5: serial,
        6: central_fingerprint(claim.central_key),
    }
    payload = cbor2.dumps({**fields, 7: request_proof(claim.secret, fields)}, canonical=True)
    protected = cose.protected_header(cose.ALG_EDDSA, claim.gateway.encode())
    return cose.sign1_encode(key, protected, payload, AAD_REQUEST)


def _sign1_payload(data: bytes, what: str) -> dict[int, Any]:
    """The payload map of a COSE_Sign1 before its signature is checked; it must be canonical."""
    try:
        obj = cose.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise EnrollError("malformed", f"{what} is not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != cose.TAG_SIGN1:
        raise EnrollError("malformed", f"{what} is not a COSE_Sign1 (tag 18)")
    parts = obj.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4 or not isinstance(parts[2], bytes):
        raise EnrollError("malformed", f"{what} is not a COSE_Sign1 array with a payload")
    try:
        body = cose.loads(parts[2])
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise EnrollError("malformed", f"{what} payload is not CBOR: {exc}") from None
    if not isinstance(body, dict) or cbor2.dumps(body, canonical=True) != parts[2]:
        raise EnrollError("malformed", f"{what} payload is not a canonical CBOR map")
    return body


def _fields(body: dict[int, Any], n: int, what: str) -> None:
    if set(body) != set(range(1, n + 1)):
        raise EnrollError(
            "malformed", f"{what} payload must have exactly the keys 1..{n}, got {sorted(map(str, body))}"
        )


def _ident(value: object, what: str) -> str:
    if not isinstance(value, str) or not IDENT_RE.fullmatch(value):
        raise EnrollError("malformed", f"{what} must be 1-32 characters from A-Z a-z 0-9 . _ -")
    return value


def _bytes(value: object, n: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise EnrollError("malformed", f"{what} must be {n} bytes")
    return value


def parse_request(data: bytes) -> Request:
    """The request in `data`, its signature checked under the key it carries; EnrollError otherwise."""
    if len(data) > MAX_REQUEST:
        raise EnrollError("oversize", f"request of {len(data)} bytes, at most {MAX_REQUEST}")
    body = _sign1_payload(data, "request")
    _fields(body, 7, "request")
    serial = body[5]
    if not isinstance(serial, str) or not SERIAL_RE.fullmatch(serial):
        raise EnrollError("malformed", "serial must be 1-64 characters from A-Z a-z 0-9 . _ : -")
    req = Request(
        claim=_ident(body[1], "claim"),
        gateway=_ident(body[2], "gateway"),
        sign_key=_bytes(body[3], 32, "Ed25519 key"),
        seal_key=_bytes(body[4], 32, "X25519 key"),
        serial=serial,
        central=_bytes(body[6], FINGERPRINT_BYTES, "central key fingerprint"),
        proof=_bytes(body[7], 32, "proof"),
    )
    try:
        public = Ed25519PublicKey.from_public_bytes(req.sign_key)
        X25519PublicKey.from_public_bytes(req.seal_key)
    except ValueError:
        raise EnrollError("malformed", "a public key is not a valid Ed25519/X25519 key") from None
    try:
        cose.sign1_verify(data, {req.gateway.encode(): public}, AAD_REQUEST)
    except WireError as exc:
        if exc.reason == "unknown_signer":
            raise EnrollError("malformed", "the kid is not the gateway id of the payload") from None
        raise EnrollError(exc.reason, f"request: {exc.detail}") from None
    return req


# --- the signed config ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrolledConfig:
    """What central tells a gateway it enrolled; signed by central's key."""

    gateway: str
    venue: str
    claim: str
    sign_key: bytes
    seal_key: bytes
    host: str
    port: int
    topics: tuple[str, str, str]  # batches, status, commands
    command_kid: str
    command_key: bytes
    issued: int


def topics_for(venue: str, gateway: str) -> tuple[str, str, str]:
    """The central topics the agent uses (docs/protocol.md §5)."""
    base = f"venues/{venue}/gateways/{gateway}"
    return f"{base}/batches", f"{base}/status", f"{base}/commands"


def sign_config(key: Ed25519PrivateKey, kid: str, cfg: EnrolledConfig) -> bytes:
    payload = {
        1: cfg.gateway,
        2: cfg.venue,
        3: cfg.claim,
        4: cfg.sign_key,
        5: cfg.seal_key,
        6: {1: cfg.host, 2: cfg.port},
        7: {1: cfg.topics[0], 2: cfg.topics[1], 3: cfg.topics[2]},
        8: {1: cfg.command_kid, 2: cfg.command_key},
        9: cfg.issued,
    }
    protected = cose.protected_header(cose.ALG_EDDSA, kid.encode())
    return cose.sign1_encode(key, protected, cbor2.dumps(payload, canonical=True), AAD_CONFIG)


def parse_config(data: bytes, kid: str, key: Ed25519PublicKey) -> EnrolledConfig:
    """The config in `data` if central's pinned key signed it; EnrollError with the reason otherwise."""
    if len(data) > MAX_RESPONSE:
        raise EnrollError("oversize", f"response of {len(data)} bytes, at most {MAX_RESPONSE}")
    try:
        cose.sign1_verify(data, {kid.encode(): key}, AAD_CONFIG)
    except WireError as exc:
        if exc.reason == "unknown_signer":
            raise EnrollError("unknown_kid", f"the config is not signed by the key the claim pins ({kid})") from None
        if exc.reason == "bad_signature":
            raise EnrollError(
                "bad_signature",
                f"the config's signature does not verify under central's key {kid} pinned in the claim "
                "(altered in transit, or not from that central); nothing written",
            ) from None
        raise EnrollError(exc.reason, f"response: {exc.detail}") from None
    body = _sign1_payload(data, "config")
    _fields(body, 9, "config")
    broker, topics, command = body[6], body[7], body[8]
    if not isinstance(broker, dict) or set(broker) != {1, 2}:
        raise EnrollError("malformed", "config broker must be {1: host, 2: port}")
    host, port = broker[1], broker[2]
    if not isinstance(host, str) or not HOST_RE.fullmatch(host) or type(port) is not int or not 0 < port < 65536:
        raise EnrollError("malformed", "config broker host or port out of range")
    if not isinstance(topics, dict) or set(topics) != {1, 2, 3} or not all(isinstance(t, str) for t in topics.values()):
        raise EnrollError("malformed", "config topics must be {1: batches, 2: status, 3: commands}")
    if not isinstance(command, dict) or set(command) != {1, 2}:
        raise EnrollError("malformed", "config command key must be {1: kid, 2: key}")
    issued = body[9]
    if type(issued) is not int or issued < 0:
        raise EnrollError("malformed", "config issued must be an unsigned integer")
    command_key = _bytes(command[2], 32, "command key")
    try:
        Ed25519PublicKey.from_public_bytes(command_key)
    except ValueError:
        raise EnrollError("malformed", "command key is not an Ed25519 key") from None
    return EnrolledConfig(
        gateway=_ident(body[1], "gateway"),
        venue=_ident(body[2], "venue"),
        claim=_ident(body[3], "claim"),
        sign_key=_bytes(body[4], 32, "Ed25519 key"),
        seal_key=_bytes(body[5], 32, "X25519 key"),
        host=host,
        port=port,
        topics=(topics[1], topics[2], topics[3]),
        command_kid=_ident(command[1], "command key id"),
        command_key=command_key,
        issued=issued,
    )


# --- the gateway's side -----------------------------------------------------------------


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
    if cfg.topics != topics_for(cfg.venue, cfg.gateway):
        raise EnrollError(
            "unsupported_topics",
            f"central names topics {list(cfg.topics)}, this agent uses {list(topics_for(cfg.venue, cfg.gateway))}",
        )

    # verified: install central's key, the config (checked by the agent's own loader), the keys
    out.parent.mkdir(parents=True, exist_ok=True)
    command_key = Ed25519PublicKey.from_public_bytes(cfg.command_key)
    write_atomic(out.parent / "central.pub", f"Key-Id: {cfg.command_kid}\n".encode() + _pem(command_key), 0o644)
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
    _fsync_dir(data_dir)
    _fsync_dir(out.parent)
    return Enrolled(cfg, out, data_dir, rotated)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
