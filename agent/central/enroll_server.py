"""Central's reference responder for gateway zero-touch enrollment (`guardian-provision enroll-server`).

    <state>/enroll.toml     url told to gateways, central's key file, the uplink broker
    <state>/tls.key, .crt   the HTTPS identity (key 0600); the certificate is pinned in every claim
    <state>/state.json      claims (with their secrets), allowlist, gateways, revoked keys; 0600
    <state>/gateways.json   enrolled gateways' public keys for `guardian-agent verify --gateway-keys`
    <state>/gateways/<gw>.x25519.pub   sealing keys for `guardian-provision export --format gateway`
    <state>/.lock           flock: the server and the admin commands change the state one at a time

Deny by default: a request is answered only for an unspent, unexpired claim whose proof verifies,
from a hardware serial or for a claim id on the allowlist. Every state change is written (new file,
fsync, rename) before the answer leaves, so a restart keeps spent claims spent.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from agent.central.enrolled_gateways import EnrolledGateway, write_gateways
from agent.central.keys import load_central_private_key
from agent.shared import enroll_protocol as wire
from agent.shared import tomlcheck
from agent.shared.device_bundle import seal_public_text
from agent.shared.errors import AgentError
from agent.shared.files import write_atomic
from agent.shared.keyfiles import raw_fingerprint, raw_public
from agent.shared.protocol import gateway_topics

log = logging.getLogger(__name__)

SETTINGS = "enroll.toml"
STATE = "state.json"
GATEWAYS = "gateways.json"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"
STATE_FORMAT = "ge-enroll-state-1"
MAX_TTL = 90 * 86400
HANDLER_TIMEOUT_S = 10
DRAIN_MAX = 64 << 10  # an oversize body up to this is read and discarded before the answer
# HTTP status per refusal reason
STATUS = {
    "oversize": 413,
    "malformed": 400,
    "bad_signature": 400,
    "wrong_central": 403,
    "unknown_claim": 403,
    "bad_proof": 403,
    "expired": 410,
    "not_allowed": 403,
    "wrong_gateway": 403,
    "claim_used": 409,
    "revoked_key": 403,
    "not_found": 404,
    "store_error": 500,
}


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    central_key: Path
    broker: tuple[str, int]


class EnrollServerError(AgentError):
    """The enroll server's state, settings or listening address cannot be used; says which and why."""


def _fail(exc: AgentError) -> EnrollServerError:
    return EnrollServerError(str(exc))


def load_settings(home: Path) -> Settings:
    path = home / SETTINGS
    if not path.exists():
        raise EnrollServerError(f"{home}: no enroll-server state here (run `enroll-server init` first)")
    try:
        t = tomlcheck.Table(path, tomlcheck.load(path))
        url = t.text("url")
        settings = Settings(url, t.path_value("central_key", home), (t.text("broker_host"), t.integer("broker_port")))
        t.no_unknown_keys()
    except AgentError as exc:
        raise _fail(exc) from None
    return settings


def _central_key(settings: Settings) -> tuple[str, Ed25519PrivateKey]:
    try:
        return load_central_private_key(settings.central_key)
    except AgentError as exc:
        raise _fail(exc) from None


# --- the state ---------------------------------------------------------------------------


class Store:
    """state.json under a lock shared by threads (a mutex) and processes (flock)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._mutex = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """The state to read and change; saved (with gateways.json) when the block changed it.

        An exception in the block leaves the state on disk as it was.
        """
        with self._mutex:
            fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                state = self._load()
                before = json.dumps(state, sort_keys=True)
                yield state
                if json.dumps(state, sort_keys=True) != before:
                    self._save(state)
            finally:
                os.close(fd)

    def _load(self) -> dict[str, Any]:
        path = self.home / STATE
        try:
            tomlcheck.require_private(path, "claim secrets")
            state = json.loads(path.read_bytes())
        except AgentError as exc:
            raise _fail(exc) from None
        except (OSError, ValueError) as exc:
            raise EnrollServerError(f"{path}: unreadable: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise EnrollServerError(f"{path}: not an enroll-server state file ({STATE_FORMAT})")
        return state

    def _save(self, state: dict[str, Any]) -> None:
        write_atomic(self.home / STATE, json.dumps(state, indent=1, sort_keys=True).encode(), 0o600)
        gateways = [EnrolledGateway(id=gw, **rec) for gw, rec in sorted(state["gateways"].items())]
        write_gateways(self.home / GATEWAYS, gateways)
        seal_dir = self.home / "gateways"
        seal_dir.mkdir(exist_ok=True)
        for g in gateways:
            pub = seal_dir / f"{g.id}.x25519.pub"
            if g.revoked is None:
                public = X25519PublicKey.from_public_bytes(bytes.fromhex(g.seal_key))
                write_atomic(pub, seal_public_text(g.id, public), 0o644)
            else:
                pub.unlink(missing_ok=True)


# --- admin commands ----------------------------------------------------------------------


def _tls_identity(names: list[str]) -> tuple[bytes, bytes]:
    """A self-signed P-256 certificate for `names` (DNS names or IP addresses) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"guardian-edge enroll {names[0]}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=5 * 365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def init(
    home: Path,
    central_key: Path,
    url: str,
    broker: tuple[str, int],
    tls_names: list[str],
    tls_files: tuple[Path, Path] | None = None,
) -> str:
    """Create the state directory; returns what the TLS certificate covers."""
    try:
        host, _, _ = wire.check_url(url)
    except ValueError as exc:
        raise EnrollServerError(f"--url: {exc}") from None
    if (home / SETTINGS).exists():
        raise EnrollServerError(f"{home}: already initialised; nothing changed")
    settings = Settings(url, central_key.absolute(), broker)
    _central_key(settings)
    if tls_files is not None:
        try:
            cert_pem, key_pem = tls_files[0].read_bytes(), tls_files[1].read_bytes()
            tomlcheck.require_private(tls_files[1], "the TLS key")
        except OSError as exc:
            raise EnrollServerError(f"TLS files: {exc.strerror}: {exc.filename}") from None
        except AgentError as exc:
            raise _fail(exc) from None
        covers = f"certificate from {tls_files[0]}"
    else:
        names = [host, *(n for n in tls_names if n != host)]
        cert_pem, key_pem = _tls_identity(names)
        covers = "self-signed certificate for " + ", ".join(names)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(home / TLS_KEY, key_pem, 0o600)
        write_atomic(home / TLS_CERT, cert_pem, 0o644)
        ctx.load_cert_chain(home / TLS_CERT, home / TLS_KEY)
    except (OSError, ssl.SSLError) as exc:
        raise EnrollServerError(f"TLS identity unusable: {exc}") from None
    state = {"format": STATE_FORMAT, "claims": {}, "allow": {"serials": [], "claims": []}, "gateways": {}}
    write_atomic(home / STATE, json.dumps({**state, "revoked_keys": []}, indent=1).encode(), 0o600)
    write_gateways(home / GATEWAYS, [])
    text = (
        f"url = {json.dumps(url)}\ncentral_key = {json.dumps(str(settings.central_key))}\n"
        f"broker_host = {json.dumps(broker[0])}\nbroker_port = {broker[1]}\n"
    )
    write_atomic(home / SETTINGS, text.encode(), 0o644)
    return covers


def issue_claim(home: Path, gateway: str, venue: str, ttl: int, out: Path, now: int | None = None) -> wire.Claim:
    """A new claim for `gateway` at `venue`, written to `out` (0600) and recorded."""
    settings = load_settings(home)
    kid, key = _central_key(settings)
    issued = int(time.time()) if now is None else now
    claim = wire.Claim(
        id="C-" + secrets.token_hex(8),
        gateway=gateway,
        expires=issued + ttl,
        url=settings.url,
        central_kid=kid,
        central_key=key.public_key(),
        tls_cert=(home / TLS_CERT).read_text(),
        secret=secrets.token_bytes(wire.SECRET_BYTES),
    )
    with Store(home).transaction() as st:
        try:
            wire.write_claim(out, claim)
        except AgentError as exc:
            raise _fail(exc) from None
        st["claims"][claim.id] = {
            "gateway": gateway,
            "venue": venue,
            "secret": claim.secret.hex(),
            "issued": issued,
            "expires": claim.expires,
            "used": None,
        }
    return claim


def allow(home: Path, serials: list[str], claims: list[str]) -> None:
    load_settings(home)
    with Store(home).transaction() as st:
        for kind, values in (("serials", serials), ("claims", claims)):
            st["allow"][kind] = sorted(set(st["allow"][kind]) | set(values))


def revoke(home: Path, gateway: str, now: int | None = None) -> EnrolledGateway:
    """Revoke a gateway: the verifier rejects its batches; its key can never enroll again."""
    load_settings(home)
    with Store(home).transaction() as st:
        rec = st["gateways"].get(gateway)
        if rec is None:
            raise EnrollServerError(f"no enrolled gateway {gateway}; nothing changed")
        if rec["revoked"] is not None:
            raise EnrollServerError(f"gateway {gateway} is already revoked; nothing changed")
        rec["revoked"] = int(time.time()) if now is None else now
        st["revoked_keys"] = sorted({*st["revoked_keys"], raw_fingerprint(bytes.fromhex(rec["key"]))})
        return EnrolledGateway(id=gateway, **rec)


def listing(home: Path) -> list[str]:
    load_settings(home)
    with Store(home).transaction() as st:
        now = int(time.time())
        lines = []
        for gw, rec in sorted(st["gateways"].items()):
            state = "revoked" if rec["revoked"] is not None else "enrolled"
            lines.append(
                f"gateway {gw:<20} {state:<9} venue {rec['venue']} serial {rec['serial']} claim {rec['claim']}"
            )
        for cid, c in sorted(st["claims"].items()):
            state = "used" if c["used"] else ("expired" if now >= c["expires"] else "open")
            lines.append(
                f"claim   {cid:<20} {state:<9} gateway {c['gateway']} venue {c['venue']} expires {c['expires']}"
            )
        lines.append(f"allowlist: serials {st['allow']['serials']} claims {st['allow']['claims']}")
    return lines


# --- the responder -----------------------------------------------------------------------


class Responder:
    """Decides one request against the state and signs the config; no I/O besides the state."""

    def __init__(self, home: Path, clock: Callable[[], float] = time.time) -> None:
        self.home = home
        self.settings = load_settings(home)
        self.kid, self.key = _central_key(self.settings)
        self.fingerprint = wire.central_fingerprint(self.key.public_key())
        self.store = Store(home)
        self.clock = clock

    def handle(self, body: bytes) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for one request body; logs one line."""
        try:
            req = wire.parse_request(body)
        except wire.EnrollError as exc:
            log.warning("enroll_refused reason=%s detail=%r", exc.reason, exc.detail)
            return self._error(exc.reason, exc.detail)
        try:
            cfg, again = self._decide(req)
        except wire.EnrollError as exc:
            log.warning(
                "enroll_refused reason=%s claim=%s gateway=%s serial=%s", exc.reason, req.claim, req.gateway, req.serial
            )
            return self._error(exc.reason, exc.detail)
        except (OSError, EnrollServerError) as exc:
            log.error("enroll_store_error claim=%s error=%r", req.claim, str(exc))
            return self._error("store_error", "central could not record the enrollment; try again")
        log.info(
            "enrolled gateway=%s venue=%s claim=%s serial=%s key=%s answered_again=%s",
            cfg.gateway,
            cfg.venue,
            cfg.claim,
            req.serial,
            raw_fingerprint(req.sign_key)[:16],
            "yes" if again else "no",
        )
        return 200, wire.CONTENT_TYPE, wire.sign_config(self.key, self.kid, cfg)

    @staticmethod
    def _error(reason: str, detail: str) -> tuple[int, str, bytes]:
        doc = json.dumps({"error": reason, "detail": detail}).encode()
        return STATUS.get(reason, 400), "application/json", doc

    def _decide(self, req: wire.Request) -> tuple[wire.EnrolledConfig, bool]:
        if req.central != self.fingerprint:
            raise wire.EnrollError(
                "wrong_central",
                f"the claim pins central key {req.central.hex()}, this server signs with "
                f"{self.fingerprint.hex()} ({self.kid}): the claim was made by another central",
            )
        now = int(self.clock())
        with self.store.transaction() as st:
            c = st["claims"].get(req.claim)
            if c is None:
                raise wire.EnrollError("unknown_claim", f"claim {req.claim} was not issued here")
            if not req.proof_ok(bytes.fromhex(c["secret"])):
                raise wire.EnrollError("bad_proof", f"the proof for claim {req.claim} does not verify")
            if now >= c["expires"]:
                raise wire.EnrollError("expired", f"claim {req.claim} expired at unix time {c['expires']}")
            if req.serial not in st["allow"]["serials"] and req.claim not in st["allow"]["claims"]:
                raise wire.EnrollError(
                    "not_allowed", f"neither hardware serial {req.serial} nor claim {req.claim} is on the allowlist"
                )
            if req.gateway != c["gateway"]:
                raise wire.EnrollError("wrong_gateway", f"claim {req.claim} is for gateway {c['gateway']}")
            mine = {"sign_key": req.sign_key.hex(), "seal_key": req.seal_key.hex(), "serial": req.serial}
            used = c["used"]
            again = used is not None
            if used is not None:
                current = st["gateways"].get(req.gateway)
                same = {k: used[k] for k in mine} == mine
                if not same or current is None or current["key"] != mine["sign_key"] or current["revoked"]:
                    raise wire.EnrollError(
                        "claim_used", f"claim {req.claim} was spent at unix time {used['at']} by other keys"
                    )
            else:
                if raw_fingerprint(req.sign_key) in st["revoked_keys"]:
                    raise wire.EnrollError(
                        "revoked_key", "this Ed25519 key was revoked; the gateway must make new keys"
                    )
                c["used"] = {**mine, "at": now}
                # a gateway id enrolled before (rotation, or after a revocation) gets the new keys
                st["gateways"][req.gateway] = {
                    "key": mine["sign_key"],
                    "seal_key": mine["seal_key"],
                    "venue": c["venue"],
                    "serial": req.serial,
                    "claim": req.claim,
                    "enrolled": now,
                    "revoked": None,
                }
            venue = c["venue"]
        host, port = self.settings.broker
        cfg = wire.EnrolledConfig(
            gateway=req.gateway,
            venue=venue,
            claim=req.claim,
            sign_key=req.sign_key,
            seal_key=req.seal_key,
            host=host,
            port=port,
            topics=gateway_topics(venue, req.gateway),
            command_kid=self.kid,
            command_key=raw_public(self.key.public_key()),
            issued=now,
        )
        return cfg, again


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = HANDLER_TIMEOUT_S

    def do_POST(self) -> None:
        if self.path != wire.PATH:
            return self._send(*Responder._error("not_found", f"POST {wire.PATH}"))
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._send(*Responder._error("malformed", "Content-Length required"))
        if int(length) > wire.MAX_REQUEST:
            log.warning("enroll_refused reason=oversize peer=%s bytes=%s", self.client_address[0], length)
            if int(length) <= DRAIN_MAX:  # read it, so the client sees the answer rather than a reset
                self.rfile.read(int(length))
            return self._send(*Responder._error("oversize", f"request of {length} bytes, at most {wire.MAX_REQUEST}"))
        try:
            body = self.rfile.read(int(length))
        except OSError as exc:  # a client that sends less than it announced times out here
            log.warning("enroll_refused reason=malformed peer=%s detail=%r", self.client_address[0], str(exc))
            return None
        if len(body) != int(length):
            return self._send(*Responder._error("malformed", "the body is shorter than Content-Length"))
        return self._send(*self.server.responder.handle(body))

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by the responder, one line each."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], responder: Responder, ctx: ssl.SSLContext) -> None:
        self.responder = responder
        self.ctx = ctx
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr."""
        log.warning("request_failed peer=%s error=%r", client_address[0], str(sys.exc_info()[1]))

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake runs in the request's thread, under its timeout
        assert isinstance(request, socket)
        request.settimeout(HANDLER_TIMEOUT_S)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("tls_failed peer=%s error=%r", client_address[0], str(exc))
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            tls.close()


def serve(home: Path, listen: tuple[str, int] | None = None, ready: Callable[[str], None] | None = None) -> None:
    """Answer enrollment requests until interrupted."""
    responder = Responder(home)
    host, port, _ = wire.check_url(responder.settings.url)
    address = listen or (host, port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(home / TLS_CERT, home / TLS_KEY)
    try:
        server = _Server(address, responder, ctx)
    except OSError as exc:
        raise EnrollServerError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror}") from None
    with server:
        if ready is not None:
            ready(
                f"ready {responder.settings.url} (listening on {address[0]}:{address[1]}, central key {responder.kid})"
            )
        server.serve_forever()


def print_ready(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
