"""What the authentication plugins share (ARCHITECTURE §11): who the caller is, the gate that refuses a
request with no credential at all, and the headers the upstream gets about the caller.

The authentication phase (`key_auth`, `jwt`, `basic_auth`, `forward_auth`; LATE, priorities 200-230,
in that order) works as "the first credential present decides":

- each plugin (an `AuthPlugin`) first looks whether an earlier one already named the caller
  (`exchange.caller`, set to None by Exchange.use_chain): then it does nothing;
- else it looks for its own credential; none → it does nothing either; one that checks out →
  `accept()` (the caller is known from here on); one that does not → `refuse()`: 401
  `invalid_credentials` with its `WWW-Authenticate` challenge (a wrong credential is never
  passed over to the next scheme or to `anonymous`: a client that sent one meant it);
- the `Gate` (added by `compile_chain` to every chain with an authentication plugin, priority 290,
  before `acl`) then lets through a request whose caller is known, makes one with no credential at all
  act as the `anonymous` consumer, or refuses it with 401 `unauthorized` and a challenge per scheme.

`mode: report` on a plugin turns its refusals into `would_deny` decisions (logged in `detail` and
counted); the gate follows report mode only when every authentication plugin of the endpoint is in
it. No-credential decisions are counted as `plugin="authentication"`
(`gateway_policy_decisions_total{decision=deny|would_deny|anonymous}`).

The upstream hears who called through the gate's request hook: `X-Consumer-Username`,
`-Custom-ID`, `-Groups`, `X-Credential-Identifier` (key label, jwt `iss`, basic username) and
`X-Anonymous-Consumer: true`; the client's own copies of these names are removed on every endpoint
by forwarding.Forwarding.upstream_headers (CALLER_IDENTITY).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from configdoc.plugins import AUTHENTICATION_PLUGINS, effective_anonymous

from ..consumers import Consumer
from ..errors import InvalidCredentials, Unauthorized
from ..exchange import Exchange
from ..types import Headers
from . import Answer, Phase, Plugin, PluginContext

_ANONYMOUS_HEADER = (b"x-anonymous-consumer", b"true")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the caller is, once an authentication plugin (or `anonymous`) said so."""

    consumer: Consumer | None  # None: authenticated without a consumer of the document (forward_auth)
    credential: str = ""  # X-Credential-Identifier: the key's label, the token's iss, the basic username
    anonymous: bool = False
    claims: Mapping[str, Any] | None = field(default=None, compare=False)  # a verified JWT's payload
    # What the upstream is told about the caller (§11 "Upstream sees"), made once with the identity:
    # key_auth and basic_auth keep one Identity per credential, so a request only extends a list.
    headers: Headers = field(init=False, default_factory=list, compare=False, repr=False)
    username: str = field(init=False, default="", compare=False, repr=False)  # exchange.consumer's value

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", identity_headers(self))
        object.__setattr__(self, "username", self.consumer.username if self.consumer is not None else "")


def authenticate(exchange: Exchange, who: Identity) -> None:
    """Record the caller: for the gate, `acl`, `rate_limit` (by consumer), the upstream headers and
    the access log / traffic by consumer (`exchange.consumer`)."""
    exchange.caller = who
    exchange.consumer = who.username


def identity_headers(who: Identity) -> Headers:
    """What the upstream is told about the caller (§11 "Upstream sees")."""
    headers: Headers = list(who.consumer.upstream_headers) if who.consumer is not None else []
    if who.credential:
        headers.append((b"x-credential-identifier", who.credential.encode("utf-8", "surrogateescape")))
    if who.anonymous:
        headers.append(_ANONYMOUS_HEADER)
    return headers


def authorization(headers: Headers, scheme: bytes) -> tuple[bytes | None, int]:
    """The credential of the request's `Authorization: <scheme> <credential>` (`scheme` lower-case; the
    request's compares ignoring case; None: no such header) and how many `Authorization` headers the
    request has (jwt and basic_auth refuse more than one, whatever they hold)."""
    credential: bytes | None = None
    count = 0
    for name, value in headers:
        if name == b"authorization":
            count += 1
            found, _, rest = value.strip(b" \t").partition(b" ")
            if found.lower() == scheme:
                credential = rest.strip(b" \t")
    return credential, count


class AuthPlugin(Plugin):
    """The base of the four authentication plugins: `challenge` is the `WWW-Authenticate` value a
    refusal carries (None: the plugin's refusals carry none, as forward_auth's, which return the auth
    service's own answer)."""

    phase: ClassVar[Phase] = Phase.LATE
    challenge: bytes | None = None

    def __init__(self, *, report: bool) -> None:
        self.report = report

    def accept(self, exchange: Exchange, who: Identity) -> None:
        # Exchange.decide and authenticate() in one call: this runs once per authenticated request.
        key = (exchange.endpoint_key or "", self.name, "allow")
        decisions = exchange.decisions
        decisions[key] = decisions.get(key, 0) + 1
        exchange.caller = who
        exchange.consumer = who.username

    def refuse(self, exchange: Exchange, message: str, detail: str, *, challenge: bytes | None = None) -> None:
        """A credential was presented and is wrong: raise 401 `invalid_credentials`, or in report mode
        count `would_deny`, note it for the access log and let the request go on (as nobody)."""
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"{self.name} (report mode) would refuse: {detail}"
            return
        exchange.decide(self.name, "deny")
        value = challenge if challenge is not None else self.challenge
        headers: Headers = [(b"www-authenticate", value)] if value is not None else []
        raise InvalidCredentials(message, headers=headers, detail=f"{self.name}: {detail}")


class Gate(Plugin):
    """Ends the authentication phase: caller known → on; no credential → `anonymous` or 401."""

    name: ClassVar[str] = "authentication"
    phase: ClassVar[Phase] = Phase.LATE
    priority: ClassVar[int] = 290

    def __init__(self, challenges: Headers, anonymous: Consumer | None, *, report: bool) -> None:
        self.challenges = challenges
        self.anonymous = None if anonymous is None else Identity(anonymous, anonymous=True)
        self.report = report

    def access(self, exchange: Exchange) -> Answer | None:
        if exchange.caller is not None:
            return None
        if self.anonymous is not None:
            exchange.decide(self.name, "anonymous")
            authenticate(exchange, self.anonymous)
            return None
        if self.report:
            exchange.decide(self.name, "would_deny")
            if not exchange.detail:
                exchange.detail = "authentication (report mode) would refuse: no credential"
            return None
        exchange.decide(self.name, "deny")
        raise Unauthorized("this endpoint needs a credential", headers=list(self.challenges))

    def request(self, exchange: Exchange, headers: Headers) -> None:
        who = exchange.caller
        if who is not None:
            headers += who.headers


def gate_for(plugins: list[Plugin], effective: Mapping[str, Mapping[str, Any]], context: PluginContext) -> Gate | None:
    """The gate of a chain with authentication plugins (compile_chain), else None. `effective` is the
    endpoint's effective plugins (configdoc), for its `anonymous`; validation made sure it names a
    consumer of the document."""
    # In the order the plugins run (key_auth, jwt, basic_auth, forward_auth), so are the challenges.
    authentication = sorted(
        (plugin for plugin in plugins if plugin.name in AUTHENTICATION_PLUGINS), key=lambda plugin: plugin.priority
    )
    if not authentication:
        return None
    challenges: Headers = []
    for plugin in authentication:
        challenge = plugin.challenge if isinstance(plugin, AuthPlugin) else None
        if challenge is not None and (b"www-authenticate", challenge) not in challenges:
            challenges.append((b"www-authenticate", challenge))
    name = effective_anonymous(effective)
    anonymous = context.consumers.by_username.get(name) if name is not None else None
    report = all(getattr(plugin, "report", False) for plugin in authentication)
    return Gate(challenges, anonymous, report=report)
