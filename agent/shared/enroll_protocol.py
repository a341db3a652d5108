"""Gateway zero-touch enrollment: the claim file and the two messages (the request and central's signed config).

The gateway's side is agent/gateway/enroll_client.py (`guardian-agent enroll`), central's is
agent/central/enroll_server.py (`guardian-provision enroll-server`).

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
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.shared import cose, tomlcheck
from agent.shared.errors import AgentError, WireError
from agent.shared.files import write_new_private
from agent.shared.keyfiles import public_pem, raw_public
from agent.shared.protocol import AAD_ENROLL_CONFIG, AAD_ENROLL_REQUEST, ENROLL_PROOF_CONTEXT, IDENT_RE

PATH = "/ge/1/enroll"
CONTENT_TYPE = 'application/cose; cose-type="cose-sign1"'
MAX_REQUEST = 2048
MAX_RESPONSE = 8192
SECRET_BYTES = 32
FINGERPRINT_BYTES = 16
SERIAL_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
HOST_RE = re.compile(r"[A-Za-z0-9._:-]{1,253}")


class EnrollError(AgentError):
    """Enrollment failed; `reason` is the named reason (docs/provisioning.md), never a secret."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"enroll: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


def central_fingerprint(key: Ed25519PublicKey) -> bytes:
    """The 16-byte fingerprint of a central key: SHA-256 over its raw 32 bytes, cut."""
    return hashlib.sha256(raw_public(key)).digest()[:FINGERPRINT_BYTES]


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
        f'key = """\n{public_pem(claim.central_key).decode()}"""\n'
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
    return hmac.digest(secret, ENROLL_PROOF_CONTEXT + cbor2.dumps(fields, canonical=True), "sha256")


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
    return cose.sign1_encode(key, protected, payload, AAD_ENROLL_REQUEST)


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
        cose.sign1_verify(data, {req.gateway.encode(): public}, AAD_ENROLL_REQUEST)
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
    return cose.sign1_encode(key, protected, cbor2.dumps(payload, canonical=True), AAD_ENROLL_CONFIG)


def parse_config(data: bytes, kid: str, key: Ed25519PublicKey) -> EnrolledConfig:
    """The config in `data` if central's pinned key signed it; EnrollError with the reason otherwise."""
    if len(data) > MAX_RESPONSE:
        raise EnrollError("oversize", f"response of {len(data)} bytes, at most {MAX_RESPONSE}")
    try:
        cose.sign1_verify(data, {kid.encode(): key}, AAD_ENROLL_CONFIG)
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
