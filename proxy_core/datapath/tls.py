"""TLS with the stdlib `ssl` module: listener certificates (checked at start, reloadable, chosen by SNI),
failed handshakes counted by reason, and client contexts for servers with `tls = true`.

uvloop runs the handshake and the record layer in its transports (`create_server(ssl=...)`), so the relay's
flow control is unchanged. A failed handshake never reaches a protocol of ours; it is counted by the
SSLObject subclass the listener's context hands uvloop (`SSLContext.sslobject_class`), which sees every
`do_handshake` error.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from proxy_core.edgeconfig import Certificate, ListenerConfig
from proxy_core.errors import ConfigError

# Mozilla's "intermediate" profile (ssl-config.mozilla.org, v5.7): TLS 1.2 and 1.3, forward secrecy, AEAD only.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
    )
)  # fmt: skip
ALPN = ["http/1.1"]  # WebSocket upgrades are HTTP/1.1; offering h2 would make browsers skip the upgrade
# The dashboard colours a certificate yellow under this many days to expiry, red under CRITICAL_DAYS.
WARN_DAYS = 14
CRITICAL_DAYS = 3
_FAILURE_TEXT = {
    "HTTP_REQUEST": "plaintext HTTP on a TLS port",
    "HTTPS_PROXY_REQUEST": "plaintext HTTP on a TLS port",
    "WRONG_VERSION_NUMBER": "not TLS (or an unknown version)",
    "UNKNOWN_PROTOCOL": "not TLS (or an unknown version)",
    "UNSUPPORTED_PROTOCOL": "TLS version not accepted",
    "VERSION_TOO_LOW": "TLS version not accepted",
    "TLSV1_ALERT_PROTOCOL_VERSION": "TLS version not accepted",
    "NO_SHARED_CIPHER": "no shared cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no shared signature algorithm",
}


class CertProblem(Exception):
    """A certificate or key file that cannot be used; `path` names the file, the text says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What operators see of a certificate: subject, the names it serves and its expiry."""

    path: str
    subject: str
    names: tuple[str, ...]
    not_after: float

    def days_left(self, now: float) -> float:
        return round((self.not_after - now) / 86400, 1)


def read_certificate(path: str, now: float) -> CertInfo:
    """The leaf of a PEM chain file; raises CertProblem for a missing, unreadable, non-PEM or expired one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertProblem(path, f"cannot be read ({exc.strerror})") from exc
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertProblem(path, "is not a PEM certificate") from exc
    leaf = chain[0]
    not_after = leaf.not_valid_after_utc.timestamp()
    if not_after <= now:
        raise CertProblem(path, f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc.timestamp() > now:
        raise CertProblem(path, f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    try:
        names = tuple(
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = ()
    if not names:
        names = tuple(str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    return CertInfo(path, leaf.subject.rfc4514_string(), tuple(n.lower() for n in names), not_after)


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def server_context(pair: Certificate) -> ssl.SSLContext:
    """A server context of the intermediate profile serving this chain; raises CertProblem naming the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)  # TLS 1.3 suites are OpenSSL's defaults, all AEAD
    context.set_alpn_protocols(ALPN)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        Path(pair.key).read_bytes()
    except OSError as exc:
        raise CertProblem(pair.key, f"cannot be read ({exc.strerror})") from exc
    try:
        context.load_cert_chain(pair.cert, pair.key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise CertProblem(pair.key, f"does not match the certificate {pair.cert}") from exc
        raise CertProblem(pair.key, "is not a PEM private key (or is encrypted)") from exc
    return context


@dataclass(frozen=True, slots=True)
class CertSet:
    """A listener's loaded certificates; the first is served when SNI names none of the others."""

    contexts: tuple[ssl.SSLContext, ...]
    infos: tuple[CertInfo, ...]

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower()
            wildcard = "*." + name.partition(".")[2]
            for context, info in zip(self.contexts, self.infos, strict=True):
                if name in info.names or wildcard in info.names:
                    return context
        return self.contexts[0]


def load_set(pairs: tuple[Certificate, ...], now: float) -> CertSet:
    """Load and check every certificate of a listener; raises CertProblem for the first bad file."""
    infos = tuple(read_certificate(pair.cert, now) for pair in pairs)
    contexts = tuple(server_context(pair) for pair in pairs)
    return CertSet(contexts, infos)


def check_certificates(config: Any) -> None:
    """Load every TLS listener's files once (the supervisor's check before workers start); ConfigError if bad."""
    listen: ListenerConfig
    for listen in config.listen:
        if listen.tls:
            try:
                load_set(listen.certificates, utc_now())
            except CertProblem as exc:
                where = f"[{listen.host}]:{listen.port}" if ":" in listen.host else f"{listen.host}:{listen.port}"
                raise ConfigError(f"listener {where}", exc.path, exc.problem) from exc


class _CountingSSLObject(ssl.SSLObject):
    """Counts failed handshakes of its listener by reason (uvloop calls do_handshake until it completes)."""

    listener_tls: ListenerTls

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self.listener_tls.failed(failure_text(exc))
            raise


def failure_text(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    return _FAILURE_TEXT.get(reason) or (reason.lower().replace("_", " ") if reason else "handshake failed")


class ListenerTls:
    """One TLS listener: the context uvloop handshakes with, its current certificates, failure counters."""

    def __init__(self, address: str, pairs: tuple[Certificate, ...], now: float) -> None:
        self.address = address
        self.pairs = pairs
        self.certs = load_set(pairs, now)
        self.failures = 0
        self.by_reason: dict[str, int] = {}
        self.reloads = 0
        self.on_failure: Any = None  # a callable(listener address, reason) for the periodic summary
        # The front context (the first set's default) is the entry point: the SNI callback (called with or
        # without SNI) moves a handshake onto another context only when the pick differs, so a reload takes
        # effect for the next handshake and the common case pays no switch (SSL_set_SSL_CTX copies the
        # certificate state).
        front = self.certs.contexts[0]
        front.sni_callback = self._select
        front.sslobject_class = type("CountingSSLObject", (_CountingSSLObject,), {"listener_tls": self})
        self.front = front

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        sslobj.sni = server_name  # type: ignore[attr-defined]  # read for the handshake and access logs
        target = self.certs.pick(server_name)
        if target is not context:
            sslobj.context = target

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if self.on_failure is not None:
            self.on_failure(self.address, reason)

    def reload(self, now: float) -> None:
        """Load the files again for new handshakes; raises CertProblem and keeps the old set on a bad file."""
        self.certs = load_set(self.pairs, now)
        self.reloads += 1

    def stats(self, now: float) -> dict[str, Any]:
        leaf = self.certs.infos[0]
        return {
            "subject": leaf.subject,
            "names": list(leaf.names),
            "not_after": leaf.not_after,
            "days_left": leaf.days_left(now),
            "certificates": [
                {"path": i.path, "subject": i.subject, "days_left": i.days_left(now)} for i in self.certs.infos
            ],
            "handshake_failures": self.failures,
            "failures_by_reason": self.by_reason,
            "reloads": self.reloads,
        }


def session_info(sslobj: Any) -> dict[str, Any] | None:
    """Version, cipher and SNI of an established TLS connection, for the handshake and access logs."""
    if sslobj is None:
        return None
    cipher = sslobj.cipher()
    return {"version": sslobj.version(), "cipher": cipher[0] if cipher else None, "sni": getattr(sslobj, "sni", None)}


def client_context(verify: bool, ca: str | None) -> ssl.SSLContext:
    """For servers with `tls = true`: verify against `ca` (or the system's CAs) unless `tls_verify = false`."""
    if verify:
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise CertProblem(
                ca or "system CAs", f"cannot be loaded ({getattr(exc, 'strerror', None) or exc})"
            ) from exc
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def utc_now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()
