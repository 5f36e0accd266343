"""`jwt` (ARCHITECTURE §11): authenticate by a signed JSON Web Token (RFC 7519) in
`Authorization: Bearer <token>` (RFC 6750 §2.1), verified with PyJWT (phase LATE, priority 210: after
`key_auth`, before `basic_auth`; see authentication.py for how they share the phase).

Only the request head counts (trailers never reach the app); an `Authorization` of another scheme
(`Basic`: basic_auth's) is not a token and is left alone. Which key verifies a token:

- the consumers' `jwt` credentials, chosen by the token's `iss` (read before the signature is checked,
  to pick the key; the verified payload is the same bytes): the token's `alg` must be the
  credential's algorithm, the one PyJWT is allowed (`algorithms=[credential.algorithm]`), so `none`
  and an RS256 → HS256 switch (the public key used as an HMAC secret) are refused; the key objects
  are prepared once per snapshot (dataplane/consumers.py), PyJWT refuses a PEM key as an HMAC secret;
- else, with `jwks_url`, the provider's keys (jwks.py), chosen by the token's `kid`: the `alg` must be
  one the key's type allows (never an HMAC); `consumer_claim` names the claim holding a consumer's
  username, and a token without a match goes as the endpoint's `anonymous` consumer if it names one,
  else as a caller without a consumer, either way with `X-Anonymous-Consumer: true` and its claims
  kept for later plugins (authentication.Identity.claims);
- else: refused.

A token that verified is remembered (by its sha256, never the token itself; only tokens up to
CACHEABLE_TOKEN bytes, at most CACHE_ENTRIES per plugin instance, the oldest dropped first) until
its `exp` (plus `leeway`) or CACHE_SECONDS after it verified, whichever comes first: the same token
again skips the parse and the signature check, which cost more than all the rest of a request (an
RS256 verify alone is ~20 µs). The same bytes verified under the same configuration (a snapshot
compiles a new instance, with an empty cache) and the same JWKS key set (a refreshed set, even an
identical one, is another and misses) give the same answer until `exp`, which the entry keeps; a
token that changes by one byte has another digest. Envoy's jwt_authn does the same
(`jwt_cache_config`).

`exp` and `nbf` are checked whenever present, with `leeway` seconds of clock skew; `claims_to_verify`
makes them required. `issuers`, when set, lists the accepted `iss`; `audiences`, when set, the
accepted `aud` (one must match, and a token without `aud` is refused).

Accepted: `X-Credential-Identifier` is the token's `iss`. Every refusal is 401 `invalid_credentials`
with `WWW-Authenticate: Bearer realm="gateway", error="invalid_token"` (RFC 6750 §3.1;
`invalid_request` for two `Authorization` headers), and the gate's 401 `unauthorized` carries
`Bearer realm="gateway"`. A JWKS that cannot be fetched, with no keys cached, is 503
`auth_unavailable`. The token never appears in an answer, the access log's `detail` or a log line
(the detail says which check failed). `mode: report` lets a refused request through as nobody;
`gateway_policy_decisions_total{plugin="jwt"}` counts `allow`, `deny` and `would_deny`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jwt

from ..consumers import Consumer, JwtCredential
from ..errors import AuthUnavailable
from ..exchange import Exchange
from . import Answer, Plugin, PluginContext, register
from .authentication import AuthPlugin, Identity, authorization
from .jwks import JwksCache, JwksUnavailable, cache_for

CHALLENGE = b'Bearer realm="gateway"'
INVALID_TOKEN = b'Bearer realm="gateway", error="invalid_token"'
INVALID_REQUEST = b'Bearer realm="gateway", error="invalid_request"'
MAX_TOKEN = 16 * 1024  # bytes: far beyond any real token, well inside the header block's limit
# A JWS in compact serialization: three base64url parts (RFC 7515 §7.1). Anything else is refused
# before PyJWT sees it: NUL bytes, non-ASCII, a JWE's five parts.
_COMPACT = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# An `iss` the gateway can name in X-Credential-Identifier (configdoc's rule for credential issuers):
# a provider-signed token's iss is still never written into a header with a CR, LF or NUL in it.
_ISSUER = re.compile(r"[!-~]{1,512}")
CACHE_ENTRIES = 4096  # verified tokens remembered per plugin instance
CACHE_SECONDS = 300.0  # the longest a verified token is remembered (its exp may come sooner)
CACHEABLE_TOKEN = 8192  # bytes: longer tokens are verified every time (bounds the cache's memory)


@dataclass(frozen=True, slots=True)
class Verified:
    """A token that verified: who it names, until when that holds, and the JWKS key set (None: a
    credential's key, fixed for the plugin instance) that verified it."""

    who: Identity
    until: float  # time.time() past which the token must be checked again
    keys: object | None


class JwtAuth(AuthPlugin):
    name: ClassVar[str] = "jwt"
    priority: ClassVar[int] = 210
    awaits: ClassVar[bool] = True  # a JWKS may have to be fetched
    challenge = CHALLENGE

    def __init__(
        self,
        by_issuer: Mapping[str, JwtCredential],
        *,
        required: list[str],
        leeway: int,
        issuers: frozenset[str],
        audiences: list[str],
        jwks: JwksCache | None,
        consumer_claim: str | None,
        consumers: Mapping[str, Consumer],
        anonymous: Consumer | None,
        report: bool,
    ) -> None:
        super().__init__(report=report)
        self.by_issuer = by_issuer
        self.options: dict[str, Any] = {"require": required, "verify_aud": bool(audiences)}
        self.leeway = leeway
        self.issuers = issuers
        self.audiences = audiences or None
        self.jwks = jwks
        self.consumer_claim = consumer_claim
        self.consumers = consumers
        self.anonymous = anonymous
        self.verified: dict[bytes, Verified] = {}  # sha256 of a token → what it verified as

    async def access_async(self, exchange: Exchange) -> Answer | None:
        if exchange.caller is not None:
            return None
        raw, count = authorization(exchange.headers, b"bearer")
        if raw is None:
            return None
        if count > 1:
            self.refuse(
                exchange,
                "send one Authorization header",
                f"Authorization was sent {count} times",
                challenge=INVALID_REQUEST,
            )
            return None
        if len(raw) > MAX_TOKEN:
            return self.invalid(exchange, "the token is malformed", f"the token is over {MAX_TOKEN} bytes")
        digest = hashlib.sha256(raw).digest() if len(raw) <= CACHEABLE_TOKEN else None
        if digest is not None:
            known = self.verified.get(digest)
            if known is not None:
                jwks = self.jwks
                if time.time() < known.until and (known.keys is None or (jwks is not None and known.keys is jwks.keys)):
                    if jwks is not None and known.keys is not None:
                        jwks.touch()
                    self.accept(exchange, known.who)
                    return None
                self.verified.pop(digest, None)
        if not _COMPACT.fullmatch(raw):
            return self.invalid(exchange, "the token is malformed", "the token is not a compact JWS")
        token = raw.decode("ascii")
        try:
            # One parse for both (the header's alg and kid, the payload's iss); the signature is
            # checked below with the key these select.
            parsed = jwt.decode_complete(token, options={"verify_signature": False})
            header, unverified = parsed["header"], parsed["payload"]
        except (jwt.PyJWTError, ValueError, TypeError):
            return self.invalid(exchange, "the token is malformed", "the token's header or payload does not decode")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            return self.invalid(exchange, "the token has no issuer", "the token has no iss")
        if not _ISSUER.fullmatch(issuer):
            return self.invalid(exchange, "the token's issuer is not known", "iss is not visible ASCII")
        if self.issuers and issuer not in self.issuers:
            return self.invalid(exchange, "the token's issuer is not accepted here", "iss is not in issuers")
        algorithm = header.get("alg")
        credential = self.by_issuer.get(issuer)
        key: Any
        if credential is not None:
            key, algorithm = credential.verifier, credential.algorithm
        elif self.jwks is not None:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                return self.invalid(exchange, "the token is malformed", "kid is not a string")
            try:
                signing = await self.jwks.key_for(kid)
            except JwksUnavailable as error:
                return self.unavailable(exchange, str(error))
            if signing is None:
                return self.invalid(exchange, "the token's key is not known", "no key of the JWKS has the token's kid")
            if algorithm not in signing.algorithms:
                return self.invalid(
                    exchange, "the token's algorithm is not its key's", "alg is not one the JWKS key allows"
                )
            key = signing.key
        else:
            return self.invalid(exchange, "the token's issuer is not known", "no credential has the token's iss")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options=self.options,
                audience=self.audiences,
                leeway=self.leeway,
            )
        except jwt.InvalidAlgorithmError:
            return self.invalid(exchange, "the token's algorithm is not its key's", "alg is not the credential's")
        except jwt.ExpiredSignatureError:
            return self.invalid(exchange, "the token has expired", "exp is past")
        except jwt.ImmatureSignatureError:
            return self.invalid(exchange, "the token is not valid yet", "nbf or iat is in the future")
        except jwt.MissingRequiredClaimError as error:
            return self.invalid(exchange, f"the token has no {error.claim} claim", f"no {error.claim} claim")
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            return self.invalid(exchange, "the token's audience is not accepted here", "aud is not in audiences")
        except jwt.InvalidSignatureError:
            return self.invalid(exchange, "the token's signature does not verify", "the signature does not verify")
        except (jwt.PyJWTError, ValueError, TypeError):
            return self.invalid(exchange, "the token is malformed", "a claim does not decode")
        if credential is not None:
            who = Identity(credential.consumer, credential=issuer, claims=claims)
        else:
            consumer = None
            if self.consumer_claim is not None:
                name = claims.get(self.consumer_claim)
                consumer = self.consumers.get(name) if isinstance(name, str) else None
            if consumer is not None:
                who = Identity(consumer, credential=issuer, claims=claims)
            else:
                who = Identity(self.anonymous, credential=issuer, anonymous=True, claims=claims)
        if digest is not None:
            self.remember(digest, who, claims, None if credential is not None or self.jwks is None else self.jwks.keys)
        self.accept(exchange, who)
        return None

    def remember(self, digest: bytes, who: Identity, claims: Mapping[str, Any], keys: object | None) -> None:
        """Keep a verified token's answer until its exp (+ leeway) or CACHE_SECONDS from now."""
        until = time.time() + CACHE_SECONDS
        expires = claims.get("exp")
        if expires is not None:
            try:
                until = min(until, float(expires) + self.leeway)
            except (TypeError, ValueError, OverflowError):
                return  # PyJWT accepted it as an integer; anything else is not worth remembering
        verified = self.verified
        if len(verified) >= CACHE_ENTRIES:
            del verified[next(iter(verified))]  # the oldest entry (dicts keep insertion order)
        verified[digest] = Verified(who, until, keys)

    def invalid(self, exchange: Exchange, message: str, detail: str) -> Answer | None:
        self.refuse(exchange, message, detail, challenge=INVALID_TOKEN)
        return None

    def unavailable(self, exchange: Exchange, detail: str) -> Answer | None:
        """The provider's keys cannot be had: 503 `auth_unavailable` (report mode: `would_deny`)."""
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"jwt (report mode) would refuse: {detail}"
            return None
        exchange.decide(self.name, "deny")
        raise AuthUnavailable(
            "the identity provider's keys are unavailable; retry shortly",
            headers=[(b"retry-after", b"2")],
            detail=f"jwt: {detail}",
        )


def _prepared(credential: JwtCredential) -> JwtCredential:
    if credential.verifier is not None:
        return credential
    verifier = jwt.get_algorithm_by_name(credential.algorithm).prepare_key(credential.key)
    return JwtCredential(credential.consumer, credential.issuer, credential.algorithm, credential.key, verifier)


@register("jwt")
def compile_jwt(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (claims_to_verify, leeway, issuers, audiences, jwks_url,
    consumer_claim, anonymous, mode, enabled) → the plugin."""
    consumers = context.consumers
    anonymous = config["anonymous"]
    return JwtAuth(
        {issuer: _prepared(credential) for issuer, credential in consumers.jwt_by_issuer.items()},
        required=list(config["claims_to_verify"]),
        leeway=config["leeway"],
        issuers=frozenset(config["issuers"]),
        audiences=list(config["audiences"]),
        jwks=cache_for(config["jwks_url"]) if config["jwks_url"] else None,
        consumer_claim=config["consumer_claim"],
        consumers=consumers.by_username,
        anonymous=consumers.by_username.get(anonymous) if anonymous is not None else None,
        report=config["mode"] == "report",
    )
