"""Plugins: the per-endpoint policy chain's schemas, as data (ARCHITECTURE §11).

A plugin is a `PluginSpec` in `PLUGINS`: its name, the chain phase it runs in, a one-line description
and its config's fields as the same `Field` tree as `configdoc.schema`, so the one validator walks it
and the control plane can derive serializers, admin forms and OpenAPI from it. Every plugin config
takes `enabled` (default true); access plugins also take `mode: enforce | report`.

Where plugins are set, in a `format_version: 2` document:

    plugins: {<name>: <config>}            # top level: every endpoint
    endpoints: [{..., preserve_host: false, websocket: true, plugins: {<name>: <config>}}]

An endpoint's entry for a name replaces the document's entry for it wholly (no key-by-key merge), and
`{enabled: false}` turns it off for that endpoint: `effective_plugins` computes what an endpoint runs,
ordered by phase, which is what the data plane compiles from.

    effective_plugins({"cors": {}}, {"ip_restriction": {"allow": ["10.0.0.0/8"]}})
    → {"ip_restriction": {allow, deny, mode, enabled}, "cors": {origins, methods, ...}}   # chain order

Canonical form is sparse like the rest of the document: a plugin config keeps only what differs from
its defaults (`cors: {}` is the plugin on with every default, and stays `{}`), lists are sorted and
de-duplicated where order carries no meaning (origins, methods, CIDRs, header names), origins and
networks are written one way. `effective_plugin_config` fills the defaults back in.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .matchers import MATCHER_KEYS
from .problems import Problem, child
from .schema import METHODS, Field
from .splits import normalize_traffic_split

# --- the chain -------------------------------------------------------------------------------------

# The fixed order of a request's trip through the data plane (§11). Phases without a plugin name
# (framing, route, method, ...) are the proxy's own steps; they are listed so a plugin's position
# among them is data, not a comment. `response_headers` also covers CORS's response headers, which
# the cors plugin adds to every answer (upstream's and the gateway's own) from an allowed origin.
PHASES: tuple[str, ...] = (
    "framing",
    "route",
    "ip_restriction",
    "cors",
    "method",
    "enabled",
    "body_size",
    "authentication",
    "acl",
    "rate_limit",
    "overload",
    "breaker",
    "request_headers",
    "upstream",
    "response_headers",
)

MODES = ("enforce", "report")
MAX_LIST = 256  # origins, CIDRs, header names: far above any real policy, small enough to stay cheap
MAX_HEADER_VALUE = 8192

# Keys only a format-2 document may use (§11). A format-1 reader would ignore them, so a document that
# uses one must say `format_version: 2`, and a node reading format 1 is refused it (§4).
FORMAT_2_DOCUMENT_KEYS = ("consumers", "plugins")
# §12's `hosts`, `match_headers` (configdoc.matchers) and `traffic_split` (configdoc.splits) are format-2
# endpoint keys too.
FORMAT_2_ENDPOINT_KEYS = (
    "plugins",
    "preserve_host",
    "https_redirect",
    "websocket",
    "protocol",
    "hosts",
    "match_headers",
    "traffic_split",
)
# The §12 keys and their normalizers.
ROUTING_KEYS = {**MATCHER_KEYS, "traffic_split": normalize_traffic_split}


@dataclass(frozen=True)
class PluginSpec:
    """One plugin's contract.

    `fields` are the keys its config takes (with `enabled`, and `mode` for access plugins, added);
    `phase` is its place in `PHASES`; `description` is one line for docs and OpenAPI. `check` is for
    rules across fields: given the config with every default filled in, it yields
    `(path relative to the config, message)` pairs. `normalize` rewrites a valid config (defaults
    filled) into its canonical spelling: sorted, de-duplicated, lower-cased where meaning allows.
    """

    name: str
    phase: str
    description: str
    fields: Mapping[str, Field]
    access: bool = False
    check: Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]] | None = None
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def position(self) -> int:
        """The phase's index in `PHASES`: the data plane sorts a chain by (position, name)."""
        return PHASES.index(self.phase)


# --- header names and values ----------------------------------------------------------------------

# RFC 9110 §5.1: field-name = token; §5.6.2: tchar.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 9110 §5.5: visible ASCII, space, tab and obs-text (bytes 0x80-0xFF, i.e. Latin-1) — never CR,
# LF, NUL or another control character, which would split or smuggle a header on the wire.
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")

# Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: the proxy drops and
# writes them itself, so a rule could not mean anything but a broken or smuggled request.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"})
HOP_BY_HOP_PREFIXES = ("proxy-",)
# Headers the gateway writes and that upstreams and clients rely on to tell the truth (who called, from
# where, which request): a rule changing them would let configuration forge them.
GATEWAY_OWNED = frozenset(
    {
        "forwarded",
        "via",
        "x-request-id",
        "x-endpoint-id",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-real-ip",
        "x-response-time",
        "x-circuit-breaker",
        "content-length",
    }
)
GATEWAY_OWNED_PREFIXES = ("x-forwarded-", "x-consumer-", "x-gateway-")


def header_name_problem(name: Any, *, request: bool) -> str | None:
    """Why `name` cannot be named by a header rule (or a CORS header list), or None.

    Names compare case-insensitively (RFC 9110 §5.1). `request`: the rule acts on the upstream
    request, where `Host` is refused too (`preserve_host` is the setting for it).
    """
    if not isinstance(name, str):
        return f"a header name must be a string, not {_type(name)}"
    if len(name) > 256 or not _TOKEN.match(name):
        return f"{name[:256]!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    # `_` read as `-`: CGI-style backends (WSGI, PHP, nginx's underscores_in_headers) take
    # `X_Forwarded_For` for `X-Forwarded-For`, so the other spelling would forge the same header.
    lower = name.lower().replace("_", "-")
    if lower in HOP_BY_HOP or lower.startswith(HOP_BY_HOP_PREFIXES):
        return f"{name} is a hop-by-hop header: the gateway manages it per connection, a rule may not name it"
    if lower in GATEWAY_OWNED or lower.startswith(GATEWAY_OWNED_PREFIXES):
        return f"{name} is written by the gateway itself and may not be changed by a rule"
    if request and lower == "host":
        return "Host may not be set by a rule: use the endpoint's preserve_host to send the client's Host upstream"
    return None


def _header_value_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"a header value must be a string, not {_type(value)} (quote it)"
    if len(value) > MAX_HEADER_VALUE:
        return f"must be at most {MAX_HEADER_VALUE} characters"
    if not _FIELD_VALUE.match(value):
        return "must hold only visible characters, spaces and tabs (no CR, LF, NUL or other control characters)"
    if value != value.strip(" \t"):
        return "must not begin or end with whitespace"
    return None


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _request_header(value: Any) -> str | None:
    return header_name_problem(value, request=True)


def _response_header(value: Any) -> str | None:
    return header_name_problem(value, request=False)


def _names_in_order(names: Iterable[str]) -> list[str]:
    """Header names de-duplicated case-insensitively (first spelling kept), sorted case-insensitively."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return [seen[key] for key in sorted(seen)]


def _header_fields(request: bool) -> dict[str, Field]:
    name = Field("str", check=_request_header if request else _response_header)
    value = Field("str", check=_header_value_problem)
    names = "header names (hop-by-hop and gateway-owned ones refused" + (", and Host)" if request else ")")
    return {
        "set": Field(
            "map",
            default={},
            key=name,
            item=value,
            max_items=MAX_LIST,
            help=f"name → value, replacing any value; {names}; values ≤ 8 KiB, no CR/LF/NUL",
        ),
        "add": Field(
            "map",
            default={},
            key=name,
            item=value,
            max_items=MAX_LIST,
            help="name → value, added beside any value already there; same rules as `set`",
        ),
        "remove": Field("list", default=[], item=name, max_items=MAX_LIST, help=f"{names}; applied first"),
    }


def _header_rules_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for key in ("set", "add"):
        seen: dict[str, str] = {}
        for name in config[key]:
            first = seen.setdefault(name.lower(), name)
            if first != name:
                yield child(key, name), f"{name} and {first} name the same header (names ignore case)"


def _header_rules_normalize(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "remove": _names_in_order(config["remove"])}


# --- CORS -----------------------------------------------------------------------------------------

# An origin as browsers send it (RFC 6454 §6.2): scheme "://" host [":" port], nothing after.
# Hosts are ASCII (an internationalised name in its xn-- form, as browsers serialise it).
_ORIGIN = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ORIGIN = 2048


def _origin_problem(value: Any) -> str | None:
    if value == "*":
        return None
    match = _ORIGIN.fullmatch(value)
    if match is None:
        if value.lower() == "null":
            return "'null' is the origin of sandboxed and file pages; allowing it allows any of them"
        return f"{value!r} is not an origin: write scheme://host[:port] (like https://app.example.com), or '*'"
    if match["host"].startswith("["):
        try:
            ipaddress.IPv6Address(match["host"][1:-1])
        except ValueError:
            return f"{value!r} is not an origin: {match['host']} is not an IPv6 address"
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        return f"{value!r} is not an origin: the port must be 1-65535"
    return None


def normalize_origin(value: str) -> str:
    """An origin the way a browser serialises it: scheme and host lower-case, an IPv6 host in its
    compressed form, no default port."""
    if value == "*":
        return value
    origin = origin_key(value)
    assert origin is not None, "validated first"
    return origin


def origin_key(value: str) -> str | None:
    """`value` (an `Origin` header, or a configured origin) in the form `normalize_origin` writes, or
    None when it is not an origin at all: `null`, `*`, a path or anything malformed. The data plane
    compares a request's Origin with the configured ones through this, so both sides agree."""
    match = _ORIGIN.fullmatch(value) if len(value) <= MAX_ORIGIN else None
    if match is None:
        return None
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if port is not None:
        number = int(port)
        if not 1 <= number <= 65535:
            return None
        if number != _DEFAULT_PORTS.get(scheme):
            return f"{scheme}://{host}:{number}"
    return f"{scheme}://{host}"


def _cors_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    origins = config["origins"]
    if "*" in origins and len(origins) > 1:
        yield "origins", "'*' allows every origin: list it alone, or list exact origins without it"
    if config["credentials"] and "*" in origins:
        yield "origins", "'*' cannot be combined with credentials: true (browsers refuse it); list the origins"


def _cors_normalize(config: dict[str, Any]) -> dict[str, Any]:
    return {
        **config,
        "origins": sorted({normalize_origin(origin) for origin in config["origins"]}),
        "methods": sorted(set(config["methods"])),
        "headers": _names_in_order(config["headers"]),
        "expose_headers": _names_in_order(config["expose_headers"]),
    }


# A CORS list may name any header a browser may send or read, gateway-made ones included (a client
# may well read X-Request-ID), so only the syntax is checked.
def _cors_header(value: Any) -> str | None:
    if len(value) > 256 or not _TOKEN.match(value):
        return f"{value[:256]!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    return None


CORS_FIELDS: dict[str, Field] = {
    "origins": Field(
        "list",
        default=["*"],
        min_items=1,
        max_items=MAX_LIST,
        item=Field("str", max_length=MAX_ORIGIN, check=_origin_problem),
        help="`*` alone, or exact origins `scheme://host[:port]` (scheme and host lower-cased, default port dropped; "
        "`null` never)",
    ),
    "methods": Field(
        "list",
        default=["GET", "POST"],
        min_items=1,
        max_items=len(METHODS),
        item=Field("enum", choices=METHODS),
        help="`Access-Control-Allow-Methods`; upper-cased, sorted",
    ),
    "headers": Field(
        "list",
        default=["Content-Type"],
        max_items=MAX_LIST,
        item=Field("str", check=_cors_header),
        help="request headers a preflight may ask for (`Access-Control-Allow-Headers`); `*`: any, answered by name; "
        "empty: none beyond the CORS-safelisted",
    ),
    "expose_headers": Field(
        "list",
        default=[],
        max_items=MAX_LIST,
        item=Field("str", check=_cors_header),
        help="response headers scripts may read (`Access-Control-Expose-Headers`)",
    ),
    "credentials": Field(
        "bool", default=False, help="`Access-Control-Allow-Credentials: true`; needs exact origins, not `*`"
    ),
    "max_age": Field("int", default=600, minimum=0, maximum=86_400, help="seconds a browser may cache a preflight"),
}

# --- IP restriction -------------------------------------------------------------------------------


def _network_problem(value: Any) -> str | None:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value[:100]!r} is not an IPv4 or IPv6 address or CIDR (like 10.0.0.0/8 or 2001:db8::/32)"
    # A zone (fe80::1%eth0) names an interface of one host, not an address a rule could match.
    if "%" in value:
        return f"{value!r} has an IPv6 zone (%...); write the address without it"
    # The data plane sees IPv4 clients as IPv4; an IPv4-mapped IPv6 rule would never match them.
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        return f"{value!r} is an IPv4-mapped IPv6 address; write the IPv4 form ({network.network_address.ipv4_mapped})"
    return None


def normalize_network(value: str) -> str:
    """A CIDR in network form (host bits cleared, as Kong and nginx read `10.0.0.1/8`); a single host
    is written as its bare address."""
    network = ipaddress.ip_network(value, strict=False)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _networks_in_order(values: Iterable[str]) -> list[str]:
    networks = {ipaddress.ip_network(value, strict=False) for value in values}
    ordered = sorted(networks, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return [normalize_network(str(network)) for network in ordered]


def _ip_restriction_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    # `{enabled: false}` alone is how an endpoint turns a global restriction off: nothing else needed.
    if config["enabled"] and not config["allow"] and not config["deny"]:
        yield "", "needs at least one address or CIDR in allow or deny"


def _ip_restriction_normalize(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "allow": _networks_in_order(config["allow"]), "deny": _networks_in_order(config["deny"])}


_NETWORK = Field("str", max_length=100, check=_network_problem)
_NETWORKS_HELP = "IPv4/IPv6 addresses or CIDRs, written in network form, sorted"
IP_RESTRICTION_FIELDS: dict[str, Field] = {
    "allow": Field(
        "list", default=[], max_items=MAX_LIST, item=_NETWORK, help=f"{_NETWORKS_HELP}; when set, only these pass"
    ),
    "deny": Field(
        "list", default=[], max_items=MAX_LIST, item=_NETWORK, help=f"{_NETWORKS_HELP}; deny wins over allow"
    ),
}

# --- authentication and acl -----------------------------------------------------------------------

# The plugins of the `authentication` phase: the first credential present decides (§11). `acl` needs
# one of them in an endpoint's chain.
AUTHENTICATION_PLUGINS = ("basic_auth", "forward_auth", "jwt", "key_auth")
# Those that look for a credential in the request: with none present, the endpoint acts as the
# consumer their `anonymous` names (forward_auth asks its service every time instead).
ANONYMOUS_PLUGINS = ("basic_auth", "jwt", "key_auth")
KEY_LOCATIONS = ("header", "query")
JWT_CLAIMS = ("exp", "nbf")
MAX_AUTH_URL = 2000
_CONSUMER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_CONSUMER_NAME_HELP = "1-64 letters, digits and _.@-"
# A JWT claim name (RFC 7519 §4: any string; these are the ones worth mapping): visible ASCII.
_CLAIM = re.compile(r"^[!-~]{1,256}$")
# The realm goes inside a quoted-string of WWW-Authenticate: visible ASCII and spaces, no `"` or `\`.
_REALM = re.compile(r"^[!#-\[\]-~](?:[ !#-\[\]-~]{0,126}[!#-\[\]-~])?$")


def auth_url_problem(value: Any) -> str | None:
    """Why `value` cannot be an identity provider's or an auth service's URL (`jwt.jwks_url`,
    `forward_auth.url`), or None: http(s), a host, no credentials or fragment, and never a link-local
    or cloud metadata address (the SSRF rule of targets, without an opt-in: a credential check has no
    business there)."""
    from .egress import is_denied_target_host

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        return f"{value[:200]!r} is not a valid URL: {error}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{value[:200]!r} must be an http:// or https:// URL"
    if not parts.hostname:
        return f"{value[:200]!r} has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    if parts.fragment or value.endswith("#"):
        return f"{value[:200]!r} must not have a fragment"
    if any(character.isspace() or not character.isprintable() for character in value):
        return f"{value[:200]!r} must not contain whitespace or control characters"
    if is_denied_target_host(parts.hostname):
        return f"{parts.hostname} is a link-local or cloud metadata address, which the gateway never calls"
    return None


def _key_name_problem(value: Any) -> str | None:
    return header_name_problem(value, request=False)


def _claim_problem(value: Any) -> str | None:
    if not _CLAIM.match(value):
        return "must be visible ASCII characters without spaces"
    return None


def _acl_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    if config["enabled"] and bool(config["allow"]) == bool(config["deny"]):
        yield "", "needs groups in exactly one of allow or deny"


def _groups_normalize(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "allow": sorted(set(config["allow"])), "deny": sorted(set(config["deny"]))}


def _forward_auth_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    if config["enabled"] and "url" not in config:
        yield "url", "is required"


def _forward_auth_normalize(config: dict[str, Any]) -> dict[str, Any]:
    return {
        **config,
        "request_headers": _names_in_order(config["request_headers"]),
        "response_headers": _names_in_order(config["response_headers"]),
    }


def _key_auth_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    # The data plane drops header names with `_` (CGI-style backends read `_` as `-`, so they could
    # pass for another header), and key_auth never reads one: such a name could only be a query
    # parameter.
    if config["enabled"] and "query" not in config["in"]:
        for index, name in enumerate(config["key_names"]):
            if "_" in name:
                yield (
                    f"key_names[{index}]",
                    f"{name} has `_`, which the gateway never reads in a header name: write it with `-`, "
                    "or add query to `in`",
                )


def _key_auth_normalize(config: dict[str, Any]) -> dict[str, Any]:
    # Query parameter names are case-sensitive, so names are de-duplicated exactly.
    return {**config, "key_names": sorted(set(config["key_names"])), "in": sorted(set(config["in"]))}


def _jwt_normalize(config: dict[str, Any]) -> dict[str, Any]:
    return {
        **config,
        "claims_to_verify": sorted(set(config["claims_to_verify"])),
        "issuers": sorted(set(config["issuers"])),
        "audiences": sorted(set(config["audiences"])),
    }


ANONYMOUS = Field(
    "str",
    default=None,
    nullable=True,
    max_length=64,
    pattern=_CONSUMER_NAME,
    pattern_help=_CONSUMER_NAME_HELP,
    help="a consumer's username: a request with no credential at all acts as it (else 401); "
    "the endpoint's authentication plugins that set it must agree",
)
HIDE_CREDENTIALS = Field("bool", default=False, help="remove the credential from the request before forwarding")
_TOKENS = Field("str", max_length=512, check=_claim_problem)

KEY_AUTH_FIELDS: dict[str, Field] = {
    "key_names": Field(
        "list",
        default=["apikey"],
        min_items=1,
        max_items=16,
        item=Field("str", check=_key_name_problem),
        help="header and/or query parameter names carrying the key (hop-by-hop and gateway-owned names refused; "
        "a name with `_` is never read in a header, only in the query)",
    ),
    "in": Field(
        "list",
        default=["header"],
        min_items=1,
        max_items=8,
        item=Field("enum", choices=KEY_LOCATIONS),
        help="where to look for the key",
    ),
    "hide_credentials": HIDE_CREDENTIALS,
    "anonymous": ANONYMOUS,
}

JWT_FIELDS: dict[str, Field] = {
    "claims_to_verify": Field(
        "list",
        default=["exp"],
        max_items=8,
        item=Field("enum", choices=JWT_CLAIMS),
        help="registered claims that must be present and valid",
    ),
    "leeway": Field("int", default=0, minimum=0, maximum=300, help="seconds of clock skew allowed on exp and nbf"),
    "issuers": Field(
        "list", default=[], max_items=MAX_LIST, item=_TOKENS, help="accepted iss values; empty: any a credential has"
    ),
    "audiences": Field(
        "list", default=[], max_items=MAX_LIST, item=_TOKENS, help="accepted aud values; empty: aud not checked"
    ),
    "jwks_url": Field(
        "str",
        default=None,
        nullable=True,
        max_length=MAX_AUTH_URL,
        check=auth_url_problem,
        help="an OIDC provider's JWKS (http/https; never link-local or metadata): keys fetched off the hot path",
    ),
    "consumer_claim": Field(
        "str",
        default=None,
        nullable=True,
        max_length=256,
        check=_claim_problem,
        help="the claim naming a consumer's username; unset or unmatched: anonymous with the claims",
    ),
    "anonymous": ANONYMOUS,
}

BASIC_AUTH_FIELDS: dict[str, Field] = {
    "realm": Field(
        "str",
        default="gateway",
        max_length=128,
        pattern=_REALM,
        pattern_help='1-128 visible ASCII characters and inner spaces, no " or \\',
        help="the realm of WWW-Authenticate",
    ),
    "hide_credentials": HIDE_CREDENTIALS,
    "anonymous": ANONYMOUS,
}

FORWARD_AUTH_FIELDS: dict[str, Field] = {
    "url": Field(
        "str",
        max_length=MAX_AUTH_URL,
        check=auth_url_problem,
        help="the auth service, called with GET (http/https; never link-local or metadata)",
    ),
    "timeout": Field(
        "number",
        default=2,
        minimum=0,
        exclusive_minimum=True,
        maximum=60,
        help="seconds; beyond it, 503 auth_unavailable",
    ),
    "request_headers": Field(
        "list",
        default=[],
        max_items=MAX_LIST,
        item=Field("str", check=_response_header),
        help="client request headers sent to the auth service (hop-by-hop and gateway-owned names refused)",
    ),
    "response_headers": Field(
        "list",
        default=[],
        max_items=MAX_LIST,
        item=Field("str", check=_request_header),
        help="auth service answer headers copied onto the upstream request (hop-by-hop, gateway-owned and Host "
        "refused)",
    ),
}

_GROUP = Field("str", max_length=64, pattern=_CONSUMER_NAME, pattern_help=_CONSUMER_NAME_HELP)
ACL_FIELDS: dict[str, Field] = {
    "allow": Field(
        "list", default=[], max_items=MAX_LIST, item=_GROUP, help="consumer groups let through; others get 403"
    ),
    "deny": Field("list", default=[], max_items=MAX_LIST, item=_GROUP, help="consumer groups refused with 403"),
}

# --- rate limiting --------------------------------------------------------------------------------

# A limit's window in seconds, by the name the document uses.
RATE_LIMIT_WINDOWS: Mapping[str, int] = {"second": 1, "minute": 60, "hour": 3_600, "day": 86_400}
RATE_LIMIT_BY = ("consumer", "ip", "header", "endpoint")
RATE_LIMIT_POLICIES = ("local", "redis")
MAX_RATE_LIMIT_REQUESTS = 1_000_000_000  # a billion a window: beyond any real limit, far inside Redis's integers


def _rate_limit_header_problem(value: Any) -> str | None:
    # Read from the client's request, so the gateway's own names are fine to count by (X-Real-IP set by a
    # trusted front proxy); only names no request can carry usefully are refused.
    if len(value) > 256 or not _TOKEN.match(value):
        return f"{value[:256]!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    lower = value.lower()
    if "_" in lower:
        return f"{value} has `_`, which the gateway never reads in a header name: write it with `-`"
    if lower in HOP_BY_HOP or lower.startswith(HOP_BY_HOP_PREFIXES):
        return f"{value} is a hop-by-hop header: it describes the connection, not the caller"
    return None


def _limit_problem(limit: Mapping[str, Any]) -> str | None:
    missing = [key for key in ("requests", "per") if key not in limit]
    if missing:
        return f"needs {' and '.join(missing)}: write a limit like {{requests: 100, per: minute}}"
    return None


def _rate_limit_check(config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    # `{enabled: false}` alone is how an endpoint turns a global limit off: nothing else needed.
    if not config["enabled"]:
        return
    limits = config.get("limits")
    if limits is None:
        yield "limits", "is required: a list like [{requests: 100, per: minute}]"
    else:
        seen: set[str] = set()
        for index, limit in enumerate(limits):
            if limit["per"] in seen:
                yield f"limits[{index}].per", f"{limit['per']} is limited twice: keep one limit per window"
            seen.add(limit["per"])
    if config["by"] == "header" and config["header_name"] is None:
        yield "header_name", "is required when by is header"
    if config["by"] != "header" and config["header_name"] is not None:
        yield "header_name", "is only read when by is header: remove it, or set by: header"


def _rate_limit_normalize(config: dict[str, Any]) -> dict[str, Any]:
    if "limits" not in config:
        return config
    limits = sorted(config["limits"], key=lambda limit: RATE_LIMIT_WINDOWS[limit["per"]])
    return {**config, "limits": [{"requests": limit["requests"], "per": limit["per"]} for limit in limits]}


RATE_LIMIT_FIELDS: dict[str, Field] = {
    "limits": Field(
        "list",
        min_items=1,
        max_items=len(RATE_LIMIT_WINDOWS),
        item=Field(
            "object",
            fields={
                "requests": Field(
                    "int", minimum=1, maximum=MAX_RATE_LIMIT_REQUESTS, help="requests allowed in one window"
                ),
                "per": Field("enum", choices=tuple(RATE_LIMIT_WINDOWS), help="the window"),
            },
            check=_limit_problem,
        ),
        help="required; `requests` (1–1e9) per `per` (second, minute, hour, day), one limit per window, all "
        "enforced at once; over any of them → 429 rate_limited",
    ),
    "by": Field(
        "enum",
        default="consumer",
        choices=RATE_LIMIT_BY,
        help="what is counted: the consumer (the anonymous one counts as its own; no consumer at all: the "
        "client address), the client address, a request header's value, or the endpoint as a whole",
    ),
    "header_name": Field(
        "str",
        default=None,
        nullable=True,
        check=_rate_limit_header_problem,
        help="the request header counted by when by is header (required then, refused otherwise); "
        "a request without it is counted by client address",
    ),
    "policy": Field(
        "enum",
        default="local",
        choices=RATE_LIMIT_POLICIES,
        help="local: each data plane process counts on its own; redis: the fleet shares counts in DATAPLANE_REDIS_URL",
    ),
    "fault_tolerant": Field(
        "bool",
        default=True,
        help="redis unreachable: true counts locally and keeps serving, false answers 503 rate_limit_unavailable",
    ),
}

# --- the registry ---------------------------------------------------------------------------------

ENABLED = Field("bool", default=True, help="false on an endpoint turns the document's plugin of that name off")
MODE = Field(
    "enum", default="enforce", choices=MODES, help="report: decide, log and count, but let the request through"
)


def _spec(
    name: str,
    phase: str,
    description: str,
    fields: Mapping[str, Field],
    *,
    access: bool = False,
    check: Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]] | None = None,
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> PluginSpec:
    common = {"enabled": ENABLED, **({"mode": MODE} if access else {})}
    return PluginSpec(name, phase, description, {**fields, **common}, access, check, normalize)


PLUGINS: Mapping[str, PluginSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "ip_restriction",
            "ip_restriction",
            "Allow or deny clients by address or CIDR (deny wins); refused clients get 403 ip_forbidden.",
            IP_RESTRICTION_FIELDS,
            access=True,
            check=_ip_restriction_check,
            normalize=_ip_restriction_normalize,
        ),
        _spec(
            "cors",
            "cors",
            "Answer CORS preflights and add CORS headers for allowed browser origins; others get 403 cors_forbidden.",
            CORS_FIELDS,
            check=_cors_check,
            normalize=_cors_normalize,
        ),
        _spec(
            "key_auth",
            "authentication",
            "Authenticate by API key (header or query parameter), compared by sha256 with the consumers' key hashes.",
            KEY_AUTH_FIELDS,
            access=True,
            check=_key_auth_check,
            normalize=_key_auth_normalize,
        ),
        _spec(
            "jwt",
            "authentication",
            "Authenticate by a signed JWT (Authorization: Bearer), verified with the credential its iss selects "
            "or a JWKS.",
            JWT_FIELDS,
            access=True,
            normalize=_jwt_normalize,
        ),
        _spec(
            "basic_auth",
            "authentication",
            "Authenticate by HTTP Basic username and password against the consumers' PBKDF2 hashes.",
            BASIC_AUTH_FIELDS,
            access=True,
        ),
        _spec(
            "forward_auth",
            "authentication",
            "Ask an auth service (GET url): 2xx forwards the request, any other answer is returned as is.",
            FORWARD_AUTH_FIELDS,
            access=True,
            check=_forward_auth_check,
            normalize=_forward_auth_normalize,
        ),
        _spec(
            "acl",
            "acl",
            "Let through or refuse authenticated consumers by group; refused consumers get 403 forbidden.",
            ACL_FIELDS,
            access=True,
            check=_acl_check,
            normalize=_groups_normalize,
        ),
        _spec(
            "rate_limit",
            "rate_limit",
            "Limit requests per window (second, minute, hour, day) by consumer, address, header or endpoint; "
            "over the limit → 429 rate_limited with Retry-After.",
            RATE_LIMIT_FIELDS,
            access=True,
            check=_rate_limit_check,
            normalize=_rate_limit_normalize,
        ),
        _spec(
            "request_headers",
            "request_headers",
            "Remove, then set, then add headers on the request sent upstream.",
            _header_fields(request=True),
            check=_header_rules_check,
            normalize=_header_rules_normalize,
        ),
        _spec(
            "response_headers",
            "response_headers",
            "Remove, then set, then add headers on the answer sent to the client.",
            _header_fields(request=False),
            check=_header_rules_check,
            normalize=_header_rules_normalize,
        ),
    )
}

PRESERVE_HOST = Field(
    "bool", default=False, help="true: the client's Host goes upstream (TLS SNI stays the target's host)"
)
HTTPS_REDIRECT = Field(
    "bool",
    default=False,
    help="true: a request over plain HTTP is answered 308 to the same URL over https:// (§13, TLS termination)",
)
WEBSOCKET = Field(
    "bool",
    default=True,
    help="false: a WebSocket upgrade request is refused (403 upgrade_forbidden) instead of tunnelled upstream",
)
PROTOCOL = Field(
    "enum",
    choices=("http", "grpc"),
    default="http",
    help="grpc: requests go upstream over HTTP/2 (h2c, or h2 over TLS for an https target) with trailers "
    "passed both ways and gateway errors answered as grpc-status (§13); clients must speak HTTP/2",
)
# The §11/§13 endpoint flags: their field, and the value canonical form leaves out (the default).
ENDPOINT_FLAGS = {
    "preserve_host": PRESERVE_HOST,
    "https_redirect": HTTPS_REDIRECT,
    "websocket": WEBSOCKET,
    "protocol": PROTOCOL,
}

# --- validation, canonical and effective forms ----------------------------------------------------


def normalize_plugin_config(spec: PluginSpec, value: Any, path: str, problems: list[Problem]) -> dict[str, Any] | None:
    """One plugin's config in canonical sparse form, or None after recording its problems in `problems`."""
    from .validate import INVALID, _is_default, _object  # the validator imports this module

    if value is None:
        problems.append(Problem(path, f"must be a mapping ({{}} turns {spec.name} on with its defaults), not null"))
        return None
    found: list[Problem] = []
    full = _object(spec.fields, value, path, found, keep_defaults=True)
    problems.extend(found)
    if full is INVALID:
        return None
    full = effective_plugin_config(spec.name, full)
    ok = True
    if spec.check is not None:
        for where, message in spec.check(full):
            problems.append(Problem(_join(path, where), message))
            ok = False
    if not ok:
        return None
    if spec.normalize is not None:
        full = spec.normalize(full)
    return {key: entry for key, entry in full.items() if not _is_default(spec.fields[key], entry)}


def _join(path: str, relative: str) -> str:
    return path if not relative else child(path, relative)


def normalize_plugins(value: Any, path: str, problems: list[Problem]) -> dict[str, dict[str, Any]] | None:
    """A `plugins` mapping (the document's or an endpoint's) in canonical form, or None after recording
    every problem. Unknown names are refused with the known ones listed."""
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f"must be a mapping of plugin name to config, not {_type(value)}"))
        return None
    result: dict[str, dict[str, Any]] = {}
    ok = True
    for name, config in value.items():
        spec = PLUGINS.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(sorted(PLUGINS))
            problems.append(Problem(child(path, name), f"unknown plugin {name!r} (known plugins: {known})"))
            ok = False
            continue
        normalized = normalize_plugin_config(spec, config, child(path, name), problems)
        if normalized is None:
            ok = False
        else:
            result[name] = normalized
    return result if ok else None


def normalize_endpoint_policies(
    data: Mapping[str, Any], path: str, problems: list[Problem], *, format_version: int
) -> dict[str, Any]:
    """An endpoint's format-2 keys (`plugins`, `preserve_host`, `https_redirect`, `websocket`, §12's
    `hosts`, `match_headers` and `traffic_split`) in
    canonical form, a flag only when it differs from its default; a format-1 document may not use them
    (each is reported with its path)."""
    from .validate import INVALID, _value

    result: dict[str, Any] = {}
    for key in FORMAT_2_ENDPOINT_KEYS:
        if key not in data:
            continue
        where = child(path, key)
        if format_version < 2:
            problems.append(Problem(where, format_2_message(key)))
        flag_field = ENDPOINT_FLAGS.get(key)
        matcher = ROUTING_KEYS.get(key)
        if matcher is not None:
            normalized = matcher(data[key], where, problems)
            if normalized:  # an empty list or mapping means what leaving it out means
                result[key] = normalized
        elif flag_field is not None:
            flag = _value(flag_field, data[key], where, problems)
            if flag is not INVALID and flag != flag_field.default:
                result[key] = flag
        else:
            plugins = normalize_plugins(data[key], where, problems)
            if plugins:
                result[key] = plugins
    return result


def format_2_message(key: str) -> str:
    """The problem reported for a §11 key in a format-1 document."""
    return (
        f"{key} needs format_version: 2 (a reader of format 1 would ignore it); "
        "set format_version: 2 at the top of the document"
    )


def required_format_version(document: Mapping[str, Any]) -> int:
    """The format a canonical document needs: 2 when it uses a §11 key, else 1 (so every document
    written before §11 keeps its bytes and its hash)."""
    if any(document.get(key) for key in FORMAT_2_DOCUMENT_KEYS):
        return 2
    for endpoint in document.get("endpoints") or ():
        if any(key in endpoint for key in FORMAT_2_ENDPOINT_KEYS):
            return 2
    return 1


def effective_plugin_config(name: str, sparse: Mapping[str, Any]) -> dict[str, Any]:
    """Plugin `name`'s config with every default filled in (`sparse` is canonical or raw-but-valid)."""
    from .validate import _effective

    return _effective(PLUGINS[name].fields, sparse)


def effective_plugins(
    document_plugins: Mapping[str, Mapping[str, Any]] | None,
    endpoint_plugins: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    """What one endpoint runs: the document's plugins overlaid by the endpoint's, by name.

    An endpoint's entry replaces the document's entry of the same name wholly (so `{enabled: false}`
    turns a global plugin off, and a partial entry does not inherit the global's other keys). Disabled
    plugins are left out. The result maps name to its effective config (defaults filled), in chain
    order (phase, then name): the order the data plane runs them in. Both arguments are canonical.
    """
    merged = {**(document_plugins or {}), **(endpoint_plugins or {})}
    chain = sorted(merged, key=lambda name: (PLUGINS[name].position, name))
    result: dict[str, dict[str, Any]] = {}
    for name in chain:
        config = effective_plugin_config(name, merged[name])
        if config["enabled"]:
            result[name] = config
    return result


def effective_anonymous(chain: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The consumer an endpoint acts as when a request carries no credential at all, or None (401):
    the `anonymous` of its chain's key_auth, jwt and basic_auth (validation makes those that set one agree).
    `chain` is `effective_plugins`' answer."""
    for name in ANONYMOUS_PLUGINS:
        config = chain.get(name)
        if config is not None and config.get("anonymous") is not None:
            return str(config["anonymous"])
    return None


def chain_problems(chain: Mapping[str, Mapping[str, Any]], own: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """Rules across one endpoint's plugins: `(path relative to the endpoint, message)` pairs. `chain` is
    its `effective_plugins`; `own` its own canonical `plugins` (to say where a plugin came from)."""
    if "acl" in chain and not any(name in chain for name in AUTHENTICATION_PLUGINS):
        where = "plugins.acl" if "acl" in own else ""
        source = "" if "acl" in own else "the document's acl: "
        yield (
            where,
            (
                f"{source}acl needs an authentication plugin ({', '.join(AUTHENTICATION_PLUGINS)}) on this endpoint: "
                "without one every request is anonymous and has no groups"
            ),
        )
    named = {name: chain[name]["anonymous"] for name in ANONYMOUS_PLUGINS if chain.get(name, {}).get("anonymous")}
    if len(set(named.values())) > 1:
        shown = ", ".join(f"{name}: {value}" for name, value in sorted(named.items()))
        yield "plugins", f"the authentication plugins name different anonymous consumers ({shown}); name one"


# --- the reference page ----------------------------------------------------------------------------


def _shown(value: Any, field: Field | None = None) -> str:
    if value is None and field is not None and not field.nullable and field.kind != "object":
        return "required"
    return "`" + json.dumps(value, separators=(", ", ": ")) + "`"


def _kind(spec: Field) -> str:
    if spec.kind == "list" and spec.item is not None:
        if spec.item.kind == "object":
            return "list of objects (" + ", ".join(f"`{key}`" for key in spec.item.fields) + ")"
        return "list of " + ("enums" if spec.item.kind == "enum" else "strings")
    if spec.kind == "map":
        return "map"
    return {"str": "string", "int": "int", "bool": "bool", "enum": "enum"}.get(spec.kind, spec.kind)


def _rule(spec: Field) -> str:
    parts: list[str] = []
    if spec.minimum is not None and spec.maximum is not None:
        low = f"> {spec.minimum:g}, ≤ " if spec.exclusive_minimum else f"{spec.minimum:g}–"
        parts.append(f"{low}{spec.maximum:g}")
    if spec.choices:
        parts.append(", ".join(spec.choices))
    if spec.item is not None and spec.item.choices and spec.kind == "list":
        parts.append(", ".join(spec.item.choices))
    if spec.max_items is not None:
        parts.append(f"{spec.min_items}–{spec.max_items} entries" if spec.min_items else f"≤ {spec.max_items} entries")
    if spec.pattern is not None and spec.pattern_help:
        parts.append(spec.pattern_help)
    if spec.help:
        parts.append(spec.help)
    return "; ".join(parts)


def reference_markdown() -> str:
    """The "Plugins" reference of docs/config-document.md, made from `PLUGINS` (a test holds the page
    to it, so a field cannot be added without the docs; print it with
    `python -c 'from configdoc.plugins import reference_markdown as r; print(r())'`)."""
    lines = [
        "Chain order: " + " → ".join(f"`{phase}`" if phase in PLUGINS else phase for phase in PHASES) + ".",
        "",
    ]
    for spec in sorted(PLUGINS.values(), key=lambda s: (s.position, s.name)):
        kind = "access plugin" if spec.access else "plugin"
        lines += [f"### `{spec.name}`", "", f"{spec.description} ({kind}, phase `{spec.phase}`)", ""]
        lines += ["| field | type | default | range / rule |", "|---|---|---|---|"]
        for name, field in spec.fields.items():
            lines.append(f"| `{name}` | {_kind(field)} | {_shown(field.default, field)} | {_rule(field)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


__all__ = [
    "ANONYMOUS_PLUGINS",
    "AUTHENTICATION_PLUGINS",
    "ENDPOINT_FLAGS",
    "FORMAT_2_DOCUMENT_KEYS",
    "FORMAT_2_ENDPOINT_KEYS",
    "GATEWAY_OWNED",
    "HOP_BY_HOP",
    "MAX_HEADER_VALUE",
    "MAX_LIST",
    "MODES",
    "PHASES",
    "PLUGINS",
    "PRESERVE_HOST",
    "HTTPS_REDIRECT",
    "ENDPOINT_FLAGS",
    "RATE_LIMIT_BY",
    "RATE_LIMIT_POLICIES",
    "RATE_LIMIT_WINDOWS",
    "WEBSOCKET",
    "PluginSpec",
    "auth_url_problem",
    "chain_problems",
    "effective_anonymous",
    "effective_plugin_config",
    "effective_plugins",
    "format_2_message",
    "header_name_problem",
    "normalize_endpoint_policies",
    "normalize_network",
    "normalize_origin",
    "origin_key",
    "normalize_plugin_config",
    "normalize_plugins",
    "reference_markdown",
    "required_format_version",
]
