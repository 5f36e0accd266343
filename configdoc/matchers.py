"""An endpoint's §12 matchers in the document: `hosts` and `match_headers` (format 2).

    hosts: ["api.example.com", "*.example.com"]      # lower-cased; one leading `*.` label; no port
    match_headers: {X-Tenant: [acme, globex]}          # every header listed must equal one of its values

Canonical form: hosts lower-cased, in the order given (a duplicate is an error); header names as
written (a name twice, in any case, is an error), values as given. A header the request sends more than
once matches no `match_headers` entry (routes.MatcherTable.header_values). The matching itself and the
ambiguity rule are in routes.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .problems import Problem, child
from .schema import Field

MAX_HOSTS = 256
MAX_HEADERS = 16
MAX_VALUES = 256
MAX_VALUE = 1024
# A DNS name (labels of letters, digits, `-`, `_`), an IPv4 address, or a bracketed IPv6 literal.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$|^\[[0-9a-f:.]+\]$", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_VALUE = re.compile(r"^[\x20-\x7e\x80-\xff]*$")  # visible ASCII, space and obs-text; no controls

HOSTS_HELP = (
    "hosts this endpoint serves (§12): exact names or one leading wildcard label (*.example.com), "
    "lower-cased, no port; empty: any host"
)
MATCH_HEADERS_HELP = "headers that must each equal one of the listed values (§12), name -> [values]"


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def normalize_hosts(value: Any, path: str, problems: list[Problem]) -> list[str] | None:
    if not isinstance(value, list):
        problems.append(Problem(path, f"must be a list of host names, not {_type(value)}"))
        return None
    if len(value) > MAX_HOSTS:
        problems.append(Problem(path, f"must have at most {MAX_HOSTS} hosts"))
        return None
    result: list[str] = []
    ok = True
    for index, host in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(host, str):
            problems.append(Problem(where, f"must be a host name, not {_type(host)}"))
            ok = False
            continue
        name = host.lower()
        if len(name) > 253 or not _HOST.fullmatch(name):
            problems.append(
                Problem(
                    where,
                    f"{host[:80]!r} is not a host name: letters, digits, '-' and '.', optionally one leading "
                    "'*.' label, no port, no scheme",
                )
            )
            ok = False
        elif name in result:
            problems.append(Problem(where, f"{name} is listed twice"))
            ok = False
        else:
            result.append(name)
    return result if ok else None


def normalize_match_headers(value: Any, path: str, problems: list[Problem]) -> dict[str, list[str]] | None:
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f"must be a mapping of header name to a list of values, not {_type(value)}"))
        return None
    if len(value) > MAX_HEADERS:
        problems.append(Problem(path, f"must name at most {MAX_HEADERS} headers"))
        return None
    result: dict[str, list[str]] = {}
    seen: set[str] = set()
    ok = True
    for name, values in value.items():
        where = child(path, name)
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            problems.append(Problem(where, "a header name is a token: letters, digits and !#$%&'*+.^_`|~-"))
            ok = False
            continue
        if name.lower() in seen:
            problems.append(Problem(where, f"header {name} is listed twice (names are case-insensitive)"))
            ok = False
            continue
        seen.add(name.lower())
        if name.lower() == "host":
            problems.append(Problem(where, "match on the host with the endpoint's `hosts`, not match_headers"))
            ok = False
            continue
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
            problems.append(Problem(where, f"must be a list of 1 to {MAX_VALUES} values"))
            ok = False
            continue
        kept: list[str] = []
        for index, item in enumerate(values):
            if not isinstance(item, str) or len(item) > MAX_VALUE or not _VALUE.fullmatch(item) or item != item.strip():
                problems.append(
                    Problem(
                        f"{where}[{index}]",
                        f"must be a header value: text of at most {MAX_VALUE} characters, no control characters "
                        "and no leading or trailing whitespace",
                    )
                )
                ok = False
            elif item not in kept:
                kept.append(item)
        result[name] = kept
    return result if ok else None


# The keys as schema Fields, so the control plane's API serializer, admin form and OpenAPI derive them
# (the normalizers above are what validates them).
HOSTS = Field(
    "list",
    default=[],
    max_items=MAX_HOSTS,
    item=Field("str", max_length=253, pattern=_HOST, pattern_help="a host name or *.parent.domain"),
    help=HOSTS_HELP,
)
MATCH_HEADERS = Field(
    "map",
    default={},
    max_items=MAX_HEADERS,
    key=Field("str", pattern=_TOKEN, pattern_help="a header name"),
    item=Field("list", min_items=1, max_items=MAX_VALUES, item=Field("str", max_length=MAX_VALUE)),
    help=MATCH_HEADERS_HELP,
)
ENDPOINT_MATCHERS = {"hosts": HOSTS, "match_headers": MATCH_HEADERS}

# The §12 endpoint keys and their normalizers (configdoc.plugins.normalize_endpoint_policies calls them).
MATCHER_KEYS = {"hosts": normalize_hosts, "match_headers": normalize_match_headers}
