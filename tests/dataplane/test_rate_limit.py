"""`rate_limit` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream): exact counts at
a window's edge (the counters' clock is driven by the test), the RateLimit-* headers, each `by`, a
spoofed or repeated header, report mode, the LRU cap, and `policy: redis` against a real redis-server
(counted there; down → counted locally or 503)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from configdoc import validate_document
from dataplane import ratelimit
from dataplane.ratelimit import Limit, LocalCounters, RedisCounters, judge
from tests.dataplane.auth import ALICE_KEY, BOB_KEY, consumers, decisions
from tests.dataplane.harness import Gateway, endpoint, ok
from tests.e2e.servers import redis_server

T0 = 1_800_000_000.0  # a whole minute, hour and day since the epoch: window edges are round numbers
TRUSTED = "10.0.0.1"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def document(plugins: dict[str, Any], *, with_consumers: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format_version": 2,
        "endpoints": [endpoint("users", default=True, plugins=plugins), endpoint("open")],
    }
    if with_consumers:
        data["consumers"] = consumers()
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return canonical


def limited(*limits: tuple[int, str], **config: Any) -> dict[str, Any]:
    return {"rate_limit": {"limits": [{"requests": n, "per": per} for n, per in limits], **config}}


def gateway(plugins: dict[str, Any], clock: Clock | None = None, **settings: Any) -> Gateway:
    settings.setdefault("trusted_proxies", (ipaddress.ip_network(f"{TRUSTED}/32"),))
    gw = Gateway(document(plugins, with_consumers="key_auth" in plugins), ok, **settings)
    ratelimit.RATE_LIMITS.local.clock = clock or Clock()
    return gw


Header = tuple[str, str] | tuple[bytes, bytes]


def calls(
    gw: Gateway,
    count: int,
    *,
    peer: str = "192.0.2.1",
    headers: Sequence[Header] = (),
    path: str = "/users/x",
) -> list[httpx.Response]:
    """`count` requests one after the other, from `peer`."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gw.proxy, client=(peer, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            raw = [
                (n.encode() if isinstance(n, str) else n, v.encode() if isinstance(v, str) else v) for n, v in headers
            ]
            return [await client.get(path, headers=raw) for _ in range(count)]

    return asyncio.run(go())


def statuses(responses: list[httpx.Response]) -> list[int]:
    return [response.status_code for response in responses]


def passed(responses: list[httpx.Response]) -> int:
    return sum(response.status_code == 200 for response in responses)


# --- counting and the window's edge ----------------------------------------------------------------


def test_exactly_the_limit_passes_in_a_window_and_the_next_window_starts_afresh() -> None:
    clock = Clock(T0 + 59.0)
    gw = gateway(limited((3, "minute"), by="ip"), clock)
    assert statuses(calls(gw, 4)) == [200, 200, 200, 429]
    clock.now = T0 + 59.999
    assert statuses(calls(gw, 1)) == [429]
    clock.now = T0 + 60.0  # the next minute: a fresh window, exactly at its first instant
    assert statuses(calls(gw, 4)) == [200, 200, 200, 429]
    assert len(gw.seen) == 6


def test_every_limit_holds_at_once_and_a_refused_request_is_not_counted() -> None:
    clock = Clock()
    gw = gateway(limited((2, "second"), (3, "minute"), by="ip"), clock)
    assert statuses(calls(gw, 3)) == [200, 200, 429]  # the per-second limit refuses the third
    clock.now += 1
    # The refused one cost nothing: one request is left of the minute, not zero.
    assert statuses(calls(gw, 2)) == [200, 429]
    refused = calls(gw, 1)[0]
    assert refused.json()["error"] == "rate_limited"
    assert refused.headers["retry-after"] == "59"  # until the minute ends, not the second


def test_answers_carry_the_most_restrictive_limits_headers() -> None:
    clock = Clock(T0 + 20.25)
    gw = gateway(limited((5, "second"), (3, "minute"), by="ip"), clock)
    first, second, third, fourth = calls(gw, 4)
    assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == ("3", "2")
    assert first.headers["ratelimit-reset"] == "40"  # 39.75 s to the minute's end, rounded up
    assert second.headers["ratelimit-remaining"] == "1" and third.headers["ratelimit-remaining"] == "0"
    assert fourth.status_code == 429
    assert fourth.headers["ratelimit-remaining"] == "0" and fourth.headers["retry-after"] == "40"
    assert fourth.json()["message"] == "too many requests; retry in 40 s"


def test_an_endpoint_without_the_plugin_answers_without_headers() -> None:
    gw = gateway(limited((1, "minute"), by="ip"))
    responses = calls(gw, 3, path="/open/x")
    assert statuses(responses) == [200, 200, 200]
    assert "ratelimit-limit" not in responses[0].headers


def test_a_gateway_error_after_the_count_carries_the_headers_too() -> None:
    gw = gateway(limited((5, "minute"), by="ip"), max_concurrency=1)
    gw.runtime.in_flight = 1  # at the concurrency limit: 503 overloaded, after the rate limit counted
    response = calls(gw, 1)[0]
    assert response.status_code == 503 and response.headers["ratelimit-remaining"] == "4"


def test_the_judge_breaks_a_tie_by_the_window_that_ends_last() -> None:
    verdict = judge((Limit(1, 1), Limit(1, 60)), [1, 1], T0 + 0.5)
    assert not verdict.allowed and verdict.retry_after == 60 and verdict.reset == 60


# --- who is counted ---------------------------------------------------------------------------------


def test_by_ip_counts_each_client_address_and_honours_trusted_proxies() -> None:
    gw = gateway(limited((2, "minute"), by="ip"))
    assert passed(calls(gw, 3, peer="192.0.2.1")) == 2
    assert passed(calls(gw, 3, peer="192.0.2.2")) == 2
    # Behind the trusted proxy, the client is the X-Forwarded-For hop, not the proxy.
    assert passed(calls(gw, 3, peer=TRUSTED, headers=[("X-Forwarded-For", "198.51.100.7")])) == 2
    assert passed(calls(gw, 3, peer=TRUSTED, headers=[("X-Forwarded-For", "198.51.100.8")])) == 2
    # An untrusted peer cannot pick its own address with the header.
    assert passed(calls(gw, 1, peer="192.0.2.1", headers=[("X-Forwarded-For", "198.51.100.9")])) == 0


def test_by_consumer_counts_each_consumer_and_the_anonymous_one_as_its_own() -> None:
    plugins = {"key_auth": {"key_names": ["X-API-Key"], "anonymous": "guest"}, **limited((2, "minute"))}
    gw = gateway(plugins)
    assert passed(calls(gw, 3, headers=[("X-API-Key", ALICE_KEY)])) == 2
    assert passed(calls(gw, 3, headers=[("X-API-Key", BOB_KEY)], peer="192.0.2.9")) == 2
    # Every credential-less request is the anonymous consumer, whatever its address.
    assert passed(calls(gw, 1, peer="192.0.2.3")) == 1
    assert passed(calls(gw, 1, peer="192.0.2.4")) == 1
    assert passed(calls(gw, 1, peer="192.0.2.5")) == 0


def test_by_consumer_without_any_consumer_counts_by_address() -> None:
    gw = gateway(limited((1, "minute"), by="consumer"))
    assert passed(calls(gw, 2, peer="192.0.2.1")) == 1
    assert passed(calls(gw, 2, peer="192.0.2.2")) == 1


def test_by_endpoint_counts_every_caller_together() -> None:
    gw = gateway(limited((3, "minute"), by="endpoint"))
    assert passed(calls(gw, 2, peer="192.0.2.1")) == 2
    assert passed(calls(gw, 2, peer="192.0.2.2")) == 1


def test_by_header_counts_each_value_and_without_it_the_address() -> None:
    gw = gateway(limited((1, "minute"), by="header", header_name="X-Client-Id"))
    assert passed(calls(gw, 2, headers=[("X-Client-Id", "a")])) == 1
    assert passed(calls(gw, 2, headers=[("x-client-id", "b")])) == 1  # header names ignore case
    assert passed(calls(gw, 2, peer="192.0.2.1")) == 1
    assert passed(calls(gw, 2, peer="192.0.2.2")) == 1


def test_a_repeated_header_is_one_key_of_its_joined_values_never_one_of_them() -> None:
    # A client repeating the header does not get counted as (and so cannot use up) the first value's
    # allowance, nor escape into it: "a" twice is the key "a, a", distinct from "a".
    gw = gateway(limited((1, "minute"), by="header", header_name="X-Client-Id"))
    assert passed(calls(gw, 1, headers=[("X-Client-Id", "a")])) == 1
    assert passed(calls(gw, 2, headers=[("X-Client-Id", "a"), ("X-Client-Id", "a")])) == 1
    assert passed(calls(gw, 1, headers=[("X-Client-Id", "a, a")])) == 0  # the same key, spelled joined
    assert passed(calls(gw, 1, headers=[("X-Client-Id", "a")])) == 0


def test_hostile_header_values_are_counted_not_crashing_and_long_ones_cost_a_digest() -> None:
    gw = gateway(limited((1, "minute"), by="header", header_name="X-Client-Id"))
    # (A NUL reaches no plugin behind uvicorn, which refuses it; in-process it is just another key.)
    for value in (b"\xff\xfe", b"x" * 8000, b"\xed\xa0\x80", b"}{gw:rl:", b"a\tb", b"a\x00b"):
        responses = calls(gw, 2, headers=[(b"x-client-id", value)])
        assert statuses(responses) == [200, 429], value
    assert all(len(key) < 100 for key in ratelimit.RATE_LIMITS.local._entries)


def test_a_header_that_would_smuggle_a_second_value_in_its_name_is_not_the_counted_header() -> None:
    gw = gateway(limited((1, "minute"), by="header", header_name="X-Client-Id"))
    # `X_Client_Id` (CGI spelling) is dropped by the gateway and never read as X-Client-Id.
    assert passed(calls(gw, 2, headers=[("X_Client_Id", "a")], peer="192.0.2.1")) == 1
    assert passed(calls(gw, 1, headers=[("X-Client-Id", "a")], peer="192.0.2.1")) == 1


# --- report mode, decisions, the LRU cap -----------------------------------------------------------


def test_report_mode_lets_an_over_limit_request_through_counts_would_deny_and_sends_no_headers() -> None:
    gw = gateway(limited((1, "minute"), by="ip", mode="report"))
    responses = calls(gw, 3)
    assert statuses(responses) == [200, 200, 200]
    assert all("ratelimit-limit" not in response.headers for response in responses)
    assert decisions(gw) == {("users:v1", "rate_limit", "allow"): 1.0, ("users:v1", "rate_limit", "would_deny"): 2.0}


def test_enforce_mode_counts_allow_and_deny() -> None:
    gw = gateway(limited((1, "minute"), by="ip"))
    calls(gw, 3)
    assert decisions(gw) == {("users:v1", "rate_limit", "allow"): 1.0, ("users:v1", "rate_limit", "deny"): 2.0}


def test_a_changed_limit_applies_to_the_counts_already_made() -> None:
    from dataplane.snapshot import compile_document

    gw = gateway(limited((5, "minute"), by="ip"))
    assert passed(calls(gw, 2)) == 2
    gw.runtime.apply(compile_document(document(limited((3, "minute"), by="ip"))))
    assert passed(calls(gw, 5)) == 1


def test_new_limits_keep_the_counts_of_the_windows_they_share_with_the_old_ones() -> None:
    """A new snapshot brings new Limit tuples (equal or not): the windows both have keep their counts,
    a window added starts empty, one dropped is forgotten."""
    clock = Clock()
    counters = LocalCounters(10, clock=clock)
    old = (Limit(3, 60),)
    assert [counters.hit(b"k", old).remaining for _ in range(2)] == [2, 1]
    assert counters.hit(b"k", (Limit(3, 60),)).remaining == 0  # an equal tuple, not the same one
    assert not counters.hit(b"k", old).allowed
    wider = (Limit(10, 1), Limit(5, 60))  # a per-second limit added, the minute's raised
    verdict = counters.hit(b"k", wider)
    assert verdict.allowed and verdict.limit == 5 and verdict.remaining == 1  # 3 counted + this one
    assert counters.hit(b"k", (Limit(2, 1),)).remaining == 0  # the second's window: 1 counted + this


def test_local_counters_keep_at_most_max_keys_and_evict_the_least_recently_used() -> None:
    clock = Clock()
    counters = LocalCounters(3, clock=clock)
    one = (Limit(1, 60),)
    for key in (b"a", b"b", b"c"):
        assert counters.hit(key, one).allowed
    assert not counters.hit(b"a", one).allowed  # touched: b is now the least recently used
    assert counters.hit(b"d", one).allowed
    assert len(counters) == 3
    assert counters.hit(b"b", one).allowed  # b was evicted: it starts afresh (the documented price)
    assert not counters.hit(b"a", one).allowed  # a was kept


def test_a_million_distinct_callers_never_hold_more_than_the_cap() -> None:
    clock = Clock()
    counters = LocalCounters(1000, clock=clock)
    limits = (Limit(5, 1), Limit(100, 3600))
    for number in range(20_000):
        counters.hit(number.to_bytes(4, "big"), limits)
        if number % 5000 == 0:
            clock.now += 7200  # old windows end: expired keys leave first
    assert len(counters) == 1000


def test_the_cap_comes_from_the_setting() -> None:
    gw = gateway(limited((1, "minute"), by="ip"), rate_limit_max_keys=2)
    for peer in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        calls(gw, 1, peer=peer)
    assert len(ratelimit.RATE_LIMITS.local) == 2
    assert gw.runtime.settings.rate_limit_max_keys == 2


# --- policy: redis against a real redis-server ------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    with redis_server(tmp_path / "redis.log") as server:
        yield server


def run_in_one_loop(gw: Gateway, plan: list[tuple[int, str]]) -> list[int]:
    """Requests (count, peer) in one event loop (the Redis client lives in the loop that made it),
    closing the app (and its Redis client) at the end, as the process does on shutdown."""

    async def go() -> list[int]:
        result: list[int] = []
        for count, peer in plan:
            transport = httpx.ASGITransport(app=gw.proxy, client=(peer, 5555))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                for _ in range(count):
                    result.append((await client.get("/users/x")).status_code)
        await gw.proxy.aclose()
        return result

    return asyncio.run(go())


def test_redis_counts_are_shared_by_two_gateways(redis: tuple[int, Any]) -> None:
    port, _ = redis
    url = f"redis://127.0.0.1:{port}/0"
    config = limited((5, "minute"), by="ip", policy="redis", fault_tolerant=False)
    first = gateway(config, redis_url=url)
    statuses_first = run_in_one_loop(first, [(3, "192.0.2.1")])
    second = gateway(config, redis_url=url)
    statuses_second = run_in_one_loop(second, [(4, "192.0.2.1"), (1, "192.0.2.2")])
    together = statuses_first + statuses_second[:4]
    # Unless a minute ended between them, exactly 5 of the 7 pass; a new minute may let more through.
    assert together.count(200) >= 5 and together.count(503) == 0
    assert statuses_second[4] == 200


def test_concurrent_requests_cost_one_evalsha_each_and_nothing_else(redis: tuple[int, Any]) -> None:
    import redis as redis_py

    port, _ = redis
    gw = gateway(limited((30, "minute"), by="endpoint", policy="redis"), redis_url=f"redis://127.0.0.1:{port}/0")
    admin = redis_py.Redis(port=port)

    async def go() -> list[int]:
        async with gw.client() as client:
            await client.get("/users/x")  # the first ask loads the script (NOSCRIPT, once)
            admin.config_resetstat()
            answers = await asyncio.gather(*(client.get("/users/x") for _ in range(40)))
        await gw.proxy.aclose()
        return [answer.status_code for answer in answers]

    answers = asyncio.run(go())
    assert sorted(answers) == [200] * 29 + [429] * 11
    stats = {name: value["calls"] for name, value in admin.info("commandstats").items()}
    admin.close()
    assert stats.pop("cmdstat_evalsha") == 40
    inside_the_script = {"cmdstat_time", "cmdstat_get", "cmdstat_incr", "cmdstat_pexpireat"}
    assert set(stats) <= inside_the_script | {"cmdstat_config|resetstat", "cmdstat_info"}  # and the test's own
    assert stats["cmdstat_time"] == 40


def test_redis_down_and_fault_tolerant_counts_locally_logs_once_and_counts_the_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dataplane.ratelimit")
    gw = gateway(limited((2, "minute"), by="ip", policy="redis"), redis_url="redis://127.0.0.1:1/0")
    assert run_in_one_loop(gw, [(3, "192.0.2.1")]) == [200, 200, 429]
    failures = [record for record in caplog.records if "failed" in record.getMessage()]
    assert len(failures) == 1 and "127.0.0.1:1" in failures[0].getMessage()
    assert gw.runtime.metrics.rate_limit_backend_errors._value.get() == 3


def test_a_limit_used_up_in_redis_stays_used_up_when_redis_fails_and_the_node_counts_locally(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dataplane.ratelimit")
    if 3600 - time.time() % 3600 < 30:  # clear of the hour's edge: the five requests share one window
        time.sleep(3600 - time.time() % 3600 + 0.2)
    with redis_server(tmp_path / "redis.log") as (port, server):
        gw = gateway(
            limited((3, "hour"), by="ip", policy="redis"),
            time.time,  # the local windows on the wall clock, as Redis's are (the same machine's)
            redis_url=f"redis://127.0.0.1:{port}/0",
        )

        async def go() -> list[int]:
            result: list[int] = []
            transport = httpx.ASGITransport(app=gw.proxy, client=("192.0.2.7", 5555))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                for _ in range(2):  # counted in Redis
                    result.append((await client.get("/users/x")).status_code)
                server.kill()
                await asyncio.to_thread(server.wait)
                for _ in range(3):  # Redis is gone: counted locally, from the fleet's 2
                    result.append((await client.get("/users/x")).status_code)
            await gw.proxy.aclose()
            return result

        answers = asyncio.run(go())
    # The third request is the last let through, Redis or not (without the fleet's count the node would
    # start from zero and let all three of its own through).
    assert answers == [200, 200, 200, 429, 429]
    assert any("counting locally" in record.getMessage() for record in caplog.records)


def test_redis_down_and_not_fault_tolerant_is_503_rate_limit_unavailable() -> None:
    gw = gateway(
        limited((2, "minute"), by="ip", policy="redis", fault_tolerant=False), redis_url="redis://127.0.0.1:1/0"
    )

    async def go() -> httpx.Response:
        async with gw.client() as client:
            response = await client.get("/users/x")
        await gw.proxy.aclose()
        return response

    response = asyncio.run(go())
    assert response.status_code == 503 and response.json()["error"] == "rate_limit_unavailable"
    assert response.headers["retry-after"] == "1"


def test_a_redis_that_accepts_but_never_answers_is_timed_out_and_counted_locally() -> None:
    import socket

    with socket.socket() as silent:  # the kernel accepts connections; nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        gw = gateway(
            limited((2, "minute"), by="ip", policy="redis"), redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout=0.05
        )
        assert run_in_one_loop(gw, [(3, "192.0.2.1")]) == [200, 200, 429]
        assert gw.runtime.metrics.rate_limit_backend_errors._value.get() == 3


def test_a_redis_password_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway(limited((2, "minute"), by="ip", policy="redis"), redis_url="redis://user:s3cret-pw@127.0.0.1:1/0")
    run_in_one_loop(gw, [(1, "192.0.2.1")])
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in repr(gw.runtime.settings)


def test_redis_back_after_an_outage_resumes_shared_counting(tmp_path: Path) -> None:
    clock = Clock()
    with redis_server(tmp_path / "redis.log") as (port, process):
        counters = RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=0.5, clock=clock)

        async def go() -> list[str]:
            seen = []
            limits = (Limit(100, 60),)
            seen.append("ok" if (await counters.hit(b"k", limits)).allowed else "no")
            process.kill()
            process.wait()
            for _ in range(2):
                try:
                    await counters.hit(b"k", limits)
                except ratelimit.BackendDown:
                    seen.append("down")
            with redis_server(tmp_path / "redis.log", port=port):
                try:  # still inside the backoff: not even tried
                    await counters.hit(b"k", limits)
                except ratelimit.BackendDown:
                    seen.append("backoff")
                clock.now += 10
                seen.append("ok" if (await counters.hit(b"k", limits)).allowed else "no")
                await counters.aclose()
            return seen

        assert asyncio.run(go()) == ["ok", "down", "down", "backoff", "ok"]
