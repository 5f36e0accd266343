"""configdoc.forwarding says what the data plane does: for a table of paths, the URL it computes is the
URL the real proxy sends upstream and the one the node's own `/-/routes` answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from configdoc import UnsafePath
from configdoc.forwarding import resolve, route_table, upstream_url
from tests.dataplane.harness import Gateway, document, endpoint

DOC = document(
    endpoint("users", "http://127.0.0.1:8010/api", default=True),
    endpoint("root", "http://127.0.0.1:8011", paths=["/r"]),
    endpoint("slash", "http://127.0.0.1:8012/base/", paths=["/s/deep"]),
    endpoint("keep", "http://127.0.0.1:8013/k", paths=["/kept/prefix"], strip_path=False),
    {"name": "users", "version": "v2", "targets": [{"url": "http://127.0.0.1:8014/v2api"}], "methods": ["POST"]},
)

# Each path is matched, stripped and joined by the proxy and by configdoc.forwarding.
PATHS = (
    "/users",
    "/users/",
    "/users/42",
    "/users/42?expand=1&x=%20y",
    "/v1/users/42/orders",
    "/v2/users/a%2Fb",
    "/v1/root",
    "/r",
    "/r/",
    "/r/x/y",
    "/v1/slash/z",
    "/s/deep",
    "/s/deep/er?q",
    "/kept/prefix",
    "/kept/prefix/1?a=b",
    "/users/%41%42",
)


def proxied_url(gateway: Gateway, path: str) -> str:
    async def go() -> None:
        async with gateway.client() as client:
            method = "POST" if path.startswith("/v2/") else "GET"
            response = await client.request(method, path)
            assert response.status_code == 200, response.text

    asyncio.run(go())
    seen = gateway.seen[-1].url
    return f"{seen.scheme}://{seen.netloc.decode()}{seen.raw_path.decode()}"


def node_routes_url(gateway: Gateway, path: str) -> str:
    async def go() -> str:
        async with gateway.admin_client() as client:
            response = await client.get("/-/routes", params={"path": path})
            assert response.status_code == 200, response.text
            return str(response.json()["targets"][0]["upstream_url"])

    return asyncio.run(go())


@pytest.mark.parametrize("path", PATHS)
def test_the_resolved_upstream_url_is_the_one_the_data_plane_sends_to(path: str) -> None:
    gateway = Gateway(DOC, lambda request: httpx.Response(200))
    resolution = resolve(route_table(DOC), path)
    assert resolution is not None
    [(_, url)] = resolution.upstream_urls
    assert url == proxied_url(gateway, path)
    assert url.split("?")[0] == node_routes_url(gateway, path.split("?")[0])


def test_an_unmatched_path_resolves_to_nothing_and_a_dot_segment_is_refused() -> None:
    table = route_table(DOC)
    assert resolve(table, "/nothing/here") is None
    assert resolve(table, "/usersx") is None
    for unsafe in ("/users/../admin", "/users/%2e%2E/x", "/users/./x", "users"):
        with pytest.raises(UnsafePath):
            resolve(table, unsafe)


def test_only_enabled_targets_are_listed() -> None:
    doc = document(
        endpoint("multi", "http://127.0.0.1:8010/a", "http://127.0.0.1:8011/b"),
    )
    doc["endpoints"][0]["targets"][1]["enabled"] = False
    resolution = resolve(route_table(doc), "/v1/multi/1")
    assert resolution is not None
    assert resolution.upstream_urls == (("http://127.0.0.1:8010/a", "http://127.0.0.1:8010/a/1"),)


def test_an_empty_remainder_goes_to_the_base_path_or_to_the_root() -> None:
    assert upstream_url("http://h:1/api/", "") == "http://h:1/api"
    assert upstream_url("http://h:1", "") == "http://h:1/"
    assert upstream_url("https://h/x", "/y", "a=1") == "https://h/x/y?a=1"
