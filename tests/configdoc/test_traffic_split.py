"""§12's traffic_split in the contract: validation (one validator for both planes), the canonical form,
and the decision every plane makes with it (header, sticky bucket, random draw)."""

from __future__ import annotations

from typing import Any

import pytest

from configdoc import load_document, validate_document
from configdoc.forwarding import resolve, route_table
from configdoc.splits import BUCKETS, compile_split, cookie_value, normalize_traffic_split

URL = "http://127.0.0.1:8010/api"


def users(split: Any = None, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    v1: dict[str, Any] = {"name": "users", "version": "v1", "default": True, "targets": [{"url": URL}]}
    if split is not None:
        v1["traffic_split"] = split
    v2 = {"name": "users", "version": "v2", "targets": [{"url": "http://127.0.0.1:8011/api"}], **(extra or {})}
    return {"format_version": 2, "endpoints": [v1, v2]}


def problems_of(split: Any) -> dict[str, str]:
    _, problems = validate_document(users(split), max_format_version=2)
    return {problem.path: problem.message for problem in problems}


def test_a_valid_split_is_canonical_and_sparse() -> None:
    document, problems = validate_document(
        users(
            {"version": "v2", "percent": 10.0, "header": {"X-Canary": "1"}, "sticky": "cookie", "sticky_name": "sid"}
        ),
        max_format_version=2,
    )
    assert problems == []
    assert document["endpoints"][0]["traffic_split"] == {
        "version": "v2",
        "percent": 10,
        "header": {"X-Canary": ["1"]},
        "sticky": "cookie",
        "sticky_name": "sid",
    }
    zero, _ = validate_document(users({"version": "v2", "percent": 0}), max_format_version=2)
    assert zero["endpoints"][0]["traffic_split"] == {"version": "v2"}
    decimal, _ = validate_document(users({"version": "v2", "percent": 12.25}), max_format_version=2)
    assert decimal["endpoints"][0]["traffic_split"]["percent"] == 12.25


def test_a_split_needs_format_2() -> None:
    document = users({"version": "v2", "percent": 5})
    document["format_version"] = 1
    _, problems = validate_document(document, max_format_version=2)
    assert any(p.path == "endpoints[0].traffic_split" and "format_version: 2" in p.message for p in problems)


@pytest.mark.parametrize(
    ("split", "path", "words"),
    [
        ({"percent": 10}, "endpoints[0].traffic_split.version", "is required"),
        ({"version": "v3", "percent": 10}, "endpoints[0].traffic_split.version", "users:v3, which does not exist"),
        ({"version": "v1", "percent": 10}, "endpoints[0].traffic_split.version", "not v1 itself"),
        ({"version": "v2", "percent": 100.5}, "endpoints[0].traffic_split.percent", "from 0 to 100"),
        ({"version": "v2", "percent": -1}, "endpoints[0].traffic_split.percent", "from 0 to 100"),
        ({"version": "v2", "percent": 10**400}, "endpoints[0].traffic_split.percent", "from 0 to 100"),
        ({"version": "v2", "percent": float("nan")}, "endpoints[0].traffic_split.percent", "finite"),
        ({"version": "v2", "percent": 10.005}, "endpoints[0].traffic_split.percent", "two decimals"),
        ({"version": "v2", "percent": "10"}, "endpoints[0].traffic_split.percent", "not str"),
        ({"version": "v2", "percent": True}, "endpoints[0].traffic_split.percent", "not bool"),
        ({"version": "v2\x00", "percent": 1}, "endpoints[0].traffic_split.version", "a version like v2"),
        ({"version": ["v2"], "percent": 1}, "endpoints[0].traffic_split.version", "not list"),
        ({"version": "v2", "sticky": "session"}, "endpoints[0].traffic_split.sticky", "header, cookie, ip"),
        ({"version": "v2", "sticky": "cookie"}, "endpoints[0].traffic_split.sticky_name", "is required"),
        ({"version": "v2", "sticky": "header", "sticky_name": "X\x00Y"}, "endpoints[0].traffic_split.sticky_name", ""),
        ({"version": "v2", "sticky": "header", "sticky_name": "Host"}, "endpoints[0].traffic_split.sticky_name", ""),
        ({"version": "v2", "sticky": "ip", "sticky_name": "x"}, "endpoints[0].traffic_split.sticky_name", "only for"),
        ({"version": "v2", "header": {"X-C": "a\x00"}}, "endpoints[0].traffic_split.header.X-C[0]", "header value"),
        ({"version": "v2", "header": ["X-C"]}, "endpoints[0].traffic_split.header", "mapping"),
        ({"version": "v2", "weight": 3}, "endpoints[0].traffic_split.weight", "unknown key"),
        ("v2", "endpoints[0].traffic_split", "must be a mapping"),
    ],
)
def test_a_bad_split_is_a_problem_naming_the_field(split: Any, path: str, words: str) -> None:
    found = problems_of(split)
    assert path in found, found
    assert words in found[path]


def test_only_the_default_version_may_split() -> None:
    document = users(None, extra={"traffic_split": {"version": "v1", "percent": 5}})
    _, problems = validate_document(document, max_format_version=2)
    assert [p.path for p in problems] == ["endpoints[1].traffic_split"]
    assert "only the default version of users may split" in problems[0].message


def test_problems_carry_the_yaml_line() -> None:
    text = (
        "format_version: 2\n"
        "endpoints:\n"
        "  - name: users\n"
        "    version: v1\n"
        "    default: true\n"
        "    targets: [{url: 'http://127.0.0.1:8010/'}]\n"
        "    traffic_split:\n"
        "      version: v9\n"
        "      percent: 10\n"
    )
    result = load_document(text, max_format_version=2)
    assert [(p.path, p.line) for p in result.problems] == [("endpoints[0].traffic_split.version", 8)]
    assert "users:v9, which does not exist" in result.problems[0].message


def test_hostile_split_values_never_raise() -> None:
    hostile = [None, 1, [], {"version": None}, {"version": "v2", "header": {1: 2}}, {"\x00": 1}, {(): 1}]
    hostile += [{"version": "v2", "percent": 10**5000}, {"version": "v2", "percent": -(10**5000)}]
    for value in hostile:
        problems: list[Any] = []
        normalize_traffic_split(value, "traffic_split", problems)  # must not raise
    assert "a number that large" in problems[0].message


def test_a_sticky_value_with_a_lone_surrogate_still_has_a_bucket() -> None:
    split = compile_split("users", {"version": "v2", "sticky": "header", "sticky_name": "X-User"})
    assert 0 <= split.bucket("\ud800") < BUCKETS


# --- the decision ------------------------------------------------------------------------------------


def test_a_sticky_value_always_lands_in_the_same_bucket() -> None:
    split = compile_split("users", {"version": "v2", "percent": 10, "sticky": "header", "sticky_name": "X-User"})
    assert split.bucket("alice") == split.bucket("alice") == compile_split("users", {"version": "v2"}).bucket("alice")
    decisions = {split.decide({"x-user": "alice"}).to_target for _ in range(50)}
    assert len(decisions) == 1


def test_raising_percent_moves_clients_only_towards_the_target() -> None:
    clients = [f"client-{n}" for n in range(5000)]
    low = compile_split("users", {"version": "v2", "percent": 10, "sticky": "cookie", "sticky_name": "sid"})
    high = compile_split("users", {"version": "v2", "percent": 20, "sticky": "cookie", "sticky_name": "sid"})
    on_low = {c for c in clients if low.decide({"cookie": f"sid={c}"}).to_target}
    on_high = {c for c in clients if high.decide({"cookie": f"sid={c}"}).to_target}
    assert on_low <= on_high
    assert 0.08 < len(on_low) / len(clients) < 0.12 and 0.18 < len(on_high) / len(clients) < 0.22


def test_buckets_spread_evenly() -> None:
    split = compile_split("users", {"version": "v2", "sticky": "ip"})
    buckets = [split.bucket(f"10.0.{n // 256}.{n % 256}") for n in range(20000)]
    assert all(0 <= b < BUCKETS for b in buckets)
    tenths = [sum(1 for b in buckets if b // 1000 == d) for d in range(10)]
    assert all(1700 < t < 2300 for t in tenths), tenths


def test_the_canary_header_wins_and_percent_0_and_100_need_no_draw() -> None:
    split = compile_split("users", {"version": "v2", "header": {"X-Canary": ["1"]}})
    assert split.decide({"x-canary": "1"}).how == "header"
    assert split.decide({"x-canary": "2"}, draw=lambda: 0.0) == (False, "percent", None)
    everything = compile_split("users", {"version": "v2", "percent": 100})
    assert everything.decide({}, draw=lambda: 0.999999) == (True, "percent", None)


def test_without_a_sticky_value_the_draw_decides() -> None:
    split = compile_split("users", {"version": "v2", "percent": 10, "sticky": "cookie", "sticky_name": "sid"})
    assert split.decide({}, draw=lambda: 0.05).to_target is True
    assert split.decide({}, draw=lambda: 0.5).to_target is False
    assert split.decide({"cookie": "other=1"}, draw=lambda: 0.5).how == "random"


def test_cookie_values_are_read_like_a_browser_sends_them() -> None:
    assert cookie_value("a=1; sid=abc; b=2", "sid") == "abc"
    assert cookie_value('sid="quoted"', "sid") == "quoted"
    assert cookie_value("SID=abc", "sid") is None  # cookie names are case-sensitive
    assert cookie_value("sid=; x=1", "sid") is None
    assert cookie_value("garbage;;;=;", "sid") is None


def test_raw_headers_a_repeated_sticky_header_is_no_value() -> None:
    split = compile_split("users", {"version": "v2", "percent": 50, "sticky": "header", "sticky_name": "X-User"})
    found = split.header_values([(b"x-user", b"a"), (b"x-user", b"b")])
    assert found == {"x-user": None}
    cookies = compile_split("users", {"version": "v2", "sticky": "cookie", "sticky_name": "s"})
    assert cookies.header_values([(b"cookie", b"a=1"), (b"cookie", b"s=2")]) == {"cookie": "a=1; s=2"}


def test_the_resolver_shows_the_split_and_the_version_a_sticky_value_takes() -> None:
    document, _ = validate_document(
        users({"version": "v2", "percent": 50, "sticky": "header", "sticky_name": "X-User"}), max_format_version=2
    )
    table = route_table(document)
    split = compile_split("users", document["endpoints"][0]["traffic_split"])
    for user in ("alice", "bob", "carol", "dave"):
        found = resolve(table, "/users/1", headers={"x-user": user})
        assert found is not None and found.traffic_split is not None
        expected = "users:v2" if split.bucket(user) < 5000 else "users:v1"
        assert found.endpoint.key == expected and found.decided_by == "traffic_split"
        assert found.traffic_split["bucket"] == split.bucket(user)
    drawn = resolve(table, "/users/1")
    assert drawn is not None and drawn.traffic_split is not None
    assert drawn.traffic_split["decided_by"] == "random" and drawn.endpoint.key == "users:v1"
    assert drawn.decided_by == "path"
    direct = resolve(table, "/v1/users/1", headers={"x-user": "alice"})
    assert direct is not None and direct.traffic_split is None and direct.endpoint.key == "users:v1"


def test_a_method_the_target_does_not_serve_stays_on_the_default() -> None:
    document = users({"version": "v2", "percent": 100})
    document["endpoints"][0]["methods"] = ["GET", "POST"]
    canonical, problems = validate_document(document, max_format_version=2)
    assert problems == []
    table = route_table(canonical)
    post = resolve(table, "/users", method="POST")
    assert post is not None and post.endpoint.key == "users:v1"
    assert post.traffic_split is not None and post.traffic_split["applies"] is False
    get = resolve(table, "/users", method="GET")
    assert get is not None and get.endpoint.key == "users:v2" and get.decided_by == "traffic_split"


def test_a_disabled_target_takes_no_split_traffic() -> None:
    document = users({"version": "v2", "percent": 100}, extra={"enabled": False})
    canonical, problems = validate_document(document, max_format_version=2)
    assert problems == []
    found = resolve(route_table(canonical), "/users")
    assert found is not None and found.endpoint.key == "users:v1"
    assert found.traffic_split is not None and found.traffic_split["applies"] is False
    assert "disabled" in found.traffic_split["note"]
