"""Canary traffic between versions (ARCHITECTURE §12): an endpoint's `traffic_split` (format 2).

    - name: users
      version: v1
      default: true
      traffic_split:
        version: v2              # required: another version of the same name
        percent: 10              # 0–100, at most two decimals (0.01 % steps); default 0
        header: {X-Canary: "1"}  # optional: requests carrying it (as match_headers) always go to v2
        sticky: cookie           # optional: header | cookie | ip; unset: an independent draw per request
        sticky_name: session     # the header's or cookie's name (sticky: header or cookie only)

Only a default version may split, only its `/{name}` key is split (`/v1/users` still means v1, an extra
path still means its own endpoint), and only a request whose method both versions serve changes version;
a disabled target takes none (disabling the canary version stops the split at once).
Who goes to the target, in order:

1. a request whose headers match `header` (every listed header equal to one of its values);
2. with `sticky` and a sticky value in the request (the header, the cookie, or the client's address as
   the node determines it, trusted proxies considered): the value is hashed (BLAKE2b, salted with the
   endpoint's name) into one of 10,000 buckets, and buckets below `percent × 100` go to the target, so
   one client always lands on one version, and raising `percent` only moves clients towards the target
   (the fewest that can move);
3. otherwise an independent draw per request, `percent` % of them to the target.

Whether a target exists, is not the endpoint itself, and whether the splitting endpoint is the default
are rules across endpoints: `split_problems`, which both validate_document and the control plane's
services run. `TrafficSplit` is the compiled form the data plane's proxy, its `/-/routes`, the control
plane's `routes/resolve/` and the admin's route-debug page all decide with.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .matchers import normalize_match_headers
from .problems import Problem, child
from .routes import _headers_match
from .schema import VERSION_RE, Field

BUCKETS = 10_000  # percent has 0.01 precision: one bucket per 0.01 %
STICKY = ("header", "cookie", "ip")
# RFC 9110 token (a header name) and RFC 6265 cookie-name (a token too).
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
SPLIT_KEYS = ("version", "percent", "header", "sticky", "sticky_name")

TRAFFIC_SPLIT_HELP = (
    "canary (§12), on a default version only: percent of /{name} traffic, and every request carrying "
    "`header`, goes to another version of the same name; sticky: header | cookie | ip keeps a client on one version"
)

# The key as a schema Field, so the control plane's API serializer, admin form and OpenAPI derive it
# (normalize_traffic_split is what validates it; the Field is not in ENDPOINT_FIELDS because an unset
# split must not be filled in with defaults by effective_endpoint).
TRAFFIC_SPLIT = Field(
    "object",
    default=None,
    nullable=True,
    fields={
        "version": Field(
            "str",
            pattern=VERSION_RE,
            pattern_help="another version of the same name",
            max_length=32,
            help="the version that takes the split's traffic",
        ),
        "percent": Field(
            "number",
            default=0,
            minimum=0,
            maximum=100,
            help="share of /{name} requests sent to `version`, in steps of 0.01",
        ),
        "header": Field(
            "map",
            default={},
            max_items=16,
            key=Field("str", pattern=_TOKEN, pattern_help="a header name"),
            item=Field("list", min_items=1, max_items=256, item=Field("str", max_length=1024)),
            help="requests whose headers all equal one of the listed values always go to `version`",
        ),
        "sticky": Field(
            "enum",
            default=None,
            nullable=True,
            choices=STICKY,
            help="keep a client on one version by a header, a cookie or the client address; unset: random per request",
        ),
        "sticky_name": Field(
            "str",
            default=None,
            nullable=True,
            max_length=256,
            pattern=_TOKEN,
            pattern_help="a header or cookie name",
            help="the header (sticky: header) or cookie (sticky: cookie) whose value keeps a client on one version",
        ),
    },
    help=TRAFFIC_SPLIT_HELP,
)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def normalize_percent(value: Any, path: str, problems: list[Problem]) -> int | float | None:
    """A percent in 0–100 with at most two decimals: an int when whole, else a float rounded to 0.01."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(Problem(path, f"must be a number from 0 to 100, not {_type(value)}"))
        return None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        problems.append(Problem(path, "must be a finite number from 0 to 100"))
        return None
    if not 0 <= value <= 100:
        # A huge integer is not printed: str() of one over 4,300 digits raises (CPython's int limit).
        shown = f"{value:g}" if isinstance(value, float) or abs(value) < 10**40 else "a number that large"
        problems.append(Problem(path, f"must be from 0 to 100, not {shown}"))
        return None
    hundredths = round(value * 100)
    if abs(value * 100 - hundredths) > 1e-6:
        problems.append(Problem(path, f"must have at most two decimals (steps of 0.01 %), not {value}"))
        return None
    whole: int = hundredths // 100
    return whole if hundredths % 100 == 0 else hundredths / 100


def normalize_traffic_split(value: Any, path: str, problems: list[Problem]) -> dict[str, Any] | None:
    """An endpoint's `traffic_split` in canonical form (`percent` only when not 0, `header` only when
    set, `sticky_name` only with header/cookie stickiness), or None after recording every problem.
    Rules across endpoints (the target exists, ...) are split_problems'."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f"must be a mapping with version and percent, not {_type(value)}"))
        return None
    ok = True
    for key in value:
        if key not in SPLIT_KEYS:
            shown = key[:80] if isinstance(key, str) else repr(key)[:80]
            problems.append(
                Problem(child(path, key), f"unknown key {shown!r} (expected one of {', '.join(SPLIT_KEYS)})")
            )
            ok = False
    result: dict[str, Any] = {}
    version = value.get("version")
    if "version" not in value:
        problems.append(Problem(child(path, "version"), "is required: the version that takes the split's traffic"))
        ok = False
    elif not isinstance(version, str) or len(version) > 32 or not VERSION_RE.fullmatch(version):
        shown = repr(version)[:40] if isinstance(version, str) else _type(version)
        problems.append(Problem(child(path, "version"), f"must be a version like v2 or 2.1, not {shown}"))
        ok = False
    else:
        result["version"] = version
    if "percent" in value:
        percent = normalize_percent(value["percent"], child(path, "percent"), problems)
        if percent is None:
            ok = False
        elif percent:
            result["percent"] = percent
    if "header" in value and value["header"] not in (None, {}):
        header = normalize_match_headers(value["header"], child(path, "header"), problems)
        if header is None:
            ok = False
        elif header:
            result["header"] = header
    sticky = value.get("sticky")
    sticky_name = value.get("sticky_name")
    if sticky is not None:
        if not isinstance(sticky, str) or sticky not in STICKY:
            shown = repr(sticky)[:40] if isinstance(sticky, str) else _type(sticky)
            problems.append(Problem(child(path, "sticky"), f"must be one of {', '.join(STICKY)} or null, not {shown}"))
            ok = False
        else:
            result["sticky"] = sticky
    if sticky in ("header", "cookie"):
        if sticky_name is None:
            problems.append(
                Problem(child(path, "sticky_name"), f"is required with sticky: {sticky} (the {sticky}'s name)")
            )
            ok = False
        elif not isinstance(sticky_name, str) or not _TOKEN.fullmatch(sticky_name):
            problems.append(
                Problem(
                    child(path, "sticky_name"),
                    f"must be a {sticky} name: letters, digits and !#$%&'*+.^_`|~- (at most 256)",
                )
            )
            ok = False
        elif sticky == "header" and sticky_name.lower() in ("host", "cookie"):
            problems.append(
                Problem(
                    child(path, "sticky_name"),
                    f"{sticky_name} cannot be a sticky header: use sticky: cookie for a cookie, or hosts for the host",
                )
            )
            ok = False
        else:
            result["sticky_name"] = sticky_name
    elif sticky_name is not None and sticky in (None, "ip") and (sticky is None or isinstance(sticky, str)):
        problems.append(
            Problem(
                child(path, "sticky_name"),
                "is only for sticky: header or sticky: cookie (it names that header or cookie)",
            )
        )
        ok = False
    return result if ok else None


def split_problems(endpoints: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Problem]:
    """The rules across endpoints, over `(path, canonical endpoint)` pairs holding every version of each
    name that splits (a document's endpoints, or one name's rows): a split is on the default version,
    targets another version, and that version exists. Problems are at `<path>.traffic_split...`."""
    listed = list(endpoints)
    versions: dict[str, set[str]] = {}
    for _, endpoint in listed:
        versions.setdefault(endpoint["name"], set()).add(endpoint["version"])
    problems: list[Problem] = []
    for path, endpoint in listed:
        split = endpoint.get("traffic_split")
        if not split:
            continue
        where = child(path, "traffic_split")
        name, own, target = endpoint["name"], endpoint["version"], split["version"]
        if not endpoint.get("default"):
            problems.append(
                Problem(
                    where,
                    f"only the default version of {name} may split its traffic, and {name}:{own} is not the default: "
                    "move the split to the default version or remove it",
                )
            )
        if target == own:
            problems.append(Problem(child(where, "version"), f"must name another version of {name}, not {own} itself"))
        elif target not in versions.get(name, set()):
            known = ", ".join(sorted(versions.get(name, set()) - {own})) or "none"
            problems.append(
                Problem(
                    child(where, "version"),
                    f"names {name}:{target}, which does not exist (other versions of {name}: {known})",
                )
            )
    return problems


# --- the decision (data plane, /-/routes, routes/resolve/, the admin's route-debug page) ---------------

# How a split decided one request.
BY_HEADER = "header"  # the request matched `header`
BY_STICKY = "sticky"  # the sticky value's bucket
BY_PERCENT = "percent"  # 0 or 100: no draw needed
BY_RANDOM = "random"  # an independent draw
DECIDED_BY_SPLIT = "traffic_split"  # decided_by in the route debuggers when the split chose the version


class SplitDecision(NamedTuple):
    """`to_target`: the request goes to the split's version; `how`: BY_*; `bucket` the sticky value's
    bucket (0–9,999) when one was hashed."""

    to_target: bool
    how: str
    bucket: int | None = None


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """A validated `traffic_split`, compiled: what the data plane holds per splitting endpoint.

    `headers` as Matchers.headers (lower-case name, accepted values); `sticky_name` lower-cased for a
    header, as written for a cookie (cookie names are case-sensitive); `threshold` = percent × 100.
    `wanted` is every request header the decision reads, as ASGI spells names (lower-case bytes)."""

    name: str
    version: str
    target_key: str  # name:version of the target, as snapshot.endpoints keys it
    percent: float
    threshold: int
    headers: tuple[tuple[str, frozenset[str]], ...]
    sticky: str | None
    sticky_name: str
    salt: bytes
    wanted: frozenset[bytes]

    def bucket(self, value: str) -> int:
        """The bucket (0–9,999) of a sticky value: stable across processes, releases and machines."""
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8, key=self.salt).digest()
        return int.from_bytes(digest, "big") % BUCKETS

    def sticky_value(self, headers: Mapping[str, str | None], client_ip: str | None) -> str | None:
        """The value that keeps a client on one version, from the request headers (lower-case name →
        value, None for a header sent twice; `cookie` holds every Cookie header joined by `; `) and
        the client's address; None when the request has none (then the draw is random)."""
        if self.sticky == "header":
            value = headers.get(self.sticky_name)
            return value if value else None
        if self.sticky == "cookie":
            return cookie_value(headers.get("cookie") or "", self.sticky_name)
        if self.sticky == "ip":
            return client_ip or None
        return None

    def decide(
        self,
        headers: Mapping[str, str | None],
        client_ip: str | None = None,
        draw: Callable[[], float] | None = random.random,
    ) -> SplitDecision:
        """Where one request goes. `draw` is the random source for requests without a sticky value;
        None (the route debuggers) answers BY_RANDOM with to_target False, for "it depends"."""
        if self.headers and _headers_match(self.headers, headers):
            return SplitDecision(True, BY_HEADER)
        threshold = self.threshold
        if threshold <= 0 or threshold >= BUCKETS:
            return SplitDecision(threshold >= BUCKETS, BY_PERCENT)
        value = self.sticky_value(headers, client_ip) if self.sticky is not None else None
        if value is not None:
            bucket = self.bucket(value)
            return SplitDecision(bucket < threshold, BY_STICKY, bucket)
        if draw is None:
            return SplitDecision(False, BY_RANDOM)
        return SplitDecision(draw() * BUCKETS < threshold, BY_RANDOM)

    def header_values(self, raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str | None]:
        """The request headers the decision reads, name → value (None: sent more than once), from ASGI
        headers; several Cookie headers are one cookie list (RFC 9113 §8.2.3 lets HTTP/2 split it)."""
        wanted = self.wanted
        found: dict[str, str | None] = {}
        for name, value in raw_headers:
            if name in wanted:
                text = name.decode("latin-1")
                seen = found.get(text, "")
                if text == "cookie" and text in found:
                    found[text] = f"{seen}; {value.decode('latin-1')}"
                else:
                    found[text] = None if text in found else value.decode("latin-1")
        return found

    def explain(self, headers: Mapping[str, str | None], client_ip: str | None, source: str) -> dict[str, Any]:
        """What a route debugger shows: the split's settings and how this request would be decided.
        `source` is the splitting (default) version."""
        decision = self.decide(headers, client_ip, draw=None)
        version: str | None
        if decision.how == BY_RANDOM:
            version = None  # each request is drawn
        else:
            version = self.version if decision.to_target else source
        answer: dict[str, Any] = {
            "applies": True,
            "from_version": source,
            "to_version": self.version,
            "percent": self.percent,
            "sticky": self.sticky,
            "sticky_name": self.sticky_name or None,
            "decided_by": decision.how,
            "version": version,
            "bucket": decision.bucket,
        }
        if decision.how == BY_RANDOM:
            reason = "no sticky value in the request" if self.sticky else "not sticky"
            answer["note"] = f"{reason}: each request is drawn, {self.percent:g} % go to {self.version}"
        elif decision.how == BY_STICKY:
            answer["note"] = (
                f"bucket {decision.bucket} of {BUCKETS}: below {self.threshold} goes to {self.version}, "
                f"so this client always takes {version}"
            )
        elif decision.how == BY_HEADER:
            answer["note"] = f"the request carries the canary header: always {self.version}"
        else:
            answer["note"] = f"percent is {self.percent:g}: every request without the canary header takes {version}"
        return answer


def compile_split(name: str, split: Mapping[str, Any]) -> TrafficSplit:
    """A canonical `traffic_split` of endpoint `name`, compiled."""
    headers = tuple(
        sorted((header.lower(), frozenset(values)) for header, values in (split.get("header") or {}).items())
    )
    sticky = split.get("sticky")
    sticky_name = split.get("sticky_name") or ""
    if sticky == "header":
        sticky_name = sticky_name.lower()
    wanted = {header for header, _ in headers}
    if sticky == "header":
        wanted.add(sticky_name)
    elif sticky == "cookie":
        wanted.add("cookie")
    percent = split.get("percent", 0)
    return TrafficSplit(
        name=name,
        version=split["version"],
        target_key=f"{name}:{split['version']}",
        percent=percent,
        threshold=round(percent * 100),
        headers=headers,
        sticky=sticky,
        sticky_name=sticky_name,
        # The endpoint's name salts the hash: two names' canaries do not pick the same clients.
        salt=name.encode("utf-8")[:64],
        wanted=frozenset(h.encode("latin-1") for h in wanted),
    )


def cookie_value(cookies: str, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header (`a=1; b=2`), or None; the first one wins, as
    browsers send the most specific first (RFC 6265 §5.4); an empty value is no value."""
    for pair in cookies.split(";"):
        key, eq, value = pair.strip().partition("=")
        if eq and key == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def debug_split(
    split: TrafficSplit,
    *,
    source_version: str,
    source_methods: Iterable[str],
    target_methods: Iterable[str] | None,
    target_enabled: bool = True,
    method: str,
    headers: Mapping[str, str | None],
    client_ip: str | None,
) -> tuple[dict[str, Any], bool]:
    """A route debugger's view of a split on the `/{name}` key it matched: (what to show under
    `traffic_split`, whether the request goes to the target). The three debuggers (data plane
    `/-/routes`, `routes/resolve/`, the admin page) call this, so they say what the proxy does: the
    proxy also leaves a request where it is when the target is missing or a version does not serve its
    method. `decided_by` in the answer is how the split decided (BY_*); a debugger reports
    DECIDED_BY_SPLIT as the request's decided_by unless that is BY_RANDOM (no single answer)."""
    methods_served = target_methods is not None and method in set(target_methods) and method in set(source_methods)
    if not methods_served or not target_enabled:
        if target_methods is None:
            reason = f"{split.target_key} is not in this configuration"
        elif not target_enabled:
            reason = f"{split.target_key} is disabled (a disabled target takes no split traffic)"
        else:
            reason = f"{method} is not served by both versions"
        return {
            "applies": False,
            "from_version": source_version,
            "to_version": split.version,
            "percent": split.percent,
            "note": f"the split does not apply: {reason}",
        }, False
    answer = split.explain(headers, client_ip, source_version)
    return answer, answer["version"] == split.version
