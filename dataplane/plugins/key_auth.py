"""`key_auth` (ARCHITECTURE §11): authenticate by an API key sent in a header or a query parameter
(phase LATE, priority 200: the first of the authentication plugins; see authentication.py for how
they share the phase).

Where the key is looked for: the configured `key_names`, in the configured `in` locations.

- `header`: names compare case-insensitively (RFC 9110 §5.1), and only the request's head counts:
  a trailer field after a chunked body never does (the server keeps trailers out of the ASGI
  scope). A name spelt with `_` never counts as a header here (`api_key` is not `api-key`): the
  gateway drops such names before forwarding, because CGI-style backends read `_` as `-`, so a
  key name with `_` is only ever found in the query.
- `query`: parameter names compare exactly, after percent-decoding (and `+` as a space, as forms
  write it); the value is percent-decoded likewise.

What the plugin decides (the first credential present decides; never passed over to a later
scheme or to `anonymous`):

- no key anywhere: nothing to do here (the gate decides: `anonymous`, or 401 `unauthorized`);
- exactly one key, whose sha256 is a consumer's: accepted, `X-Credential-Identifier` is the
  key's label;
- a key no consumer has, an empty value (`apikey:` or `?apikey=`: a credential was presented, and
  it is wrong), or bytes that are not UTF-8: 401 `invalid_credentials` with
  `WWW-Authenticate: Key realm="gateway"`;
- the key sent more than once (two headers, two parameters, a header and a parameter), whatever
  the values: 401 `invalid_credentials`. The gateway never picks one, since the upstream might read
  another.

A key is looked up by its sha256 digest in one dict access (`Consumers.by_key_sha256`), never
compared in clear, which is the constant-time property §11 asks for. The key never appears in an
answer, the access log's `detail` or any log line.

`hide_credentials: true` removes every key header (by the configured names, whatever the request
was decided on) from the upstream request, and every key parameter from its query string (the rest
of the query goes as the client wrote it). `mode: report` lets a refused request through as nobody;
`gateway_policy_decisions_total{plugin="key_auth"}` counts `allow`, `deny` and `would_deny`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

from configdoc.consumers import key_digest

from ..consumers import Consumer
from ..exchange import UPSTREAM_QUERY, Exchange
from ..types import Headers
from . import Answer, Plugin, PluginContext, register
from .authentication import AuthPlugin, Identity

CHALLENGE = b'Key realm="gateway"'


def _decoded(raw: bytes) -> bytes:
    """A query component as forms write it: `+` is a space, `%XX` a byte."""
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    return unquote_to_bytes(raw) if b"%" in raw else raw


class KeyAuth(AuthPlugin):
    name: ClassVar[str] = "key_auth"
    priority: ClassVar[int] = 200
    challenge = CHALLENGE

    def __init__(
        self,
        by_digest: Mapping[bytes, tuple[Consumer, str]],
        header_names: frozenset[bytes],
        query_names: frozenset[bytes],
        *,
        hide: bool,
        report: bool,
    ) -> None:
        super().__init__(report=report)
        self.by_digest = by_digest
        self.header_names = header_names  # lower-case, none with `_`
        self.query_names = query_names  # exact, UTF-8
        self.hide = hide
        self._identities: dict[bytes, Identity] = {}

    def keys(self, exchange: Exchange) -> list[bytes]:
        """Every key value the request carries, in the head's headers and in the query."""
        found: list[bytes] = []
        if self.header_names:
            names = self.header_names
            for name, value in exchange.headers:
                if name in names:
                    found.append(value)
        if self.query_names:
            query: bytes = exchange.scope.get("query_string") or b""
            if query:
                names = self.query_names
                for pair in query.split(b"&"):
                    name, _, value = pair.partition(b"=")
                    if _decoded(name) in names:
                        found.append(_decoded(value))
        return found

    def access(self, exchange: Exchange) -> Answer | None:
        if self.query_names:
            if self.hide:
                self.hide_in_query(exchange)
            if exchange.caller is not None:
                return None
            keys = self.keys(exchange)
        else:  # keys() for headers only (the default), inline: this runs on every request of the endpoint
            if exchange.caller is not None:
                return None
            names = self.header_names
            keys = [value for name, value in exchange.scope["headers"] if name in names]
        if not keys:
            return None
        if len(keys) > 1:
            self.refuse(exchange, "send the API key once", f"the key was sent {len(keys)} times")
            return None
        key = keys[0]
        if not key:
            self.refuse(exchange, "the API key is empty", "an empty key")
            return None
        digest = key_digest(key)
        who = self._identities.get(digest)
        if who is None:
            found = self.by_digest.get(digest)
            if found is None:
                self.refuse(exchange, "the API key is not valid", "no consumer has this key")
                return None
            consumer, label = found
            # One per key of the snapshot at most (only a key that exists gets here), made on first use.
            who = self._identities[digest] = Identity(consumer, credential=label)
        self.accept(exchange, who)
        return None

    def hide_in_query(self, exchange: Exchange) -> None:
        """The query string without the key's parameters, for the upstream (exchange.UPSTREAM_QUERY)."""
        query: bytes = exchange.scope.get("query_string") or b""
        if not query:
            return
        pairs = query.split(b"&")
        kept = [pair for pair in pairs if _decoded(pair.partition(b"=")[0]) not in self.query_names]
        if len(kept) != len(pairs):
            exchange.note()[UPSTREAM_QUERY] = b"&".join(kept)

    def uses(self, hook: str) -> bool:
        return hook != "request" or (self.hide and bool(self.header_names))

    def request(self, exchange: Exchange, headers: Headers) -> None:
        if self.hide and self.header_names:
            names = self.header_names
            headers[:] = [(name, value) for name, value in headers if name not in names]


@register("key_auth")
def compile_key_auth(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (key_names, in, hide_credentials, anonymous, mode, enabled) → the
    plugin; `anonymous` is the gate's (authentication.gate_for)."""
    names: list[str] = config["key_names"]
    where = config["in"]
    header_names = (
        frozenset(name.lower().encode("ascii") for name in names if "_" not in name)
        if "header" in where
        else frozenset()
    )
    query_names = frozenset(name.encode("utf-8") for name in names) if "query" in where else frozenset()
    return KeyAuth(
        context.consumers.by_key_sha256,
        header_names,
        query_names,
        hide=config["hide_credentials"],
        report=config["mode"] == "report",
    )
