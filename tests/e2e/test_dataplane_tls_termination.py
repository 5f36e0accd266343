"""TLS termination on the data plane's own listener (ARCHITECTURE §13), on real processes: certificates
chosen by SNI from a folder, re-read on SIGHUP and on change without dropping a connection,
`X-Forwarded-Proto: https` upstream, `https_redirect`, the expiry metric, `--workers`, hostile clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.dataplane.tls_certs import Authority
from tests.e2e.servers import ROOT, clean_env, eventually, free_port

pytestmark = pytest.mark.e2e


@dataclass
class Edge:
    node: DataPlane
    tls_port: int
    ca: Authority
    certs: Path
    serials: dict[str, int]  # file name -> the serial number of the certificate written there
    log: Path


def write_folder(ca: Authority, certs: Path) -> dict[str, int]:
    certs.mkdir()
    serials = {
        "default.pem": ca.issue(certs / "default.pem", "default.test").serial_number,
        "api.pem": ca.issue(certs / "api.pem", "api.example.com").serial_number,
        "shop.pem": ca.issue(certs / "shop.pem", "shop.example.net", "www.shop.example.net").serial_number,
        "wild.pem": ca.issue(certs / "wild.pem", "*.apps.example.com").serial_number,
        "old.pem": ca.issue(certs / "old.pem", "old.example.com", days=-2).serial_number,
    }
    (certs / "garbage.pem").write_bytes(b"\x00\xff not a certificate \r\n-----BEGIN CERTIFICATE-----\nAAAA\n")
    return serials


def document(upstream_url: str) -> dict[str, object]:
    return {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            {"name": "echo", "version": "v1", "targets": [{"url": upstream_url}]},
            {
                "name": "secure",
                "version": "v1",
                "targets": [{"url": upstream_url}],
                "methods": ["GET", "POST"],
                "https_redirect": True,
            },
        ],
    }


@contextmanager
def running_edge(tmp: Path, upstream_url: str, *, workers: int = 1, poll: str = "0.2") -> Iterator[Edge]:
    ca = Authority.create(tmp)
    certs = tmp / "certs"
    serials = write_folder(ca, certs)
    tls_port = free_port()
    with dataplane(
        tmp,
        document(upstream_url),
        workers=workers,
        DATAPLANE_TLS_LISTEN=f"127.0.0.1:{tls_port}",
        DATAPLANE_TLS_CERTS=str(certs),
        DATAPLANE_TLS_POLL=poll,
        DATAPLANE_HEADER_TIMEOUT="1",
    ) as node:
        yield Edge(node, tls_port, ca, certs, serials, tmp / "dataplane.log")


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with upstream(tmp_path_factory.mktemp("tls-upstream"), "echo") as server:
        yield server.url


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, echo: str) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("tls-edge"), echo) as running:
        yield running


# --- clients ---------------------------------------------------------------------------------------------


def client_context(ca: Authority, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def served(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def connect(edge: Edge, name: str | None, *, verify: bool = True) -> ssl.SSLSocket:
    context = client_context(edge.ca)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=15)
    return context.wrap_socket(raw, server_hostname=name)


def request(sock: ssl.SSLSocket, host: str, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def curl(edge: Edge, name: str, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "curl", "-sS", "--max-time", "20", "--resolve", f"{name}:{edge.tls_port}:127.0.0.1",
        "--cacert", str(edge.ca.path), "-w", "\n%{http_code} %{ssl_verify_result}", *extra,
        f"https://{name}:{edge.tls_port}{path}",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def upstream_headers(body: str) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


# --- choosing the certificate ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api.example.com", "www.shop.example.net", "tenant-7.apps.example.com"])
def test_curl_verifies_the_certificate_chosen_by_sni(edge: Edge, name: str) -> None:
    result = curl(edge, name, "/v1/echo/x")
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200 0"
    assert upstream_headers(body)["x-forwarded-proto"] == "https"


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("api.example.com", "api.pem"),
        ("API.Example.COM", "api.pem"),
        ("shop.example.net", "shop.pem"),
        ("a.apps.example.com", "wild.pem"),
        ("apps.example.com", "default.pem"),  # a wildcard covers one label, not its parent...
        ("a.b.apps.example.com", "default.pem"),  # ...nor two labels
        ("unknown.test", "default.pem"),
        (None, "default.pem"),  # no SNI
    ],
)
def test_the_server_serves_the_certificate_of_the_sni_name_else_the_default(
    edge: Edge, name: str | None, file: str
) -> None:
    with connect(edge, name, verify=False) as sock:
        assert served(sock) == edge.serials[file]


def test_an_expired_certificate_is_still_served_for_its_name_and_fails_verification(edge: Edge) -> None:
    with connect(edge, "old.example.com", verify=False) as sock:
        assert served(sock) == edge.serials["old.pem"]
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        connect(edge, "old.example.com")


def test_a_file_that_is_not_a_certificate_is_skipped_with_a_log_line(edge: Edge) -> None:
    assert "TLS: skipped" in edge.log.read_text() and "garbage.pem" in edge.log.read_text()
    assert httpx.get(f"{edge.node.admin}/-/readyz").status_code == 200


def test_tls_1_1_is_refused(edge: Edge) -> None:
    with warnings.catch_warnings():  # the ssl module deprecates TLS 1.1 (as it should)
        warnings.simplefilter("ignore", DeprecationWarning)
        context = client_context(edge.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so this client offers TLS 1.1 at all
    raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=15)
    with pytest.raises(ssl.SSLError) as refused, context.wrap_socket(raw, server_hostname="api.example.com"):
        pass
    # The server ended the handshake: this client did offer TLS 1.1 (it did not decline to try).
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)
    # TLS 1.2 is served, not only 1.3.
    tls12 = client_context(edge.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=15)
    with tls12.wrap_socket(raw, server_hostname="api.example.com") as sock:
        assert sock.version() == "TLSv1.2"
        assert b" 200 " in request(sock, "api.example.com", "/v1/echo/x").split(b"\r\n")[0] + b" "


# --- what the upstream and the client see ------------------------------------------------------------------


def test_the_plain_listener_keeps_working_and_says_http_upstream(edge: Edge) -> None:
    response = httpx.get(f"{edge.node.url}/v1/echo/x")
    assert response.status_code == 200
    assert upstream_headers(response.text)["x-forwarded-proto"] == "http"


def test_a_client_cannot_claim_https_over_the_plain_listener(edge: Edge) -> None:
    response = httpx.get(f"{edge.node.url}/v1/echo/x", headers={"X-Forwarded-Proto": "https"})
    assert upstream_headers(response.text)["x-forwarded-proto"] == "http"


def test_https_redirect_answers_plain_http_with_308_to_the_tls_port(edge: Edge) -> None:
    response = httpx.post(
        f"{edge.node.url}/v1/secure/orders?id=7&x=%20y", headers={"Host": "api.example.com:8080"}, content=b"{}"
    )
    assert response.status_code == 308
    assert response.headers["location"] == f"https://api.example.com:{edge.tls_port}/v1/secure/orders?id=7&x=%20y"


def test_following_the_redirect_keeps_the_method_and_body(edge: Edge) -> None:
    port = edge.node.port
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-L",
            "--resolve",
            f"api.example.com:{port}:127.0.0.1",
            "--resolve",
            f"api.example.com:{edge.tls_port}:127.0.0.1",
            "--cacert",
            str(edge.ca.path),
            "-X",
            "POST",
            "--data-binary",
            "hello",
            f"http://api.example.com:{port}/v1/secure/orders",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    echoed = json.loads(result.stdout)
    assert echoed["method"] == "POST" and echoed["body"] == "hello"
    assert {name.lower(): value for name, value in echoed["headers"]}["x-forwarded-proto"] == "https"


def test_https_redirect_does_not_redirect_a_request_that_came_over_tls(edge: Edge) -> None:
    result = curl(edge, "api.example.com", "/v1/secure/x")
    assert result.stdout.endswith("\n200 0")


@pytest.mark.parametrize("host", [b"evil.example.com/path", b"a b", b"x\x00y", b"[zz]"])
def test_a_bad_host_is_refused_not_redirected(edge: Edge, host: bytes) -> None:
    with socket.create_connection(("127.0.0.1", edge.node.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/secure/x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"location" not in answer.lower()


def test_the_expiry_of_each_certificate_is_a_metric(edge: Edge) -> None:
    metrics = httpx.get(f"{edge.node.admin}/-/metrics").text
    values = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_tls_certificate_expiry_seconds{")
    }
    assert set(values) == {"default", "api", "shop", "wild", "old"}
    assert 9 * 86400 < values["api"] <= 10 * 86400
    assert values["old"] < 0


# --- hostile clients ---------------------------------------------------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def still_serves(edge: Edge) -> None:
    assert curl(edge, "api.example.com", "/v1/echo/x").stdout.endswith("\n200 0")


def test_garbage_bytes_on_the_tls_port_close_the_connection(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.tls_port), timeout=30) as sock:
        sock.sendall(os.urandom(4096) + b"\x00" * 64)
        try:
            read_until_closed(sock)
        except ConnectionResetError:
            pass
    still_serves(edge)


def test_plain_http_on_the_tls_port_gets_no_http_answer(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.tls_port), timeout=30) as sock:
        sock.sendall(b"GET /v1/echo/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        try:
            answer = read_until_closed(sock)
        except ConnectionResetError:
            answer = b""
    assert b"HTTP/1.1" not in answer
    still_serves(edge)


@pytest.mark.parametrize("first", [b"", b"\x16\x03\x01\x02\x00\x01"])  # nothing, or half a ClientHello
def test_a_stalled_handshake_is_dropped_by_the_handshake_deadline(edge: Edge, first: bytes) -> None:
    with socket.create_connection(("127.0.0.1", edge.tls_port), timeout=30) as sock:
        sock.sendall(first)
        try:
            assert read_until_closed(sock) == b""  # closed by the server (DATAPLANE_HEADER_TIMEOUT=1), not us
        except ConnectionResetError:
            pass
    still_serves(edge)


def test_many_stalled_handshakes_do_not_keep_others_from_being_served(edge: Edge) -> None:
    stalled = [socket.create_connection(("127.0.0.1", edge.tls_port), timeout=30) for _ in range(100)]
    try:
        for sock in stalled[::2]:
            sock.sendall(b"\x16\x03\x01")  # the start of a record header, and no more
        still_serves(edge)
    finally:
        for sock in stalled:
            sock.close()


def test_an_odd_sni_name_gets_the_default_certificate(edge: Edge) -> None:
    for name in ("a" * 63 + "." + "b" * 63 + ".example", "xn--bcher-kva.example", "under_score.test", "1.2.3.4.test"):
        with connect(edge, name, verify=False) as sock:
            assert served(sock) == edge.serials["default.pem"]
    still_serves(edge)


def test_a_slow_request_head_after_the_handshake_gets_408(edge: Edge) -> None:
    with connect(edge, "api.example.com") as sock:
        sock.sendall(b"GET /v1/echo/x HTTP/1.1\r\nHost: api")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")


# --- reloading -------------------------------------------------------------------------------------------


def serial_for(edge: Edge, name: str) -> int:
    with connect(edge, name) as sock:
        return served(sock)


def test_a_replaced_certificate_is_served_to_new_connections_while_an_open_one_finishes(edge: Edge) -> None:
    before = edge.serials["api.pem"]
    with connect(edge, "api.example.com") as held:
        assert served(held) == before
        held.sendall(b"GET /v1/echo/slow?seconds=4 HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        fresh = edge.ca.issue(edge.certs / "api.pem", "api.example.com").serial_number
        eventually(lambda: serial_for(edge, "api.example.com") == fresh, "the new certificate served", timeout=30)
        answer = read_until_closed(held)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"slow")
    edge.serials["api.pem"] = fresh
    assert "TLS: certificates re-read (the folder changed)" in edge.log.read_text()


def test_a_folder_that_becomes_unusable_keeps_the_certificates_loaded_before(edge: Edge, tmp_path: Path) -> None:
    moved = tmp_path / "aside"
    moved.mkdir()
    good = [path for path in edge.certs.iterdir() if path.name != "garbage.pem"]
    for path in good:
        path.replace(moved / path.name)
    try:
        eventually(lambda: "no usable certificate in" in edge.log.read_text(), "the failed re-read logged", timeout=30)
        assert serial_for(edge, "api.example.com") == edge.serials["api.pem"]
    finally:
        for path in moved.iterdir():
            path.replace(edge.certs / path.name)
    eventually(lambda: serial_for(edge, "api.example.com") == edge.serials["api.pem"], "served again", timeout=30)


def test_sighup_rereads_the_folder(tmp_path: Path, echo: str) -> None:
    # Polling once an hour: only the signal can make this node see the change.
    with running_edge(tmp_path, echo, poll="3600") as node:
        with connect(node, "shop.example.net") as held:
            held.sendall(b"GET /v1/echo/slow?seconds=3 HTTP/1.1\r\nHost: shop.example.net\r\nConnection: close\r\n\r\n")
            fresh = node.ca.issue(node.certs / "shop.pem", "shop.example.net").serial_number
            assert serial_for(node, "shop.example.net") == node.serials["shop.pem"]
            node.node.process.send_signal(signal.SIGHUP)
            eventually(lambda: serial_for(node, "shop.example.net") == fresh, "the new certificate served", timeout=30)
            assert read_until_closed(held).startswith(b"HTTP/1.1 200 ")
        assert "TLS: certificates re-read (SIGHUP)" in node.log.read_text()


def test_workers_share_the_tls_listener(tmp_path: Path, echo: str) -> None:
    with running_edge(tmp_path, echo, workers=2) as node:
        for _ in range(6):  # new connections: spread over both workers
            assert curl(node, "api.example.com", "/v1/echo/x").stdout.endswith("\n200 0")
        metrics = httpx.get(f"{node.node.admin}/-/metrics").text
        assert 'gateway_tls_certificate_expiry_seconds{name="api"}' in metrics


def test_without_a_usable_certificate_the_node_refuses_to_start_naming_the_folder(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "default.pem").write_bytes(b"garbage")
    seed = tmp_path / "seed.yaml"
    seed.write_text(json.dumps(document("http://127.0.0.1:9")))
    env = clean_env(
        DATAPLANE_LISTEN=f"127.0.0.1:{free_port()}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
        DATAPLANE_TLS_LISTEN=f"127.0.0.1:{free_port()}",
        DATAPLANE_TLS_CERTS=str(certs),
        DATAPLANE_SEED=str(seed),
    )
    done = subprocess.run(
        [sys.executable, "-m", "dataplane"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert f"no usable certificate in {certs}" in done.stderr
    assert "skipped" in done.stderr and "default.pem" in done.stderr


def test_tls_settings_come_in_pairs(tmp_path: Path) -> None:
    env = clean_env(DATAPLANE_TLS_LISTEN="127.0.0.1:8443")
    done = subprocess.run(
        [sys.executable, "-m", "dataplane"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "DATAPLANE_TLS_CERTS" in done.stderr


# --- the example of docs/dataplane.md ----------------------------------------------------------------------


def test_the_docs_example_sets_up_the_folder_and_serves_https(tmp_path: Path, echo: str) -> None:
    page = (ROOT / "docs" / "dataplane.md").read_text(encoding="utf-8")
    block = page.split("## TLS termination", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    tls_port, plain_port, admin_port = free_port(), free_port(), free_port()
    ports = {":8443": f":{tls_port}", ":8080": f":{plain_port}", ":8010": f":{echo.rsplit(':', 1)[1]}"}
    for documented, free in ports.items():
        block = block.replace(documented, free)
    lines = block.replace("\\\n", "").splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("DATAPLANE_TLS_LISTEN="))
    subprocess.run(["bash", "-euc", "\n".join(lines[:start])], cwd=tmp_path, env=clean_env(), check=True, timeout=60)
    # The data plane's line as written (its variables and flags), run from the example's folder.
    words = lines[start].split(" &")[0].split()
    variables = dict(word.split("=", 1) for word in words if word.startswith("DATAPLANE_"))
    argv = [sys.executable if word == "python" else word for word in words if not word.startswith("DATAPLANE_")]
    env = clean_env(
        **variables,
        DATAPLANE_LISTEN=f"127.0.0.1:{plain_port}",  # the documented defaults, on free ports
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
        PYTHONPATH=str(ROOT),
    )
    with (tmp_path / "dataplane.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: httpx.get(f"http://127.0.0.1:{admin_port}/-/readyz").status_code == 200, "ready")
            curls = [line for line in lines[start + 1 :] if line.startswith("curl ")]
            redirect = subprocess.run(
                ["bash", "-euc", curls[0]], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30
            ).stdout
            assert redirect.startswith("HTTP/1.1 308 ")
            assert f"location: https://api.example.com:{tls_port}/v1/orders/items" in redirect
            served = subprocess.run(
                ["bash", "-euc", curls[1]], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30
            )
            assert served.returncode == 0, served.stderr
            assert json.loads(served.stdout)["name"] == "echo"  # the upstream answered, over verified TLS
            # Renewal: the same lines again write a new certificate; SIGHUP; new connections get it.
            before = (tmp_path / "cert.pem").read_bytes()
            subprocess.run(["bash", "-euc", "\n".join(lines[1:3])], cwd=tmp_path, env=clean_env(), check=True)
            assert (tmp_path / "cert.pem").read_bytes() != before
            process.send_signal(signal.SIGHUP)
            eventually(
                lambda: subprocess.run(["bash", "-euc", curls[1]], cwd=tmp_path, env=clean_env(), timeout=30).returncode
                == 0,
                "the renewed certificate served",
            )
        finally:
            process.terminate()
            process.wait(timeout=40)
