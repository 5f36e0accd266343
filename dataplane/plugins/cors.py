"""The `cors` plugin (ARCHITECTURE §11): browsers' cross-origin rules, answered at the gateway.

Early access phase (priority 200: after `ip_restriction`, before the method check, authentication
and rate limits), and a response hook on every answer:

- No `Origin` header: the request is not a cross-origin browser request; it passes untouched and
  its answer gets nothing.
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin,
  asking for an allowed method and only allowed headers: 204 here, whatever the endpoint's methods,
  with `Access-Control-Allow-Origin` (the request's origin, or `*` when `origins: ["*"]` without
  credentials), `-Allow-Methods`, `-Allow-Headers`, `-Max-Age`, `-Allow-Credentials: true` (with
  credentials) and `Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers`.
  Asking for a method or a header not allowed: 403 `cors_forbidden`.
- Any request whose origin is not allowed (a `null` origin or a malformed one count as not allowed,
  unless `origins: ["*"]` without credentials), or that has more than one `Origin` header: 403
  `cors_forbidden`.
- Every other answer to an allowed origin (the upstream's, or the gateway's own: 404, 405, 502,
  503...) gets `Access-Control-Allow-Origin`, `-Expose-Headers` (when set), `-Allow-Credentials:
  true` (with credentials), and `Origin` added to its `Vary`; any CORS response header the
  upstream sent (`Access-Control-Allow-*`, `-Expose-Headers`, `-Max-Age`) is replaced, so a browser
  never sees two answers to one question.

`headers: ["*"]` allows whatever request headers a preflight asks for and answers with exactly those
names (reflected, so it holds with credentials too and covers `Authorization`, which a literal `*`
never does); an empty list allows none beyond the CORS-safelisted ones, which browsers never ask
about. Origins compare as configdoc's `origin_key` writes them (scheme and host lower-case, default
port dropped), and the allowed one is answered as the browser sent it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from configdoc.plugins import MAX_ORIGIN, origin_key

from ..errors import CorsForbidden
from ..types import Headers
from . import Answer, Phase, Plugin, PluginContext, register

if TYPE_CHECKING:
    from ..exchange import Exchange

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")

ALLOW_ORIGIN: Final = b"access-control-allow-origin"
VARY_ORIGIN: Final = (b"vary", b"Origin")
PREFLIGHT_VARY: Final = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")

# The CORS headers an answer may carry (Fetch standard): one from the upstream is dropped from an answer
# the gateway puts its own on, so the browser never sees two (others named access-control-* mean
# nothing to a browser and pass). A set question asked of the answer's names at C speed.
_CORS_ANSWER_NAMES: Final = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-allow-private-network",
        b"access-control-expose-headers",
        b"access-control-max-age",
    }
)

# What the access hook decided, kept in the exchange's notes for the response hook: one of these, or
# the `Access-Control-Allow-Origin` value (bytes) for an allowed origin.
NOTE: Final = "cors"


class _Decision:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NO_ORIGIN: Final = _Decision("no origin")
FORBIDDEN: Final = _Decision("forbidden")
PREFLIGHT: Final = _Decision("preflight answered")


def _shown(value: bytes) -> str:
    """A client's value in an error message: JSON escapes it, this keeps it short."""
    text = value.decode("latin-1")
    return text if len(text) <= 100 else text[:100] + "…"


def add_vary_origin(headers: Headers, names: dict[bytes, bytes] | None = None) -> None:
    """`Origin` added to the answer's `Vary` (to the last `Vary` there, or as one), unless it is
    already named or the answer varies on everything (`*`). `names`: the headers as a dict, when the
    caller made one (its keys tell at C speed whether there is a `Vary` at all)."""
    if b"vary" not in (dict(headers) if names is None else names):
        headers.append(VARY_ORIGIN)
        return
    last = -1
    for index, (name, value) in enumerate(headers):
        if name == b"vary":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token == b"origin" or token == b"*":
                    return
            last = index
    if last < 0:
        headers.append(VARY_ORIGIN)
    else:
        value = headers[last][1].strip(b" \t")
        headers[last] = (b"vary", value + b", Origin" if value else b"Origin")


class Cors(Plugin):
    name: ClassVar[str] = "cors"
    phase: ClassVar[Phase] = Phase.EARLY
    priority: ClassVar[int] = 200

    def __init__(self, config: Mapping[str, Any]) -> None:
        origins: list[str] = list(config["origins"])
        credentials = bool(config["credentials"])
        self.any_origin = origins == ["*"]
        # `*` only without credentials (browsers refuse it with them): configdoc refuses the pair,
        # and should it come anyway, the origin is reflected instead.
        self.star = self.any_origin and not credentials
        self.origins = frozenset(
            key.encode() for key in (origin_key(origin) for origin in origins if origin != "*") if key is not None
        )
        self.methods = frozenset(str(method).encode() for method in config["methods"])
        header_names = [str(name) for name in config["headers"]]
        self.any_header = "*" in header_names
        self.allowed_headers = frozenset(name.lower().encode() for name in header_names)
        allow_methods = ", ".join(sorted(str(method) for method in config["methods"])).encode()
        credentials_header = [(b"access-control-allow-credentials", b"true")] if credentials else []
        # Precomputed: every preflight answer's headers after Allow-Origin, and every other answer's.
        self.preflight_headers: Headers = [
            (b"access-control-allow-methods", allow_methods),
            *credentials_header,
            (b"access-control-max-age", str(int(config["max_age"])).encode()),
            PREFLIGHT_VARY,
        ]
        if header_names and not self.any_header:
            self.preflight_headers.append((b"access-control-allow-headers", ", ".join(header_names).encode()))
        expose = [str(name) for name in config["expose_headers"]]
        self.answer_headers: Headers = [
            *([(b"access-control-expose-headers", ", ".join(expose).encode())] if expose else []),
            *credentials_header,
        ]

    # --- which origins ---------------------------------------------------------------------------

    def allow_origin(self, origin: bytes) -> bytes | None:
        """The `Access-Control-Allow-Origin` value for a request's `Origin`, or None if not allowed."""
        if self.star:
            return b"*"
        if origin in self.origins:  # the browser's own serialisation: the usual case, one lookup
            return origin
        if len(origin) > MAX_ORIGIN:
            return None
        key = origin_key(origin.decode("latin-1"))
        if key is None:  # null, '*', malformed: never an allowed origin, not even under '*' with credentials
            return None
        if self.any_origin or key.encode() in self.origins:
            return origin
        return None

    def _decide(self, headers: Headers) -> bytes | _Decision:
        """For an answer the access hook never saw (a 404 `no_route` under the global plugins)."""
        origin: bytes | None = None
        count = 0
        for name, value in headers:
            if name == b"origin":
                origin, count = value, count + 1
        if origin is None:
            return NO_ORIGIN
        allowed = self.allow_origin(origin) if count == 1 else None
        return FORBIDDEN if allowed is None else allowed

    # --- hooks -----------------------------------------------------------------------------------

    def access(self, exchange: Exchange) -> Answer | None:
        headers: Headers = exchange.scope["headers"]
        by_name = dict(headers)  # built in C; when no name repeats (the usual case) it answers alone
        origin = by_name.get(b"origin")
        origins = 0 if origin is None else 1
        if origins and len(by_name) < len(headers):  # some name repeats: count the Origin headers
            origins = sum(1 for name, _ in headers if name == b"origin")
        note = exchange.context
        if note is None:
            note = exchange.context = {}
        if origin is None:
            note[NOTE] = NO_ORIGIN
            return None
        note[NOTE] = FORBIDDEN  # until allowed: a refusal's answer gets only Vary
        if origins > 1:
            raise CorsForbidden("the request has more than one Origin header")
        allowed = origin if origin in self.origins and not self.star else self.allow_origin(origin)
        if allowed is None:
            raise CorsForbidden(f"the origin {_shown(origin)} is not allowed here")
        if exchange.method == "OPTIONS":
            methods = 0
            request_method = b""
            request_headers: list[bytes] = []
            for name, value in headers:
                if name == b"access-control-request-method":
                    request_method, methods = value, methods + 1
                elif name == b"access-control-request-headers":
                    request_headers.append(value)
            if methods:
                answer = self._preflight(allowed, request_method, methods, request_headers)
                note[NOTE] = PREFLIGHT
                return answer
        note[NOTE] = allowed
        return None

    def _preflight(self, allowed: bytes, method: bytes, methods: int, requested: list[bytes]) -> Answer:
        if methods > 1:
            raise CorsForbidden("the preflight has more than one Access-Control-Request-Method header")
        if method not in self.methods:
            allowed_methods = ", ".join(sorted(each.decode() for each in self.methods))
            raise CorsForbidden(f"the method {_shown(method)} is not allowed here (allowed: {allowed_methods})")
        headers: Headers = [(ALLOW_ORIGIN, allowed), *self.preflight_headers]
        names = [name.strip(b" \t").lower() for value in requested for name in value.split(b",")]
        names = [name for name in names if name]
        for name in names:
            if not _TOKEN.fullmatch(name):
                raise CorsForbidden(f"Access-Control-Request-Headers names {_shown(name)}, which is not a header name")
            if not self.any_header and name not in self.allowed_headers:
                raise CorsForbidden(f"the request header {_shown(name)} is not allowed here")
        if self.any_header and names:
            headers.append((b"access-control-allow-headers", b", ".join(dict.fromkeys(names))))
        return Answer(204, headers)

    def response(self, exchange: Exchange, headers: Headers) -> None:
        context = exchange.context
        decision = context.get(NOTE) if context is not None else None
        if decision is None:
            decision = self._decide(exchange.headers)
        if decision is NO_ORIGIN or decision is PREFLIGHT:
            return
        names = dict(headers)  # built in C: the two questions below cost no Python loop when the answer is no
        if b"vary" in names:
            add_vary_origin(headers, names)
        else:
            headers.append(VARY_ORIGIN)
        if not isinstance(decision, bytes):
            return  # forbidden: the 403 says why, and no Access-Control-* lets a script read it
        if not _CORS_ANSWER_NAMES.isdisjoint(names):
            headers[:] = [(name, value) for name, value in headers if name not in _CORS_ANSWER_NAMES]
        headers.append((ALLOW_ORIGIN, decision))
        headers.extend(self.answer_headers)


@register("cors")
def compile_cors(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """`config` is configdoc's effective cors config (every default filled in)."""
    return Cors(config)
