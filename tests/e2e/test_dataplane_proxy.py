"""The data plane as a real process (`python -m dataplane`) in front of a real upstream, over real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, raw_exchange, seed, upstream
from tests.e2e.servers import clean_env, eventually, free_port, running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dataplane")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "alpha") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream, transport: str) -> Iterator[DataPlane]:
    document = seed(
        {
            "name": "users",
            "version": "v1",
            "default": True,
            "methods": ["GET", "POST", "PUT"],
            "targets": [{"url": f"{origin.url}/api"}],
            "paths": ["/people"],
            "max_body_bytes": 2_000_000,
        },
        {"name": "plain", "version": "v1", "targets": [{"url": origin.url}], "timeout": 1, "connect_timeout": 1},
        {"name": "refused", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{free_port()}"}]},
        {"name": "off", "version": "v1", "enabled": False, "targets": [{"url": origin.url}]},
    )
    with dataplane(workdir, document, DATAPLANE_TRANSPORT=transport) as node:
        yield node


def seen(origin: Upstream) -> list[str]:
    return list(httpx.get(f"{origin.url}/_seen").json())


def test_a_request_reaches_the_upstream_under_the_targets_base_path(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/users/42?b=2&a=%20x")
    assert response.status_code == 200
    echo = response.json()
    assert echo["raw_path"] == "/api/42"
    assert echo["query"] == "b=2&a=%20x"
    assert response.headers["x-endpoint-id"] == "users:v1"


def test_the_upstream_sees_its_own_host_and_the_forwarded_headers(gateway: DataPlane, origin: Upstream) -> None:
    echo = httpx.get(f"{gateway.url}/users", headers={"X-Forwarded-For": "6.6.6.6"}).json()
    headers = dict(echo["headers"])
    assert headers["host"] == f"127.0.0.1:{origin.port}"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["via"] == "1.1 e2e-node"


def test_other_forwarded_and_proxy_headers_from_an_untrusted_client_do_not_reach_the_upstream(
    gateway: DataPlane,
) -> None:
    sent = {"X-Forwarded-Prefix": "/admin", "X-Forwarded-Port": "443", "Proxy-Foo": "bar", "X-Other": "kept"}
    headers = dict(httpx.get(f"{gateway.url}/users", headers=sent).json()["headers"])
    assert "x-forwarded-prefix" not in headers and "x-forwarded-port" not in headers
    assert "proxy-foo" not in headers
    assert headers["x-other"] == "kept"


def test_the_gateways_own_response_headers_replace_the_upstreams(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/plain/own-ids", headers={"X-Request-ID": "client-id-1"})
    assert response.headers.get_list("x-request-id") == ["client-id-1"]
    assert response.headers.get_list("x-endpoint-id") == ["plain:v1"]
    assert len(response.headers.get_list("x-response-time")) == 1
    assert response.headers["x-response-time"] != "9ms"


def test_gateway_made_errors_carry_the_response_time_too(gateway: DataPlane) -> None:
    for path in ("/nowhere", "/refused", "/off"):
        response = httpx.get(f"{gateway.url}{path}")
        assert response.status_code in (404, 502, 503)
        assert response.headers["x-response-time"].endswith("ms"), path


def test_an_http_1_0_client_gets_a_streamed_body_unchunked_ending_at_the_close(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"GET /plain/chunked HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert body == b"chunk0;chunk1;chunk2;chunk3;chunk4;"  # then closed: no <<still open>>


def test_an_h2c_upgrade_offer_is_answered_over_http_1_1_and_the_connection_closed(gateway: DataPlane) -> None:
    answer = raw_exchange(
        gateway.port,
        b"GET /users/h2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nconnection: close" in head.lower()
    upstream_headers = {name for name, _ in json.loads(body)["headers"]}
    assert not upstream_headers & {"upgrade", "http2-settings", "connection"}


def test_an_upgrade_header_not_named_in_connection_is_dropped_not_refused(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/users", headers={"Upgrade": "websocket", "Connection": "keep-alive"})
    assert response.status_code == 200
    assert "upgrade" not in dict(response.json()["headers"])


def test_a_head_request_gets_the_head_without_a_body(gateway: DataPlane) -> None:
    response = httpx.head(f"{gateway.url}/plain/large?bytes=5000")
    assert response.status_code == 200
    assert response.content == b""


def test_two_hundred_concurrent_requests_all_succeed(gateway: DataPlane) -> None:
    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(*(client.get(f"/users/{i}") for i in range(200)))
        return [r.status_code for r in responses]

    assert set(asyncio.run(burst())) == {200}


def test_an_encoded_slash_reaches_the_upstream_undecoded(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/users/a%2Fb").json()["raw_path"] == "/api/a%2Fb"


def test_a_large_request_body_is_streamed_to_the_upstream(gateway: DataPlane) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(16):
            yield b"b" * 65536

    echo = httpx.post(f"{gateway.url}/users/upload", content=body()).json()
    assert echo["body_length"] == 16 * 65536


def test_a_large_response_is_streamed_back_whole(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/plain/large?bytes=3000000")
    assert response.status_code == 200
    assert len(response.content) == 3_000_000


def test_a_chunked_response_arrives_whole(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/plain/chunked").text == "chunk0;chunk1;chunk2;chunk3;chunk4;"


def test_a_gzip_body_is_passed_through_as_bytes(gateway: DataPlane) -> None:
    with httpx.stream("GET", f"{gateway.url}/plain/gzip") as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"compressed " * 50


def test_a_redirect_is_passed_back_not_followed(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/plain/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == "/somewhere/else"


def test_upstream_error_statuses_pass_through(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/plain/status/404")
    assert (response.status_code, response.text) == (404, "status 404 from alpha")


def test_an_unknown_path_answers_404_no_route(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "no_route"


def test_a_disallowed_method_answers_405_with_allow(gateway: DataPlane) -> None:
    response = httpx.delete(f"{gateway.url}/users/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST, PUT"


def test_a_disabled_endpoint_answers_503(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/off").json()["error"] == "endpoint_disabled"


def test_a_refused_upstream_answers_502_upstream_unavailable(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/refused")
    assert response.status_code == 502
    assert response.json() | {"request_id": None, "message": None} == {
        "error": "upstream_unavailable",
        "message": None,
        "request_id": None,
        "endpoint": "refused:v1",
    }


def test_an_upstream_slower_than_the_timeout_answers_504(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/plain/slow?seconds=3", timeout=10)
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


def test_a_try_that_no_retry_could_follow_may_use_the_whole_timeout(gateway: DataPlane) -> None:
    # `plain`: timeout 1 s, the default 2 attempts on connect_error only. A timed-out try is never
    # retried, so the answer after 0.7 s is the upstream's, not a 504 at timeout / attempts = 0.5 s.
    response = httpx.get(f"{gateway.url}/plain/slow?seconds=0.7", timeout=10)
    assert response.status_code == 200


def test_an_upstream_dying_mid_body_aborts_the_client_connection(gateway: DataPlane) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{gateway.url}/plain/reset-mid-body")


def test_a_body_over_the_limit_answers_413(gateway: DataPlane) -> None:
    response = httpx.post(f"{gateway.url}/users", content=b"x" * 2_000_001)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_a_chunked_body_growing_over_the_limit_answers_413(gateway: DataPlane) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(40):
            yield b"c" * 65536

    response = httpx.post(f"{gateway.url}/users", content=body())
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_an_upgrade_to_another_protocol_than_websocket_answers_501(gateway: DataPlane) -> None:
    # WebSocket upgrades are tunnelled (tests/e2e/test_dataplane_websocket.py); other protocols are not.
    response = httpx.get(f"{gateway.url}/users", headers={"Connection": "Upgrade", "Upgrade": "IRC/6.9"})
    assert response.status_code == 501
    assert response.json()["error"] == "upgrade_not_supported"
    assert response.headers["connection"] == "close"


def test_a_request_looping_back_through_the_node_answers_508(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/users", headers={"Via": "1.1 e2e-node"}).status_code == 508


# --- framing, on raw sockets ---------------------------------------------------------------------


def refusal(answer: bytes) -> dict[str, object]:
    """The one answer in `answer`: a 400 with `connection: close` and the gateway's JSON error body,
    after which the server closed the connection."""
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert not answer.endswith(b"<<still open>>"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head.lower() and b"\r\ncontent-type: application/json" in head.lower()
    error = json.loads(body)
    assert set(error) == {"error", "message", "request_id", "endpoint"} and error["error"] == "bad_request"
    assert f"x-request-id: {error['request_id']}".encode() in head.lower()
    return error


def test_content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled(
    gateway: DataPlane, origin: Upstream
) -> None:
    before = seen(origin)
    answer = raw_exchange(
        gateway.port,
        b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert "Content-Length" in str(refusal(answer)["message"])
    assert not any("smuggled" in path for path in seen(origin)[len(before) :])


def test_a_duplicate_host_header_is_refused_with_400_and_close(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"GET /users HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert "Host" in str(refusal(answer)["message"])


def test_a_missing_host_header_is_refused_with_400(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"GET /users HTTP/1.1\r\n\r\n")
    assert "Host" in str(refusal(answer)["message"])


def test_a_non_numeric_content_length_is_refused_with_400(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd")
    refusal(answer)


def test_two_content_length_headers_are_refused_with_400(gateway: DataPlane) -> None:
    answer = raw_exchange(
        gateway.port, b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
    )
    refusal(answer)


def test_a_bad_chunk_size_is_refused_with_400(gateway: DataPlane) -> None:
    answer = raw_exchange(
        gateway.port, b"POST /users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n"
    )
    refusal(answer)


@pytest.mark.parametrize(
    "malformed",
    [
        b"POST /users/queued HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /users/queued HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n",
    ],
    ids=["bad-head", "bad-chunk-while-queued"],
)
def test_a_malformed_request_behind_a_slow_one_is_refused_after_the_slow_ones_answer(
    gateway: DataPlane, origin: Upstream, malformed: bytes
) -> None:
    """Pipelined: the 400 for the second request must not be read as the first one's answer."""
    before = seen(origin)
    answer = raw_exchange(gateway.port, b"GET /plain/slow?seconds=0.3 HTTP/1.1\r\nHost: x\r\n\r\n" + malformed)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    first_body_end = answer.index(b"HTTP/1.1 400 ")
    assert b"x-endpoint-id: plain:v1" in answer[:first_body_end].lower()
    refusal(answer[first_body_end:])
    assert not any("queued" in path for path in seen(origin)[len(before) :])  # the broken one never left


def test_a_request_pipelined_after_an_h2c_offer_is_not_answered_on_that_connection(gateway: DataPlane) -> None:
    answer = raw_exchange(
        gateway.port,
        b"GET /users/h2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /users/after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200 ")
    assert not answer.endswith(b"<<still open>>")  # closed: the client sends the second one again


def test_pipelined_requests_are_answered_in_order_on_one_connection(gateway: DataPlane) -> None:
    answer = raw_exchange(
        gateway.port,
        b"GET /users/first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /users/second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /users/third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 ") == 3
    positions = [answer.index(f'"raw_path": "/api/{name}"'.encode()) for name in ("first", "second", "third")]
    assert positions == sorted(positions)
    assert b'"body": "hello"' in answer
    assert b"<<still open>>" not in answer  # closed after the third, as it asked


def test_expect_100_continue_gets_the_interim_answer_then_the_upstreams(gateway: DataPlane) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /users/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ping")
        answer = b""
        while b'"body": "ping"' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_an_http_1_0_request_is_answered_and_the_connection_closed(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"GET /users/old HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer.lower()
    assert b"<<still open>>" not in answer


def test_a_uri_over_8_kib_answers_414(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/users?q=" + "a" * 9000)
    assert response.status_code == 414
    assert response.json()["error"] == "uri_too_long"


def test_a_header_block_over_32_kib_answers_431(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/users", headers={f"x-filler-{i}": "v" * 1000 for i in range(40)})
    assert response.status_code == 431
    assert response.json()["error"] == "headers_too_large"


def test_a_dot_dot_segment_is_refused_with_400(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"GET /users/../admin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<<still open>>" not in answer


# --- operations ----------------------------------------------------------------------------------


def test_the_admin_listener_reports_live_and_ready(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.admin}/-/livez").status_code == 200
    assert httpx.get(f"{gateway.admin}/-/readyz").json()["status"] == "ready"


def test_the_routes_view_says_where_a_path_goes(gateway: DataPlane, origin: Upstream) -> None:
    answer = httpx.get(f"{gateway.admin}/-/routes", params={"path": "/people/7"}).json()
    assert answer["endpoint"] == "users:v1"
    assert answer["targets"] == [{"url": f"{origin.url}/api", "upstream_url": f"{origin.url}/api/7"}]


def test_the_metrics_count_requests_by_endpoint_without_raw_paths(gateway: DataPlane) -> None:
    httpx.get(f"{gateway.url}/users/secret-path-123")
    text = httpx.get(f"{gateway.admin}/-/metrics").text
    assert 'gateway_requests_total{endpoint="users:v1",method="GET",status_class="2xx"}' in text
    assert "secret-path-123" not in text


def test_each_request_is_written_to_the_access_log(gateway: DataPlane, workdir: Path) -> None:
    httpx.get(f"{gateway.url}/users/logged", headers={"X-Request-ID": "access-log-probe"})
    wait_until(lambda: "request_id=access-log-probe" in (workdir / "dataplane.log").read_text())
    line = next(x for x in (workdir / "dataplane.log").read_text().splitlines() if "access-log-probe" in x)
    assert "endpoint=users:v1" in line and "status=200" in line and "target=http://127.0.0.1:" in line


def test_a_client_cannot_forge_access_log_fields_with_its_user_agent_or_path(gateway: DataPlane, workdir: Path) -> None:
    agent = b'x" status=999 request_id=forged error=- \xff'
    raw_exchange(
        gateway.port,
        b'GET /users/a"b HTTP/1.1\r\nHost: gw\r\nX-Request-ID: forge-probe\r\nUser-Agent: '
        + agent
        + b"\r\nConnection: close\r\n\r\n",
    )
    log = workdir / "dataplane.log"
    wait_until(lambda: "request_id=forge-probe" in log.read_text(errors="replace"))
    [line] = [x for x in log.read_text(errors="replace").splitlines() if "forge-probe" in x]
    head, _, quoted_agent = line.partition(" user_agent=")
    assert head.count(" status=") == 1 and "status=200" in head and "forged" not in head
    assert 'path="/users/a\\"b"' in head
    assert json.loads(quoted_agent) == agent.decode("latin-1")


def test_a_client_leaving_an_endless_stream_ends_the_upstream_request(gateway: DataPlane, workdir: Path) -> None:
    with httpx.stream("GET", f"{gateway.url}/plain/endless", headers={"X-Request-ID": "leaves-early"}) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    wait_until(lambda: "request_id=leaves-early" in (workdir / "dataplane.log").read_text())
    line = next(x for x in (workdir / "dataplane.log").read_text().splitlines() if "leaves-early" in x)
    assert "error=client_closed_request" in line


def test_without_a_seed_or_an_answering_control_plane_the_node_is_not_ready_and_answers_no_config(
    tmp_path: Path,
) -> None:
    """§4: a node with a control plane waits for it, unready (standalone, no seed is a refusal to start:
    tests/e2e/test_dataplane_process.py)."""
    nobody = {"DATAPLANE_CONTROL_PLANE_URL": f"http://127.0.0.1:{free_port()}", "DATAPLANE_TOKEN": "gwdp_nobody"}
    with dataplane(tmp_path, None, **nobody) as node:
        assert httpx.get(f"{node.admin}/-/readyz").status_code == 503
        response = httpx.get(f"{node.url}/users")
        assert (response.status_code, response.json()["error"]) == (503, "no_config")


def test_sighup_reloads_the_seed_and_a_bad_seed_keeps_the_old_config(tmp_path: Path, origin: Upstream) -> None:
    first = seed({"name": "one", "version": "v1", "targets": [{"url": origin.url}]})
    with dataplane(tmp_path, first) as node:
        assert httpx.get(f"{node.url}/one").status_code == 200
        node.seed.write_text(json.dumps(seed({"name": "two", "version": "v1", "targets": [{"url": origin.url}]})))
        node.process.send_signal(signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{node.url}/two").status_code == 200)
        assert httpx.get(f"{node.url}/one").status_code == 404
        node.seed.write_text("endpoints: [this is not valid")
        node.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert httpx.get(f"{node.url}/two").status_code == 200
        assert httpx.get(f"{node.admin}/-/readyz").status_code == 200


def test_command_line_flags_choose_the_listener_and_the_seed(tmp_path: Path, origin: Upstream) -> None:
    flagged = tmp_path / "flagged.yaml"
    flagged.write_text(json.dumps(seed({"name": "flagged", "version": "v1", "targets": [{"url": origin.url}]})))
    port, admin = free_port(), free_port()
    env = clean_env(
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{admin}", DATAPLANE_LISTEN="127.0.0.1:1", DATAPLANE_DRAIN_DELAY="0.1"
    )
    argv = [sys.executable, "-m", "dataplane", "--listen", f"127.0.0.1:{port}", "--seed", str(flagged)]
    with running(argv, env=env, ready_url=f"http://127.0.0.1:{admin}/-/readyz", log=tmp_path / "flags.log"):
        assert httpx.get(f"http://127.0.0.1:{port}/flagged").status_code == 200


def test_twenty_reloads_under_load_make_no_proxy_errors(tmp_path: Path, origin: Upstream) -> None:
    def document(generation: int) -> dict[str, object]:
        return seed(
            {"name": "steady", "version": "v1", "targets": [{"url": origin.url}], "timeout": 10 + generation},
            {"name": f"extra{generation}", "version": "v1", "targets": [{"url": origin.url}]},
        )

    with dataplane(tmp_path, document(0)) as node, ThreadPoolExecutor(4) as pool:

        def traffic() -> set[int]:
            with httpx.Client(base_url=node.url) as client:
                return {client.get("/steady/x").status_code for _ in range(150)}

        load = [pool.submit(traffic) for _ in range(3)]
        for generation in range(1, 21):
            node.seed.write_text(json.dumps(document(generation)))
            node.process.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        assert set().union(*(future.result() for future in load)) == {200}
        wait_until(lambda: httpx.get(f"{node.url}/extra20").status_code == 200)


def test_sigterm_turns_readyz_503_then_stops_after_in_flight_requests_finish(tmp_path: Path, origin: Upstream) -> None:
    document = seed({"name": "one", "version": "v1", "targets": [{"url": origin.url}]})
    with dataplane(tmp_path, document, DATAPLANE_DRAIN_DELAY="1") as node, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, f"{node.url}/one/slow?seconds=2", timeout=10)
        time.sleep(0.3)
        node.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{node.admin}/-/readyz").status_code == 503)
        assert httpx.get(f"{node.url}/one").status_code == 200
        assert slow.result().text == "slow"
        assert node.process.wait(timeout=30) == 0


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    eventually(condition, "the condition", timeout)
