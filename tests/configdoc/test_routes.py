"""Route keys and the longest whole-segment match (ARCHITECTURE §3, §5)."""

from __future__ import annotations

import pytest

from configdoc import RouteTable, UnsafePath, route_keys, version_sort_key
from configdoc.egress import is_denied_target_host


def test_an_endpoint_claims_its_versioned_key_the_bare_name_when_default_and_its_extra_paths() -> None:
    assert route_keys({"name": "users", "version": "v1", "default": True, "paths": ["/api/users"]}) == [
        "/v1/users",
        "/users",
        "/api/users",
    ]
    assert route_keys({"name": "users", "version": "v2", "default": False}) == ["/v2/users"]


TABLE = RouteTable({"/users": "users", "/v1/users": "users-v1", "/api": "api", "/api/users/admin": "admin"})


@pytest.mark.parametrize(
    ("path", "key", "rest"),
    [
        ("/users", "/users", ""),
        ("/users/", "/users", "/"),
        ("/users/42", "/users", "/42"),
        ("/v1/users/42/orders", "/v1/users", "/42/orders"),
        ("/api/users/admin/x", "/api/users/admin", "/x"),
        ("/api/users/adminx", "/api", "/users/adminx"),
        ("/api/a%2Fb", "/api", "/a%2Fb"),
    ],
)
def test_the_longest_whole_segment_key_wins(path: str, key: str, rest: str) -> None:
    match = TABLE.match(path)
    assert match is not None
    assert (match.key, match.rest) == (key, rest)


@pytest.mark.parametrize("path", ["/usersx", "/", "/v2/users", "/a%2Fpi"])
def test_no_route_when_no_key_matches_whole_segments(path: str) -> None:
    assert TABLE.match(path) is None


@pytest.mark.parametrize("path", ["/users/../admin", "/users/./x", "/users/%2e%2E/x", "/users/%2e", "users"])
def test_dot_segments_raw_or_encoded_are_refused(path: str) -> None:
    with pytest.raises(UnsafePath):
        TABLE.match(path)


def test_versions_compare_numerically_with_the_v_ignored() -> None:
    assert sorted(["v10", "v2", "1.10", "v1.2"], key=version_sort_key) == ["v1.2", "1.10", "v2", "v10"]


@pytest.mark.parametrize(
    ("host", "denied"),
    [
        ("169.254.169.254", True),
        ("[fe80::1%25eth0]", True),
        ("::ffff:169.254.169.254", True),
        ("2852039166", True),
        ("0251.0376.0251.0376", True),
        ("METADATA.google.internal.", True),
        ("fd00:ec2::254", True),
        ("0.0.0.0", True),  # noqa: S104 - a string under test, not a bind
        # Unicode spellings that getaddrinfo's IDNA codec (NFKC) or httpx's UTS #46 turn into the above.
        ("\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14", True),  # full-width
        ("169\u3002254\u3002169\u3002254", True),  # ideographic full stops
        ("169\uff0e254\uff0e169\uff0e254", True),  # full-width full stops
        ("\u2460\u2465\u2468.254.169.254", True),  # circled digits
        ("\U0001d7cf\U0001d7d4\U0001d7d7.254.169.254", True),  # mathematical bold digits
        ("\u0661\u0666\u0669.\u0662\u0665\u0664.\u0661\u0666\u0669.\u0662\u0665\u0664", True),  # Arabic-Indic
        ("\uff12\uff18\uff15\uff12\uff10\uff13\uff19\uff11\uff16\uff16", True),  # full-width 2852039166
        ("\uff10\uff58\uff41\uff19\uff46\uff45\uff41\uff19\uff46\uff45", True),  # full-width 0xa9fea9fe
        ("0xa9fea9fe", True),
        ("0xa9.0xfe.43518", True),
        ("\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41", True),  # full-width "metadata"
        ("metadata\u3002google\u3002internal", True),
        ("%31%36%39.254.169.254", True),
        ("[::\uff46\uff46\uff46\uff46:169.254.169.254]", True),
        ("127.0.0.1", False),
        ("\uff11\uff12\uff17.0.0.1", False),  # full-width loopback stays allowed
        ("10.1.2.3", False),
        ("::1", False),
        ("api.internal", False),
        ("b\u00fccher.example", False),
    ],
)
def test_the_ssrf_deny_list_covers_link_local_metadata_and_their_disguises(host: str, denied: bool) -> None:
    assert is_denied_target_host(host) is denied
