"""Who the client is, as the upstream hears it (ARCHITECTURE §5): `X-Forwarded-*`, `Forwarded` and
`X-Real-IP` only from DATAPLANE_TRUSTED_PROXIES, header names with `_` from nobody. Raw sockets to a real
data plane, from an untrusted (127.0.0.1) and a trusted (127.0.0.2) address, to an upstream that echoes
the headers it received."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, seed, upstream

pytestmark = pytest.mark.e2e

UNTRUSTED, TRUSTED = "127.0.0.1", "127.0.0.2"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream) -> Iterator[DataPlane]:
    document = seed({"name": "users", "version": "v1", "default": True, "targets": [{"url": origin.url}]})
    with dataplane(workdir, document, DATAPLANE_TRUSTED_PROXIES=f"{TRUSTED}/32") as node:
        yield node


def received(gateway: DataPlane, *lines: str, source: str = UNTRUSTED, target: str = "/users/echo") -> list[list[str]]:
    """Send a GET with these header lines, as written, from `source`; the headers the upstream got."""
    head = f"GET {target} HTTP/1.1\r\nHost: gw.example\r\n" + "".join(f"{line}\r\n" for line in lines)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall((head + "Connection: close\r\n\r\n").encode("latin-1"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 "), answer
    headers: list[list[str]] = json.loads(body)["headers"]
    return headers


def named(headers: list[list[str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name]


SPOOFS = (
    "Forwarded: for=6.6.6.6;host=evil.example;proto=https",
    "FORWARDED: for=6.6.6.7",
    "forwarded: for=6.6.6.8",
    "X-Real-IP: 6.6.6.6",
    "x-real-ip: 6.6.6.7",
    "X-REAL-IP: 6.6.6.8",
    "X-Forwarded-For: 6.6.6.6",
    "x-forwarded-for: 6.6.6.7",
    "X-Forwarded-Host: evil.example",
    "X-FORWARDED-PROTO: https",
)
UNDERSCORES = (
    "X_Forwarded_For: 6.6.6.6",
    "x_forwarded_for: 6.6.6.7",
    "X_Forwarded_Host: evil.example",
    "X_Forwarded_Proto: https",
    "X_Real_IP: 6.6.6.6",
    "X-Custom_Header: anything",
)


def test_an_untrusted_client_cannot_say_who_it_is_in_any_spelling(gateway: DataPlane) -> None:
    headers = received(gateway, *SPOOFS, *UNDERSCORES)
    names = {name for name, _ in headers}
    assert not names & {"forwarded", "x-real-ip"}
    assert not [name for name in names if "_" in name]
    assert named(headers, "x-forwarded-for") == [UNTRUSTED]
    assert named(headers, "x-forwarded-host") == ["gw.example"]
    assert named(headers, "x-forwarded-proto") == ["http"]
    assert "6.6.6" not in json.dumps(headers) and "evil.example" not in json.dumps(headers)


def test_a_trusted_proxy_may_say_who_the_client_is(gateway: DataPlane) -> None:
    headers = received(
        gateway,
        "Forwarded: for=203.0.113.9;proto=https",
        "X-Real-IP: 203.0.113.9",
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-For: 198.51.100.7",
        "X-Forwarded-Host: api.example",
        source=TRUSTED,
    )
    assert named(headers, "forwarded") == ["for=203.0.113.9;proto=https"]
    assert named(headers, "x-real-ip") == ["203.0.113.9"]
    assert named(headers, "x-forwarded-for") == [f"203.0.113.9, 198.51.100.7, {TRUSTED}"]
    assert named(headers, "x-forwarded-host") == ["api.example"]


def test_header_names_with_underscores_are_dropped_even_from_a_trusted_proxy(gateway: DataPlane) -> None:
    headers = received(gateway, *UNDERSCORES, "X-Kept: yes", source=TRUSTED)
    assert not [name for name, _ in headers if "_" in name]
    assert named(headers, "x-forwarded-for") == [TRUSTED]
    assert named(headers, "x-kept") == ["yes"]


def test_an_absolute_form_target_names_the_forwarded_host(gateway: DataPlane) -> None:
    headers = received(gateway, target="http://public.example:8443/users/echo")
    assert named(headers, "x-forwarded-host") == ["public.example:8443"]


def test_names_the_client_lists_in_connection_stay_with_the_gateway(gateway: DataPlane) -> None:
    """Hop-by-hop by the client's say-so (RFC 9110 §7.6.1), also for a name the node has forwarded
    before (its decision is kept per name) and for one the gateway itself sets."""
    assert named(received(gateway, "X-Hop: first"), "x-hop") == ["first"]
    headers = received(gateway, "Connection: X-Hop, X-Forwarded-Host", "X-Hop: 1", "X-Kept: yes", "Proxy-Foo: 1")
    assert named(headers, "x-hop") == [] and named(headers, "proxy-foo") == []
    assert named(headers, "x-kept") == ["yes"] and named(headers, "x-forwarded-host") == ["gw.example"]
    assert named(received(gateway, "X-Hop: again"), "x-hop") == ["again"]
