"""§12's canary on a real data plane process and real upstreams: the split's share over 5,000
requests, the canary header, stickiness by header, cookie and client address (behind a trusted proxy),
percent 0 and 100, methods the target does not serve, and `/-/routes` saying what the proxy does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from configdoc.splits import compile_split
from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("split")


@pytest.fixture(scope="module")
def origins(workdir: Path) -> Iterator[dict[str, Upstream]]:
    with upstream(workdir, "stable") as stable, upstream(workdir, "canary") as canary:
        yield {"stable": stable, "canary": canary}


SPLITS: dict[str, dict[str, Any]] = {
    "rand": {"version": "v2", "percent": 10},
    "canary": {"version": "v2", "header": {"X-Canary": "1"}},
    "all": {"version": "v2", "percent": 100},
    "byheader": {"version": "v2", "percent": 30, "sticky": "header", "sticky_name": "X-User"},
    "bycookie": {"version": "v2", "percent": 50, "sticky": "cookie", "sticky_name": "session"},
    "byip": {"version": "v2", "percent": 25, "sticky": "ip"},
    "off": {"version": "v2", "percent": 100},  # its v2 is disabled
}


@pytest.fixture(scope="module")
def gateway(workdir: Path, origins: dict[str, Upstream]) -> Iterator[DataPlane]:
    endpoints: list[dict[str, Any]] = []
    for name, split in SPLITS.items():
        endpoints.append(
            {
                "name": name,
                "version": "v1",
                "default": True,
                "methods": ["GET", "POST"],
                "targets": [{"url": origins["stable"].url}],
                "traffic_split": split,
            }
        )
        canary = {"name": name, "version": "v2", "targets": [{"url": origins["canary"].url}]}
        endpoints.append({**canary, "enabled": False} if name == "off" else canary)
    document = {"format_version": 2, "breaker_policies": [], "endpoints": endpoints}
    # Loopback is a trusted proxy here, so X-Forwarded-For names the client for `sticky: ip`.
    with dataplane(workdir, document, DATAPLANE_TRUSTED_PROXIES="127.0.0.1/32") as node:
        yield node


def served_by(client: httpx.Client, path: str, **kwargs: Any) -> str:
    response = client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return response.headers["x-endpoint-id"]


def test_ten_percent_of_the_traffic_goes_to_the_canary(gateway: DataPlane, origins: dict[str, Upstream]) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        served = [served_by(client, "/rand/items") for _ in range(5000)]
    share = served.count("rand:v2") / len(served)
    assert 0.08 <= share <= 0.12, share
    assert set(served) == {"rand:v1", "rand:v2"}
    seen = httpx.get(f"{origins['canary'].url}/_seen").json()
    assert "/items" in seen  # the canary's own upstream got them, under the same forwarded path


def test_the_version_keys_are_never_split(gateway: DataPlane) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        assert {served_by(client, "/v1/all/x") for _ in range(20)} == {"all:v1"}
        assert {served_by(client, "/v2/rand/x") for _ in range(20)} == {"rand:v2"}


def test_percent_100_sends_everything_and_percent_0_nothing_but_the_header(gateway: DataPlane) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        assert {served_by(client, "/all") for _ in range(50)} == {"all:v2"}
        assert {served_by(client, "/canary") for _ in range(50)} == {"canary:v1"}
        assert {served_by(client, "/canary", headers={"X-Canary": "1"}) for _ in range(50)} == {"canary:v2"}
        assert served_by(client, "/canary", headers={"X-Canary": "2"}) == "canary:v1"


def test_a_disabled_canary_takes_no_traffic(gateway: DataPlane) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        assert {served_by(client, "/off") for _ in range(50)} == {"off:v1"}
    shown = httpx.get(f"{gateway.admin}/-/routes", params={"path": "/off"}).json()
    assert shown["endpoint"] == "off:v1" and shown["traffic_split"]["applies"] is False


def test_a_method_the_canary_does_not_serve_stays_on_the_default(gateway: DataPlane) -> None:
    response = httpx.post(f"{gateway.url}/all/x", content=b"{}")
    assert response.status_code == 200 and response.headers["x-endpoint-id"] == "all:v1"


def test_a_sticky_header_keeps_each_client_on_one_version(gateway: DataPlane) -> None:
    split = compile_split("byheader", SPLITS["byheader"])
    users = [f"user-{n}" for n in range(1500)]
    with httpx.Client(base_url=gateway.url) as client:
        landed = {user: served_by(client, "/byheader", headers={"X-User": user}) for user in users}
        for user in users[:30]:  # again: the same version each time
            assert {served_by(client, "/byheader", headers={"X-User": user}) for _ in range(5)} == {landed[user]}
    for user in users[:200]:
        assert (landed[user] == "byheader:v2") == (split.bucket(user) < 3000)
    share = sum(version == "byheader:v2" for version in landed.values()) / len(users)
    assert 0.25 <= share <= 0.35, share


def test_a_sticky_cookie_keeps_each_browser_on_one_version(gateway: DataPlane) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        landed = {}
        for n in range(1000):
            cookie = {"Cookie": f"theme=dark; session=s{n}"}
            versions = {served_by(client, "/bycookie", headers=cookie) for _ in range(3)}
            assert len(versions) == 1
            landed[n] = versions.pop()
    share = sum(version == "bycookie:v2" for version in landed.values()) / len(landed)
    assert 0.45 <= share <= 0.55, share


def test_the_client_address_keeps_a_client_on_one_version(gateway: DataPlane) -> None:
    split = compile_split("byip", SPLITS["byip"])
    with httpx.Client(base_url=gateway.url) as client:
        landed = {}
        for n in range(1000):
            address = f"198.51.{n // 250}.{n % 250 + 1}"
            forwarded = {"X-Forwarded-For": address}
            versions = {served_by(client, "/byip", headers=forwarded) for _ in range(3)}
            assert len(versions) == 1
            landed[address] = versions.pop()
    for address, version in list(landed.items())[:100]:
        assert (version == "byip:v2") == (split.bucket(address) < 2500)
    share = sum(version == "byip:v2" for version in landed.values()) / len(landed)
    assert 0.20 <= share <= 0.30, share


def test_a_client_cannot_pick_a_version_by_repeating_the_sticky_header(gateway: DataPlane) -> None:
    # Sent twice, the sticky header is no value: the request is drawn like one without it (never an error).
    with httpx.Client(base_url=gateway.url) as client:
        for _ in range(20):
            response = client.get("/byheader", headers=[("X-User", "a"), ("X-User", "b")])
            assert response.status_code == 200


def test_the_routes_view_says_what_the_proxy_does(gateway: DataPlane) -> None:
    def ask(**params: str) -> dict[str, Any]:
        response = httpx.get(f"{gateway.admin}/-/routes", params=params)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    with httpx.Client(base_url=gateway.url) as client:
        for user in ("alice", "bob", "carol", "dave", "erin"):
            shown = ask(path="/byheader/1", headers=f"X-User: {user}")
            assert shown["decided_by"] == "traffic_split"
            assert shown["traffic_split"]["decided_by"] == "sticky"
            assert shown["endpoint"] == served_by(client, "/byheader/1", headers={"X-User": user})
        address = "203.0.113.9"
        by_ip = ask(path="/byip", client_ip=address)
        assert by_ip["endpoint"] == served_by(client, "/byip", headers={"X-Forwarded-For": address})
    header = ask(path="/canary", headers="X-Canary: 1")
    assert header["endpoint"] == "canary:v2" and header["traffic_split"]["decided_by"] == "header"
    drawn = ask(path="/rand")
    assert drawn["endpoint"] == "rand:v1" and drawn["decided_by"] == "path"
    assert drawn["traffic_split"]["decided_by"] == "random" and drawn["traffic_split"]["version"] is None
    assert drawn["traffic_split"]["percent"] == 10 and drawn["traffic_split"]["to_version"] == "v2"
    assert "traffic_split" not in ask(path="/v1/rand")
