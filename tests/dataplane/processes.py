"""Real data-plane and upstream processes on 127.0.0.1, for tests/e2e/test_dataplane_*.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.servers import ROOT, clean_env, free_port, running


@dataclass
class Upstream:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class DataPlane:
    port: int
    admin_port: int
    seed: Path
    process: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@contextmanager
def upstream(tmp_path: Path, name: str = "upstream") -> Iterator[Upstream]:
    port = free_port()
    argv = [sys.executable, "-m", "tests.dataplane.upstream", str(port), name]
    with running(argv, env=clean_env(), ready_url=f"http://127.0.0.1:{port}/_seen", log=tmp_path / f"{name}.log"):
        yield Upstream(port)


@contextmanager
def tls_upstream(tmp_path: Path, cert: Path, key: Path) -> Iterator[Upstream]:
    """The same upstream over HTTPS; ready once its port accepts connections."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.dataplane.upstream", str(port), "secure", str(cert), str(key)]
    with log_to(tmp_path / "secure.log") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
            yield Upstream(port)
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def log_to(path: Path) -> Iterator[Any]:
    with path.open("wb") as out:
        yield out


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, in PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream.crt", directory / "upstream.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextmanager
def dataplane(tmp_path: Path, seed: dict[str, Any] | None, *, workers: int = 1, **env: str) -> Iterator[DataPlane]:
    """`python -m dataplane [--workers N]` on free ports, on `seed` (or none: then ready once it is live)."""
    port, admin_port = free_port(), free_port()
    seed_path = tmp_path / "seed.yaml"
    variables = {
        "DATAPLANE_LISTEN": f"127.0.0.1:{port}",
        "DATAPLANE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "DATAPLANE_NODE_ID": "e2e-node",
        "DATAPLANE_DRAIN_DELAY": "0.2",
        **env,
    }
    if seed is not None:
        seed_path.write_text(yaml.safe_dump(seed))
        variables["DATAPLANE_SEED"] = str(seed_path)
    with running(
        [sys.executable, "-m", "dataplane", *(["--workers", str(workers)] if workers > 1 else [])],
        env=clean_env(**variables),
        ready_url=f"http://127.0.0.1:{admin_port}/-/{'readyz' if seed is not None else 'livez'}",
        log=tmp_path / "dataplane.log",
    ) as process:
        yield DataPlane(port, admin_port, seed_path, process)


def seed(*endpoints: dict[str, Any], policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"format_version": 1, "breaker_policies": policies or [], "endpoints": list(endpoints)}


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection (or stays silent for `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            received += b"<<still open>>"
        return received
