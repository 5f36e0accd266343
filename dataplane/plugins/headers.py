"""`request_headers` and `response_headers` (ARCHITECTURE §11): header rules, `remove`, then `set`
(every value of the name replaced by one), then `add` (a value beside those already there).

`request_headers` edits the request the upstream gets, after the gateway wrote its own headers
(`X-Forwarded-*`, `Via`, `X-Request-ID`, `Host`: configdoc refuses rules naming those, hop-by-hop ones
and `Host`). `response_headers` edits every answer the client gets: the upstream's, and the gateway's
own (errors such as 403 `ip_forbidden`, 502/503/504, a 404 `no_route` through the document's global
plugins, a plugin's answer), after the gateway's own response headers.

Names compare case-insensitively: the header lists here carry lower-case names (the server and the
transports lower-case what they receive), so rules are compiled to lower-case bytes, values to Latin-1
bytes (configdoc allows only visible ASCII, space, tab and obs-text), once per snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..exchange import Exchange
from ..types import Headers
from . import Phase, Plugin, PluginContext, register


class HeaderRules:
    """Compiled rules: the names to drop (`remove` and `set`'s), then the pairs to append (`set`'s,
    then `add`'s)."""

    __slots__ = ("append", "drop")

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.drop = frozenset(name.lower().encode("ascii") for name in (*config["remove"], *config["set"]))
        self.append = tuple(
            (name.lower().encode("ascii"), value.encode("latin-1"))
            for rules in (config["set"], config["add"])
            for name, value in rules.items()
        )

    def apply(self, headers: Headers) -> None:
        drop = self.drop
        # dict(headers) is built in C: when no header is to go (the usual case), no Python loop runs.
        if drop and not drop.isdisjoint(dict(headers)):
            headers[:] = [(name, value) for name, value in headers if name not in drop]
        headers.extend(self.append)


class RequestHeaders(Plugin):
    name: ClassVar[str] = "request_headers"
    phase: ClassVar[Phase] = Phase.LATE

    def __init__(self, rules: HeaderRules) -> None:
        self.rules = rules

    def request(self, exchange: Exchange, headers: Headers) -> None:
        self.rules.apply(headers)


class ResponseHeaders(Plugin):
    name: ClassVar[str] = "response_headers"
    phase: ClassVar[Phase] = Phase.LATE

    def __init__(self, rules: HeaderRules) -> None:
        self.rules = rules

    def response(self, exchange: Exchange, headers: Headers) -> None:
        self.rules.apply(headers)


@register("request_headers")
def compile_request_headers(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    return RequestHeaders(HeaderRules(config))


@register("response_headers")
def compile_response_headers(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    return ResponseHeaders(HeaderRules(config))
