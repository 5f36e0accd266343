"""TLS termination (ARCHITECTURE §13): the certificates of `DATAPLANE_TLS_CERTS`, chosen per connection by
SNI, and re-read without dropping a connection.

The folder holds PEM files, each a certificate chain (leaf first) and its private key. A file's leaf
names the hosts it serves in its subjectAltName DNS entries: exact names (`api.example.com`) and
one-label wildcards (`*.example.com` serves `a.example.com`, not `example.com` nor `a.b.example.com`).
`default.pem` is served to a client that sends no SNI and to one naming a host no file serves (without
a `default.pem` the first file by name is). A file that cannot be read, parsed or paired with its key
is logged and skipped; an expired certificate is loaded (and logged): what it is worth is the
operator's call, and `gateway_tls_certificate_expiry_seconds` going negative is what alerts say.

Swapping: the listener holds one SSLContext for its whole life (`Certificates.listener_context`); its
SNI callback points each new connection's SSLObject at the context of the current `CertificateSet`.
A reload builds a whole new set off the event loop and replaces the reference: a connection made before
keeps the context it was handed (its session is bound to it), a new one gets the new set's.

OpenSSL takes the protocol versions and the cipher list from the listener's context (switching an
SSL object's context switches its certificate and key), so every context here is configured alike.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

logger = logging.getLogger("dataplane")

DEFAULT_FILE = "default.pem"
# TLS 1.2: forward secrecy and AEAD only (the Mozilla "intermediate" list); TLS 1.3's suites are
# OpenSSL's own, all of them modern.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# At most this many files are read from the folder, and this many names of a certificate reported: a
# folder is configuration, not a data store, and the report to the control plane is bounded.
MAX_FILES = 1000
MAX_FILE_BYTES = 1024 * 1024


class NoCertificates(Exception):
    """No file of the folder holds a usable certificate and key: a TLS listener could serve no one."""


# ALPN: HTTP/2 first when it is on (DATAPLANE_HTTP2), so a client offering both gets it (h2server.py).
ALPN_H2 = ("h2", "http/1.1")
ALPN_HTTP1 = ("http/1.1",)


def server_context(alpn: tuple[str, ...] = ALPN_H2) -> ssl.SSLContext:
    """A server context with the listener's policy: TLS 1.2 or later, the modern cipher list, `alpn`
    offered by ALPN, no compression, no renegotiation. Every context of a listener must offer the same
    protocols: OpenSSL asks the context the SNI callback chose."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(alpn))
    return context


@dataclass(frozen=True, slots=True)
class Certificate:
    """One file's certificate: its context (chain and key loaded), the DNS names of its leaf, and when
    the leaf expires (unix seconds)."""

    file: str
    context: ssl.SSLContext = field(repr=False, compare=False)
    names: tuple[str, ...]
    not_after: float

    @property
    def label(self) -> str:
        """The metric label and report name: the file's name without `.pem`."""
        return self.file[:-4] if self.file.endswith(".pem") else self.file


def read_certificate(path: Path, alpn: tuple[str, ...] = ALPN_H2) -> Certificate:
    """Load one PEM file (chain + key) or raise ValueError / OSError / ssl.SSLError saying why not."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    data = path.read_bytes()
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"no PEM certificate: {exc}") from None
    leaf = chain[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(dict.fromkeys(name.lower().rstrip(".") for name in sans.get_values_for_type(x509.DNSName)))
    except x509.ExtensionNotFound:
        names = ()
    context = server_context(alpn)
    # The ssl module reads the chain and the key from the same file (the key must match the leaf).
    context.load_cert_chain(str(path))
    not_after = leaf.not_valid_after_utc.timestamp()
    return Certificate(path.name, context, names, not_after)


@dataclass(frozen=True, slots=True)
class CertificateSet:
    """The certificates of one reading of the folder, indexed by name; immutable, swapped whole."""

    certificates: tuple[Certificate, ...]
    default: Certificate
    exact: dict[str, Certificate]
    wildcard: dict[str, Certificate]  # `*.example.com` under "example.com"

    @classmethod
    def of(cls, certificates: list[Certificate]) -> CertificateSet:
        if not certificates:
            raise NoCertificates("no certificates")
        exact: dict[str, Certificate] = {}
        wildcard: dict[str, Certificate] = {}
        for certificate in certificates:  # by file name: the first file naming a host serves it
            for name in certificate.names:
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], certificate)
                else:
                    exact.setdefault(name, certificate)
        default = next((c for c in certificates if c.file == DEFAULT_FILE), certificates[0])
        return cls(tuple(certificates), default, exact, wildcard)

    def choose(self, server_name: str | None) -> Certificate:
        """The certificate for an SNI name: exact, else the one-label wildcard, else the default."""
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            _, dot, parent = name.partition(".")
            found = self.wildcard.get(parent) if dot else None
        return found if found is not None else self.default


def read_folder(folder: Path, alpn: tuple[str, ...] = ALPN_H2) -> CertificateSet:
    """Every usable `*.pem` file of the folder, by file name; a bad one is logged and skipped. Raises
    NoCertificates (naming the folder) when none is usable."""
    try:
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(".pem") and not p.name.startswith("."))
    except OSError as exc:
        raise NoCertificates(f"DATAPLANE_TLS_CERTS: cannot read the folder {folder}: {exc}") from None
    if len(paths) > MAX_FILES:
        logger.error("TLS: %s holds %d PEM files; only the first %d are read", folder, len(paths), MAX_FILES)
        paths = paths[:MAX_FILES]
    loaded: list[Certificate] = []
    now = time.time()
    for path in paths:
        try:
            certificate = read_certificate(path, alpn)
        except (OSError, ValueError, ssl.SSLError) as exc:
            logger.error("TLS: skipped %s: %s", path, exc)
            continue
        if certificate.not_after <= now:
            logger.warning("TLS: %s expired on %s", path, _when(certificate.not_after))
        loaded.append(certificate)
    if not loaded:
        raise NoCertificates(
            f"DATAPLANE_TLS_CERTS: no usable certificate in {folder}"
            " (each *.pem file must hold a certificate chain and its private key)"
        )
    return CertificateSet.of(loaded)


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What a change of the folder changes: each entry's name, mtime and size (a rename, a replace, an
    edit, an added or removed file). Cheap enough to poll every few seconds."""
    try:
        with os.scandir(folder) as entries:
            found = []
            for entry in entries:
                try:
                    stat = entry.stat()
                except OSError:
                    continue  # removed meanwhile
                found.append((entry.name, stat.st_mtime_ns, stat.st_size))
    except OSError:
        return ()
    return tuple(sorted(found))


class Certificates:
    """The listener's certificates: the current set, the listener's context with the SNI callback that
    hands each connection the current set's context, and the reload (SIGHUP, change polling)."""

    def __init__(
        self, folder: Path, on_change: Callable[[CertificateSet], None] | None = None, *, http2: bool = True
    ) -> None:
        self.folder = folder
        self.alpn = ALPN_H2 if http2 else ALPN_HTTP1
        self._signature = folder_signature(folder)
        self.current = read_folder(folder, self.alpn)  # NoCertificates at startup: the caller refuses to start
        self.on_change = on_change
        self._reloading: asyncio.Lock | None = None
        listener = server_context(self.alpn)
        listener.load_cert_chain(str(folder / self.current.default.file))
        listener.sni_callback = self._choose
        self.listener_context = listener
        self._log_loaded()

    def _choose(self, sslobj: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        # Called once per handshake, with server_name None when the client sent no SNI.
        sslobj.context = self.current.choose(server_name).context

    def _log_loaded(self) -> None:
        current = self.current
        logger.info(
            "TLS: %d certificate(s) from %s (default %s)", len(current.certificates), self.folder, current.default.file
        )
        if self.on_change is not None:
            self.on_change(current)

    async def reload(self, reason: str) -> bool:
        """Re-read the folder off the event loop and swap the set; on failure the old set stays (logged).
        Open connections are untouched."""
        if self._reloading is None:
            self._reloading = asyncio.Lock()
        async with self._reloading:
            signature = folder_signature(self.folder)
            try:
                fresh = await asyncio.to_thread(read_folder, self.folder, self.alpn)
            except NoCertificates as exc:
                self._signature = signature
                logger.error("TLS: %s; the certificates loaded before stay in use (%s)", exc, reason)
                return False
            self._signature = signature
            self.current = fresh
            logger.info("TLS: certificates re-read (%s)", reason)
            self._log_loaded()
            return True

    async def watch(self, every: float) -> None:
        """Poll the folder's entries every `every` seconds; reload when they changed."""
        while True:
            await asyncio.sleep(every)
            if folder_signature(self.folder) != self._signature:
                await self.reload("the folder changed")
