"""§12's matchers in configdoc: hosts, match_headers and endpoints sharing a key told apart by method;
the selection order, the Host normalisation, hostile values, and the ambiguity rule."""

from __future__ import annotations

from typing import Any

import pytest

from configdoc import Matchers, MatcherTable, load_document, matchers_of, request_host, validate_document
from configdoc.forwarding import resolve, route_table

GET = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})


def table(*entries: tuple[str, str, Matchers]) -> MatcherTable[str]:
    return MatcherTable(entries)


def pick(
    t: MatcherTable[str], path: str, host: str = "", method: str = "GET", **headers: str
) -> tuple[str, str] | None:
    found = t.select(path, host=request_host(host), method=method, headers=headers)
    return None if found is None else (found.value, found.decided_by)


def test_exact_host_beats_wildcard_beats_no_host_on_one_key() -> None:
    t = table(
        ("/api", "any", Matchers((), (), GET)),
        ("/api", "wild", Matchers(("*.example.com",), (), GET)),
        ("/api", "exact", Matchers(("a.example.com",), (), GET)),
    )
    assert pick(t, "/api/x", "a.example.com") == ("exact", "host")
    assert pick(t, "/api/x", "b.example.com") == ("wild", "wildcard_host")
    assert pick(t, "/api/x", "other.test") == ("any", "method")


def test_a_wildcard_covers_one_label_only() -> None:
    t = table(("/api", "wild", Matchers(("*.example.com",), (), GET)))
    assert pick(t, "/api", "a.example.com") == ("wild", "wildcard_host")
    assert pick(t, "/api", "example.com") is None
    assert pick(t, "/api", "a.b.example.com") is None
    assert pick(t, "/api", ".example.com") is None


def test_the_longest_key_wins_before_any_host() -> None:
    t = table(
        ("/api", "short-exact", Matchers(("a.example.com",), (), GET)),
        ("/api/users", "long-any", Matchers((), (), GET)),
    )
    assert pick(t, "/api/users/1", "a.example.com") == ("long-any", "path")
    assert pick(t, "/api/other", "a.example.com") == ("short-exact", "host")


def test_a_key_whose_endpoints_want_another_host_lets_a_shorter_key_serve() -> None:
    t = table(("/api/users", "users-a", Matchers(("a.test",), (), GET)), ("/api", "api", Matchers((), (), GET)))
    assert pick(t, "/api/users/1", "b.test") == ("api", "path")


def test_match_headers_before_none_then_method() -> None:
    tenant = (("x-tenant", frozenset({"acme", "globex"})),)
    t = table(
        ("/api", "plain", Matchers((), (), GET)),
        ("/api", "acme", Matchers((), tenant, GET)),
        ("/api", "writes", Matchers((), (), POST)),
    )
    assert pick(t, "/api", **{"x-tenant": "globex"}) == ("acme", "match_headers")
    assert pick(t, "/api", **{"x-tenant": "other"}) == ("plain", "method")
    assert pick(t, "/api", method="POST", **{"x-tenant": "acme"}) == ("writes", "method")
    found = t.select("/api", method="DELETE", headers={})
    assert found is not None and found.method_allowed is False and found.allow == {"GET", "HEAD", "POST"}


def test_no_host_or_header_match_is_no_route_and_a_method_miss_is_not() -> None:
    t = table(("/api", "a", Matchers(("a.test",), (), GET)))
    assert t.select("/api", host="b.test", method="GET") is None
    miss = t.select("/api", host="a.test", method="POST")
    assert miss is not None and not miss.method_allowed and miss.allow == GET


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("API.Example.COM", "api.example.com"),
        ("api.example.com:8443", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("api.example.com:notaport", "api.example.com:notaport"),
    ],
)
def test_the_host_is_lower_cased_without_port(raw: str, host: str) -> None:
    assert request_host(raw) == host


@pytest.mark.parametrize(
    "hostile",
    ["a.example.com\x00", "user@a.example.com", "a.example.com/evil", "\ud800.example.com", "*.example.com",
     "a" * 100_000 + ".example.com", " ", "a.example.com, b.example.com", "[a.example.com"],
)  # fmt: skip
def test_hostile_host_values_match_no_name(hostile: str) -> None:
    t = table(
        ("/api", "exact", Matchers(("a.example.com",), (), GET)),
        ("/api", "wild", Matchers(("*.example.com",), (), GET)),
    )
    found = pick(t, "/api", hostile)
    # Never the exact name by a trick; a wildcard only for a real label (not `*` itself).
    assert found is None or (found[0] == "wild" and not hostile.startswith("*"))
    assert pick(t, "/api", "A.EXAMPLE.COM:443") == ("exact", "host")


def test_a_header_sent_twice_matches_no_match_headers_entry() -> None:
    t = table(("/api", "acme", Matchers((), (("x-tenant", frozenset({"acme"})),), GET)))
    values = t.header_values([(b"x-tenant", b"acme"), (b"x-tenant", b"acme")])
    assert values == {"x-tenant": None}
    assert t.select("/api", headers=values) is None
    assert t.select("/api", headers=t.header_values([(b"x-tenant", b"acme"), (b"x-other", b"1")])) is not None


def test_a_table_without_matchers_is_plain_and_answers_like_the_path_table() -> None:
    t = table(("/a", "a", Matchers((), (), GET)), ("/b", "b", Matchers((), (), POST)))
    assert t.plain
    assert pick(t, "/a/1", "whatever") == ("a", "path")
    found = t.select("/b", method="GET")
    assert found is not None and not found.method_allowed


ENDPOINT = {"targets": [{"url": "http://127.0.0.1:9/"}]}


def document(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"format_version": 2, "endpoints": [{**ENDPOINT, **e} for e in endpoints]}


def problems_of(data: dict[str, Any]) -> list[str]:
    return [f"{p.path}: {p.message}" for p in validate_document(data, max_format_version=2)[1]]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({}, {}),
        ({"hosts": ["a.test"]}, {"hosts": ["A.test", "b.test"]}),
        ({"hosts": ["*.test"]}, {"hosts": ["*.test"]}),
        ({"match_headers": {"X-T": ["1", "2"]}}, {"match_headers": {"x-t": ["2"]}}),
        ({"match_headers": {"X-A": ["1"]}}, {"match_headers": {"X-B": ["1"]}}),  # a request may carry both
        ({"methods": ["GET", "POST"]}, {"methods": ["POST"]}),
        ({"methods": ["GET"]}, {"methods": ["HEAD"]}),  # HEAD is served wherever GET is
    ],
)
def test_endpoints_no_request_could_choose_between_are_refused(a: dict[str, Any], b: dict[str, Any]) -> None:
    found = problems_of(document({"name": "a", "version": "v1", "paths": ["/x"], **a},
                                 {"name": "b", "version": "v1", "paths": ["/x"], **b}))  # fmt: skip
    assert any("route key /x is claimed by both a:v1 (endpoints[0]) and b:v1" in p for p in found), found


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"hosts": ["a.test"]}, {"hosts": ["b.test"]}),
        ({"hosts": ["a.example.com"]}, {"hosts": ["*.example.com"]}),
        ({"hosts": ["a.test"]}, {}),
        ({"match_headers": {"X-T": ["1"]}}, {}),
        ({"match_headers": {"X-T": ["1"]}}, {"match_headers": {"X-T": ["2"]}}),
        ({"methods": ["GET"]}, {"methods": ["POST", "PUT"]}),
    ],
)
def test_endpoints_a_request_can_choose_between_may_share_a_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    data = document(
        {"name": "a", "version": "v1", "paths": ["/x"], **a}, {"name": "b", "version": "v1", "paths": ["/x"], **b}
    )
    assert problems_of(data) == []


def test_the_ambiguity_problem_names_both_endpoints_and_their_yaml_lines() -> None:
    text = """format_version: 2
endpoints:
  - name: a
    version: v1
    paths: [/shop]
    hosts: [shop.example.com]
    targets: [{url: "http://127.0.0.1:9"}]
  - name: b
    version: v1
    paths: [/shop]
    hosts: [SHOP.example.com]
    targets: [{url: "http://127.0.0.1:9"}]
"""
    result = load_document(text, max_format_version=2)
    [problem] = result.problems
    assert problem.path == "endpoints[1].paths" and problem.line == 10
    assert "a:v1 (endpoints[0], line 3) and b:v1 (endpoints[1], line 8)" in problem.message


def test_matchers_need_format_2_and_are_validated() -> None:
    found = problems_of(
        {"format_version": 1, "endpoints": [{**ENDPOINT, "name": "a", "version": "v1", "hosts": ["a.test"]}]}
    )
    assert any("hosts needs format_version: 2" in p for p in found)
    bad = document(
        {"name": "a", "version": "v1",
         "hosts": ["a.test:80", "*.*.test", "a.test\x00", "x\ud800", 5, "a.test", "A.TEST"],
         "match_headers": {"Host": ["x"], "X-T": [], "x-a": ["ok", "bad\r\nInjected: 1"], "bad name": ["1"]}},
    )  # fmt: skip
    found = problems_of(bad)
    for path in ("hosts[0]", "hosts[1]", "hosts[2]", "hosts[3]", "hosts[4]", "hosts[6]", "match_headers.Host",
                 "match_headers.X-T", "match_headers.x-a[1]", "match_headers.bad name"):  # fmt: skip
        assert any(p.startswith(f"endpoints[0].{path}:") for p in found), (path, found)
    assert problems_of(document({"name": "a", "version": "v1", "hosts": ["a.test"] * 300})) != []


def test_canonical_form_lower_cases_hosts_and_drops_empty_matchers() -> None:
    data, problems = validate_document(
        document({"name": "a", "version": "v1", "hosts": ["API.Test"], "match_headers": {"X-T": "1"}},
                 {"name": "b", "version": "v1", "hosts": [], "match_headers": {}}),
        max_format_version=2,
    )  # fmt: skip
    assert problems == []
    a, b = data["endpoints"]
    assert a["hosts"] == ["api.test"] and a["match_headers"] == {"X-T": ["1"]}
    assert "hosts" not in b and "match_headers" not in b
    assert matchers_of(a).headers == (("x-t", frozenset({"1"})),)


def test_resolve_says_what_the_data_plane_would_and_which_matcher_decided() -> None:
    data, problems = validate_document(
        document({"name": "shop", "version": "v1", "hosts": ["shop.test"]},
                 {"name": "shop", "version": "v2", "match_headers": {"X-Beta": ["1"]}, "default": True},
                 {"name": "other", "version": "v1", "paths": ["/shop"], "methods": ["POST"]}),
        max_format_version=2,
    )  # fmt: skip
    assert problems == []
    t = route_table(data)
    found = resolve(t, "/shop/1?q=1", host="SHOP.test:80")
    # /shop is v2's (default, with match_headers) and other's (POST only): a GET without the header is 405
    assert found is not None and found.endpoint.key == "other:v1"
    assert found.method_allowed is False and found.allow == ("POST",)
    beta = resolve(t, "/shop/1", headers={"x-beta": "1"})
    assert beta is not None and beta.endpoint.key == "shop:v2" and beta.decided_by == "match_headers"
    post = resolve(t, "/shop/1", method="post")
    assert post is not None and post.endpoint.key == "other:v1" and post.decided_by == "method"
    v1 = resolve(t, "/v1/shop", host="shop.test")
    assert v1 is not None and v1.endpoint.key == "shop:v1" and v1.decided_by == "host"
    assert resolve(t, "/v1/shop", host="else.test") is None


# --- the lookup structures against §12's order written out plainly -------------------------------------

NAMES = ("a.example.com", "b.example.com", "*.example.com", "x.other.org", "*.other.org")
# Hosts starting with `*`: a wildcard asked for by name, one under another wildcard (its first label `*`:
# no name), and `*a.example.com` (not a wildcard label: `*.example.com` covers it, as any other name).
REQUEST_HOSTS = (
    *NAMES,
    *("c.example.com", "example.com", "a.b.example.com", ".example.com", "*.other.org", "*a.example.com"),
    *("*.x.other.org", ""),
)
KEYS = ("/", "/a", "/a/b", "/v1/a")
REQUEST_PATHS = ("/a/b/c", "/a", "/a/bc", "/x", "/v1/a/z", "/")
METHOD_SETS = (GET, POST, frozenset({"PUT", "DELETE"}), frozenset({"GET", "HEAD", "POST"}))
HEADER_RULES: tuple[tuple[tuple[str, frozenset[str]], ...], ...] = (
    (),
    (("x-tenant", frozenset({"acme"})),),
    (("x-tenant", frozenset({"acme", "globex"})), ("x-canary", frozenset({"1"}))),
)
REQUEST_HEADERS: tuple[dict[str, str | None], ...] = (
    {},
    {"x-tenant": "acme"},
    {"x-tenant": "globex", "x-canary": "1"},
    {"x-tenant": None},  # sent twice
)


def by_the_book(
    entries: list[tuple[str, str, Matchers]], path: str, host: str, method: str, headers: dict[str, str | None]
) -> tuple[str, str, str, bool, frozenset[str]] | None:
    """§12's selection as the spec words it, one endpoint at a time: the longest key whose endpoints
    match host and headers; among them exact host, wildcard, no host; `match_headers` first; then the
    first (document order) serving the method, else a 405 allowing what they serve."""
    label, dot, parent = host.partition(".")
    wild = "*." + parent if dot and label and label != "*" else None
    segments = path.split("/")
    prefixes = ["/".join(segments[:n]) for n in range(len(segments), 1, -1)] + ["/"]
    for key in prefixes:
        members = [(value, m) for k, value, m in entries if k == key]
        ranked = []
        for order, (value, m) in enumerate(members):
            if not all(headers.get(name) is not None and headers.get(name) in values for name, values in m.headers):
                continue
            if not m.hosts:
                tier = 2
            elif not host.startswith("*") and host in m.hosts:
                tier = 0
            elif wild is not None and wild in m.hosts:
                tier = 1
            else:
                continue
            ranked.append((tier, not m.headers, order, value, m))
        if not ranked:
            continue
        ranked.sort()
        shared = len(members) > 1

        def decided(tier: int, m: Matchers, shared: bool = shared) -> str:
            if tier < 2:
                return ("host", "wildcard_host")[tier]
            return "match_headers" if m.headers else "method" if shared else "path"

        for tier, _, _, value, m in ranked:
            if method in m.methods:
                return key, value, decided(tier, m), True, m.methods
        tier, _, _, value, m = ranked[0]
        allow = frozenset().union(*(r[4].methods for r in ranked))
        return key, value, decided(tier, m), False, allow
    return None


@pytest.mark.parametrize("flat_max", [0, 6, 1000], ids=["dicts", "as-built", "flat"])
def test_the_lookup_agrees_with_the_order_written_out_over_random_tables(
    flat_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both structures a key's endpoints can take (a flat scanned tuple for a few, dicts for many
    hosts) answer every request as §12's order does, including 405s and which matcher decided."""
    import random

    from configdoc import routes

    monkeypatch.setattr(routes, "_FLAT_MAX", flat_max)
    rng = random.Random(12)
    for round_ in range(300):
        entries = []
        for n in range(rng.randrange(1, 9)):
            hosts = tuple(rng.sample(NAMES, rng.choice((0, 0, 1, 1, 2))))
            matchers = Matchers(hosts, rng.choice(HEADER_RULES), rng.choice(METHOD_SETS))
            entries.append((rng.choice(KEYS), f"e{n}", matchers))
        t = MatcherTable(entries)
        if t.plain:
            continue
        for _ in range(40):
            path, host = rng.choice(REQUEST_PATHS), rng.choice(REQUEST_HOSTS)
            method, headers = rng.choice(("GET", "POST", "PUT", "PATCH")), rng.choice(REQUEST_HEADERS)
            found = t.select(path, host=host, method=method, headers=headers)
            got = None if found is None else (found.key, found.value, found.decided_by, found.method_allowed)
            want = by_the_book(entries, path, host, method, headers)
            assert got == (want and want[:4]), (round_, entries, path, host, method, headers)
            if found is not None and want is not None:
                assert found.allow == want[4], (round_, entries, path, host, method, headers)
