"""§12 on a real data plane process: hosts (exact, wildcard), match_headers and method-disjoint
endpoints on one key pick the upstream; a miss on host or headers is 404 no_route, a miss on the method
405; `/-/routes` answers the same with the matcher that decided."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, raw_exchange, upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("routing")


@pytest.fixture(scope="module")
def origins(workdir: Path) -> Iterator[dict[str, Upstream]]:
    with (
        upstream(workdir, "exact") as exact,
        upstream(workdir, "wild") as wild,
        upstream(workdir, "tenant") as tenant,
        upstream(workdir, "any") as anyhost,
        upstream(workdir, "writes") as writes,
    ):
        yield {"exact": exact, "wild": wild, "tenant": tenant, "any": anyhost, "writes": writes}


@pytest.fixture(scope="module")
def gateway(workdir: Path, origins: dict[str, Upstream]) -> Iterator[DataPlane]:
    def endpoint(name: str, **keys: object) -> dict[str, object]:
        return {"name": name, "version": "v1", "paths": ["/shop"], "targets": [{"url": origins[name].url}], **keys}

    document = {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            endpoint("exact", hosts=["shop.example.com"]),
            endpoint("wild", hosts=["*.example.com"]),
            endpoint("tenant", match_headers={"X-Tenant": ["acme", "globex"]}),
            endpoint("any"),
            endpoint("writes", methods=["POST"]),
            {"name": "only", "version": "v1", "hosts": ["only.test"], "targets": [{"url": origins["any"].url}]},
        ],
    }
    with dataplane(workdir, document) as node:
        yield node


def upstream_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-endpoint-id"]


def test_the_exact_host_wins_then_the_wildcard_then_no_host(gateway: DataPlane) -> None:
    url = f"{gateway.url}/shop/1"
    assert upstream_of(httpx.get(url, headers={"Host": "shop.example.com"})) == "exact:v1"
    assert upstream_of(httpx.get(url, headers={"Host": "SHOP.Example.com:8443"})) == "exact:v1"
    assert upstream_of(httpx.get(url, headers={"Host": "eu.example.com"})) == "wild:v1"
    assert upstream_of(httpx.get(url, headers={"Host": "a.b.example.com"})) == "any:v1"
    assert upstream_of(httpx.get(url, headers={"Host": "example.com"})) == "any:v1"


def test_match_headers_come_before_an_endpoint_without_them(gateway: DataPlane) -> None:
    url = f"{gateway.url}/shop/1"
    assert upstream_of(httpx.get(url, headers={"X-Tenant": "globex"})) == "tenant:v1"
    assert upstream_of(httpx.get(url, headers={"X-Tenant": "other"})) == "any:v1"
    # A host matcher ranks before match_headers.
    assert upstream_of(httpx.get(url, headers={"Host": "shop.example.com", "X-Tenant": "acme"})) == "exact:v1"


def test_a_repeated_match_header_matches_nothing(gateway: DataPlane) -> None:
    head = b"GET /shop/1 HTTP/1.1\r\nHost: gw.test\r\nX-Tenant: acme\r\nX-Tenant: acme\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(gateway.port, head)
    assert answer.startswith(b"HTTP/1.1 200") and b"x-endpoint-id: any:v1" in answer.lower()


def test_the_method_picks_between_endpoints_on_one_key(gateway: DataPlane) -> None:
    assert upstream_of(httpx.post(f"{gateway.url}/shop/1", content=b"{}")) == "writes:v1"
    refused = httpx.delete(f"{gateway.url}/shop/1")
    assert refused.status_code == 405 and refused.json()["error"] == "method_not_allowed"
    assert refused.headers["allow"] == "GET, HEAD, POST"


def test_a_host_nothing_serves_is_no_route(gateway: DataPlane) -> None:
    assert upstream_of(httpx.get(f"{gateway.url}/only", headers={"Host": "only.test"})) == "only:v1"
    missed = httpx.get(f"{gateway.url}/only", headers={"Host": "other.test"})
    assert missed.status_code == 404 and missed.json()["error"] == "no_route"
    wrong_method = httpx.post(f"{gateway.url}/only", headers={"Host": "other.test"})
    assert wrong_method.status_code == 404  # the host decides before the method


def test_host_values_route_the_same_however_many_a_client_sends(gateway: DataPlane) -> None:
    """The node keeps the Host values it has normalized, up to a bound: a client sending a new Host on
    every request, more of them than are kept, changes no answer before, during or after; every
    spelling of a name (case, port, a trailing dot) routes as the name."""
    url = f"{gateway.url}/shop/1"
    spellings = [
        "shop.example.com",
        "SHOP.example.COM",
        "shop.example.com:8443",
        "shop.example.com.",
        "Shop.Example.Com.:80",
    ]
    with httpx.Client() as client:

        def served(host: str) -> str:
            return upstream_of(client.get(url, headers={"Host": host}))

        assert {served(host) for host in spellings} == {"exact:v1"}
        for n in range(1_500):
            assert served(f"t{n}.example.com") == "wild:v1"
            assert served(f"t{n}.example.org") == "any:v1"
            if n % 100 == 0:
                assert served(spellings[n // 100 % len(spellings)]) == "exact:v1"
        assert {served(host) for host in spellings} == {"exact:v1"}


@pytest.mark.parametrize(
    "host", [b"only.test\x00", b"only.test@evil", b"only.test.evil", b"x.only.test", b"only.test:abc", b"\xffonly.test"]
)
def test_hostile_host_values_never_reach_a_host_bound_endpoint(gateway: DataPlane, host: bytes) -> None:
    answer = raw_exchange(gateway.port, b"GET /only HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 404")), answer[:200]


def test_the_routes_view_says_which_matcher_decided(gateway: DataPlane) -> None:
    def ask(**params: object) -> dict[str, object]:
        return httpx.get(f"{gateway.admin}/-/routes", params={"path": "/shop/1", **params}).json()  # type: ignore[arg-type]

    assert ask(host="shop.example.com")["decided_by"] == "host"
    wild = ask(host="eu.example.com:80")
    assert wild["endpoint"] == "wild:v1" and wild["decided_by"] == "wildcard_host"
    tenant = ask(headers="X-Tenant: acme\nX-Other: 1")
    assert tenant["endpoint"] == "tenant:v1" and tenant["decided_by"] == "match_headers"
    post = ask(method="POST")
    assert post["endpoint"] == "writes:v1" and post["decided_by"] == "method" and post["method_allowed"] is True
    assert ask(method="DELETE")["method_allowed"] is False
    missing = httpx.get(f"{gateway.admin}/-/routes", params={"path": "/only", "host": "x.test"})
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"
    bad = httpx.get(f"{gateway.admin}/-/routes", params={"path": "/shop", "headers": "no-colon"})
    assert bad.status_code == 400
