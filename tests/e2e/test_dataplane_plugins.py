"""The plugins ip_restriction, request_headers, response_headers and the endpoint's preserve_host
(ARCHITECTURE §11) on real processes: a standalone data plane on a format-2 seed in front of a real
echo upstream, spoken to over raw sockets from an untrusted (127.0.0.1), a trusted (127.0.0.2) and an
allowed (127.0.0.3) address, and over IPv6 (::1). Attacks: spoofed, duplicated, underscored and
trailer-smuggled X-Forwarded-For; a header sent twice and in mixed case; hostile rule values."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import ROOT, clean_env, eventually, free_port
from tests.e2e.servers import RawAnswer as Answer

pytestmark = pytest.mark.e2e

UNTRUSTED, TRUSTED, ALLOWED, DENIED = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
POLICY = {"response_headers": {"set": {"X-Policy": "on"}, "remove": ["Server"]}}


def endpoint(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "version": "v1", "default": True, "targets": [{"url": url}], **fields}


def document(origin: str) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: 502
    guard = {"ip_restriction": {"allow": [f"{ALLOWED}/32", "2001:db8::/32"]}}
    return {
        "format_version": 2,
        "plugins": {"response_headers": {"set": {"X-Served-By": "gateway"}}},  # every answer, the 404 too
        "endpoints": [
            endpoint("guarded", origin, methods=["GET", "POST"], plugins=guard),
            endpoint(
                "ranked",
                origin,
                methods=["GET", "POST"],
                plugins={"ip_restriction": {"allow": ["127.0.0.0/8"], "deny": [f"{DENIED}/32"]}},
            ),
            endpoint("watched", origin, plugins={"ip_restriction": {"allow": [f"{ALLOWED}/32"], "mode": "report"}}),
            endpoint(
                "edited",
                origin,
                plugins={
                    "request_headers": {
                        "remove": ["X-Secret"],
                        "set": {"X-Env": "prod"},
                        "add": {"X-Added": "1"},
                    },
                    **POLICY,
                },
            ),
            endpoint("down", dead, plugins={**POLICY, **guard}),
            endpoint("kept", origin, preserve_host=True),
            endpoint("plain", origin),
        ],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugins")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream) -> Iterator[DataPlane]:
    with dataplane(workdir, document(origin.url), DATAPLANE_TRUSTED_PROXIES=f"{TRUSTED}/32") as node:
        yield node


def send(port: int, head: str, *, source: str = UNTRUSTED, family: int = socket.AF_INET, body: bytes = b"") -> Answer:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        if family == socket.AF_INET:
            sock.bind((source, 0))
        sock.connect((host, port))
        sock.sendall(head.encode("latin-1") + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return Answer(raw)


def get(gateway: DataPlane, path: str, *lines: str, source: str = UNTRUSTED, host: str = "gw.example") -> Answer:
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{line}\r\n" for line in lines)
    return send(gateway.port, head + "Connection: close\r\n\r\n", source=source)


def forbidden(answer: Answer) -> bool:
    if answer.status == 200:
        return False
    assert answer.status == 403, answer.body
    assert answer.json()["error"] == "ip_forbidden"
    assert answer.header("content-type") == ["application/json"]
    return True


def decisions(gateway: DataPlane, endpoint: str, decision: str) -> float:
    text = httpx.get(f"{gateway.admin}/-/metrics", timeout=10).text
    labels = f'decision="{decision}",endpoint="{re.escape(endpoint)}",plugin="ip_restriction"'
    pattern = r"^gateway_policy_decisions_total\{" + labels + r"\} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# --- ip_restriction ---------------------------------------------------------------------------------


def test_only_the_allowed_address_passes(gateway: DataPlane) -> None:
    assert not forbidden(get(gateway, "/guarded/echo", source=ALLOWED))
    assert forbidden(get(gateway, "/guarded/echo", source=UNTRUSTED))
    assert forbidden(get(gateway, "/guarded/echo", source=DENIED))
    # A refused client learns nothing more of the endpoint (not a 405 for a method it does not take).
    refused = send(gateway.port, "DELETE /guarded/echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert forbidden(refused)


def test_an_untrusted_peer_cannot_pass_for_the_allowed_address(gateway: DataPlane) -> None:
    spoofs = (
        f"X-Forwarded-For: {ALLOWED}",
        f"x-forwarded-for: {ALLOWED}",
        f"X-Real-IP: {ALLOWED}",
        f"Forwarded: for={ALLOWED}",
        f"X_Forwarded_For: {ALLOWED}",
    )
    assert forbidden(get(gateway, "/guarded/echo", *spoofs, source=UNTRUSTED))


def test_behind_the_trusted_proxy_the_forwarded_client_decides(gateway: DataPlane) -> None:
    assert not forbidden(get(gateway, "/guarded/echo", f"X-Forwarded-For: {ALLOWED}", source=TRUSTED))
    assert forbidden(get(gateway, "/guarded/echo", "X-Forwarded-For: 198.51.100.1", source=TRUSTED))
    # What the client wrote before the proxy's own hop is not believed.
    assert forbidden(get(gateway, "/guarded/echo", f"X-Forwarded-For: {ALLOWED}, 198.51.100.1", source=TRUSTED))
    # The proxy itself, with no X-Forwarded-For, is the client (and is not allowed).
    assert forbidden(get(gateway, "/guarded/echo", source=TRUSTED))


def test_duplicated_x_forwarded_for_headers_are_one_list_in_order(gateway: DataPlane) -> None:
    smuggled_first = ("X-Forwarded-For: 198.51.100.1", f"X-Forwarded-For: {ALLOWED}")
    assert not forbidden(get(gateway, "/guarded/echo", *smuggled_first, source=TRUSTED))
    smuggled_last = (f"X-Forwarded-For: {ALLOWED}", "X-Forwarded-For: 198.51.100.1")
    assert forbidden(get(gateway, "/guarded/echo", *smuggled_last, source=TRUSTED))


def test_an_underscored_x_forwarded_for_is_not_read_even_from_the_trusted_proxy(gateway: DataPlane) -> None:
    assert forbidden(get(gateway, "/guarded/echo", f"X_Forwarded_For: {ALLOWED}", source=TRUSTED))
    assert forbidden(get(gateway, "/guarded/echo", f"x_forwarded_for: {ALLOWED}", source=TRUSTED))


def test_an_x_forwarded_for_smuggled_in_a_chunked_trailer_is_ignored(gateway: DataPlane) -> None:
    head = "POST /guarded/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = f"5\r\nhello\r\n0\r\nX-Forwarded-For: {ALLOWED}\r\nX-Trailer-Probe: 1\r\n\r\n".encode()
    assert forbidden(send(gateway.port, head, source=TRUSTED, body=body))
    assert not forbidden(send(gateway.port, head, source=ALLOWED, body=body))  # POST is served there
    # Allowed by its real address, the trailer still never reaches the upstream as a header.
    passed = send(gateway.port, head.replace("/guarded/", "/ranked/"), source=UNTRUSTED, body=body)
    assert passed.upstream_got("x-trailer-probe") == []
    assert passed.upstream_got("x-forwarded-for") == [UNTRUSTED]
    assert passed.json()["body"] == "hello"


def test_ipv6_clients_behind_the_trusted_proxy_match_ipv6_rules(gateway: DataPlane) -> None:
    assert not forbidden(get(gateway, "/guarded/echo", "X-Forwarded-For: 2001:db8::5", source=TRUSTED))
    assert not forbidden(get(gateway, "/guarded/echo", "X-Forwarded-For: [2001:db8::5]:443", source=TRUSTED))
    assert forbidden(get(gateway, "/guarded/echo", "X-Forwarded-For: 2001:db9::5", source=TRUSTED))


def test_deny_wins_over_allow(gateway: DataPlane) -> None:
    assert not forbidden(get(gateway, "/ranked/echo", source=UNTRUSTED))
    assert forbidden(get(gateway, "/ranked/echo", source=DENIED))


def test_report_mode_passes_the_request_and_counts_it(gateway: DataPlane) -> None:
    before_would = decisions(gateway, "watched:v1", "would_deny")
    before_allow = decisions(gateway, "watched:v1", "allow")
    answer = get(gateway, "/watched/echo", source=UNTRUSTED)
    assert answer.status == 200 and answer.json()["name"] == "echo"
    assert get(gateway, "/watched/echo", source=ALLOWED).status == 200
    assert decisions(gateway, "watched:v1", "would_deny") == before_would + 1
    assert decisions(gateway, "watched:v1", "allow") == before_allow + 1
    assert decisions(gateway, "watched:v1", "deny") == 0
    # Enforcing endpoints count their refusals as deny.
    before_deny = decisions(gateway, "ranked:v1", "deny")
    get(gateway, "/ranked/echo", source=DENIED)
    assert decisions(gateway, "ranked:v1", "deny") == before_deny + 1
    # The access log line says what report mode would have done (lines are written in batches, off
    # the request's path, so it shows up within the log's flush interval).
    log = Path(gateway.seed).parent / "dataplane.log"
    line = f'detail="ip_restriction (report mode) would refuse {UNTRUSTED}"'
    eventually(lambda: line in log.read_text(), "the report-mode access log line", timeout=10)


@pytest.fixture(scope="module")
def gateway_v6(workdir: Path, origin: Upstream) -> Iterator[DataPlane]:
    folder = workdir / "v6"
    folder.mkdir()
    port = free_port()
    doc = {
        "format_version": 2,
        "endpoints": [
            endpoint("loopback", origin.url, plugins={"ip_restriction": {"allow": ["::1"]}}),
            endpoint("others", origin.url, plugins={"ip_restriction": {"deny": ["::/0"]}}),
        ],
    }
    with dataplane(folder, doc, DATAPLANE_LISTEN=f"[::1]:{port}") as node:
        node.port = port
        yield node


def test_an_ipv6_peer_matches_ipv6_rules(gateway_v6: DataPlane) -> None:
    head = "GET /{}/echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    allowed = send(gateway_v6.port, head.format("loopback"), family=socket.AF_INET6)
    assert allowed.upstream_got("x-forwarded-for") == ["::1"]
    assert forbidden(send(gateway_v6.port, head.format("others"), family=socket.AF_INET6))


# --- request_headers, response_headers --------------------------------------------------------------


def test_request_rules_remove_every_copy_in_any_case_then_set_then_add(gateway: DataPlane) -> None:
    answer = get(
        gateway,
        "/edited/echo",
        "X-Secret: one",
        "x-secret: two",
        "X-SECRET: three",
        "X-Env: client-dev",
        "x-env: again",
        "X-Added: client",
        "X-Kept: yes",
    )
    assert answer.upstream_got("x-secret") == []
    assert answer.upstream_got("x-env") == ["prod"]
    assert answer.upstream_got("x-added") == ["client", "1"]
    assert answer.upstream_got("x-kept") == ["yes"]
    assert answer.upstream_got("x-forwarded-for") == [UNTRUSTED]


def test_response_rules_edit_the_upstreams_answer(gateway: DataPlane) -> None:
    edited = get(gateway, "/edited/echo")
    assert edited.header("x-policy") == ["on"]
    assert edited.header("server") == []
    # The endpoint's own response_headers replaced the global one wholly.
    assert edited.header("x-served-by") == []
    plain = get(gateway, "/plain/echo")
    assert plain.header("x-served-by") == ["gateway"] and plain.header("x-policy") == []


def test_response_rules_are_on_gateway_made_answers(gateway: DataPlane) -> None:
    bad_gateway = get(gateway, "/down/echo", source=ALLOWED)
    assert bad_gateway.status == 502 and bad_gateway.json()["error"] == "upstream_unavailable"
    assert bad_gateway.header("x-policy") == ["on"]
    refused = get(gateway, "/down/echo", source=UNTRUSTED)
    assert forbidden(refused) and refused.header("x-policy") == ["on"]
    no_route = get(gateway, "/nowhere/at/all")
    assert no_route.status == 404 and no_route.json()["error"] == "no_route"
    assert no_route.header("x-served-by") == ["gateway"]
    guarded = get(gateway, "/guarded/echo", source=UNTRUSTED)
    assert forbidden(guarded) and guarded.header("x-served-by") == ["gateway"]


def test_a_rule_with_cr_lf_in_its_value_stops_the_node_naming_the_field(tmp_path: Path) -> None:
    doc = {
        "format_version": 2,
        "endpoints": [
            endpoint(
                "edited",
                "http://127.0.0.1:9",
                plugins={"request_headers": {"set": {"X-Env": "prod\r\nX-Injected: 1"}}},
            )
        ],
    }
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "dataplane", "--seed", str(path), "--listen", f"127.0.0.1:{free_port()}"],
        cwd=ROOT,
        env=clean_env(DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "endpoints[0].plugins.request_headers.set.X-Env" in result.stderr
    assert "no CR, LF, NUL" in result.stderr
    assert "Traceback" not in result.stderr


# --- preserve_host ----------------------------------------------------------------------------------


def test_preserve_host_sends_the_clients_host_upstream(gateway: DataPlane, origin: Upstream) -> None:
    kept = get(gateway, "/kept/echo", host="api.example.com")
    assert kept.upstream_got("host") == ["api.example.com"]
    plain = get(gateway, "/plain/echo", host="api.example.com")
    assert plain.upstream_got("host") == [f"127.0.0.1:{origin.port}"]
    assert plain.upstream_got("x-forwarded-host") == ["api.example.com"]


def test_preserve_host_takes_an_absolute_form_targets_authority(gateway: DataPlane) -> None:
    kept = get(gateway, "http://public.example:8443/kept/echo", host="other.example")
    assert kept.upstream_got("host") == ["public.example:8443"]
