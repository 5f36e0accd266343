"""The signing keys of an OIDC provider (`jwt.jwks_url`, ARCHITECTURE §11), fetched off the request
path and cached per worker process.

- One `JwksCache` per URL per process (`cache_for`), shared by every endpoint and every snapshot that
  names it: a new snapshot keeps the keys it already has.
- The first request that needs the keys waits for the first fetch (there is nothing else to verify
  with); from then on a background task refreshes them every `REFRESH_SECONDS` (until no request
  has asked for `IDLE_SECONDS`), and a failed refresh keeps the keys it had (logged), so a
  provider's outage does not lock callers out.
- A token whose `kid` is not among the keys makes one refetch (the provider rotated its keys), at
  most once per `REFETCH_SECONDS`, so a flood of made-up `kid`s costs the provider one request per
  30 s, not one per token.
- Fetches are single-flight: concurrent requests wait for the same one.
- Only asymmetric signing keys are kept (RSA, EC P-256/P-384, Ed25519/Ed448): a JWKS never supplies
  an HMAC secret, and a key's algorithms are fixed by its type (and its `alg`, when it has one), so
  a token cannot choose how its key is used.

The HTTP client and the refresh task belong to the event loop that made them (tests run several
loops in one process: a cache used from a new loop starts afresh); `close_caches` ends them on
shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from . import on_shutdown

logger = logging.getLogger("dataplane.plugins.jwks")

REFRESH_SECONDS = 300.0
REFETCH_SECONDS = 30.0
IDLE_SECONDS = 3600.0  # a URL no request asked about for this long stops being refreshed
COLD_RETRY_SECONDS = 2.0  # with no keys at all, a failed fetch is retried no sooner than this
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1 << 20  # a provider's key set is a few KiB; more is not a key set
MAX_KEYS = 100

# What a key of each type may verify (the spec's asymmetric algorithms, configdoc.consumers).
_BY_TYPE: Mapping[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512"}),
    "EC:P-256": frozenset({"ES256"}),
    "EC:P-384": frozenset({"ES384"}),
    "OKP:Ed25519": frozenset({"EdDSA"}),
    "OKP:Ed448": frozenset({"EdDSA"}),
}


class JwksUnavailable(Exception):
    """The provider's keys could not be fetched (and none are cached): the message is safe to log."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    algorithms: frozenset[str]
    key: Any  # the public key object PyJWT verifies with


def parse_jwks(body: bytes) -> dict[str | None, SigningKey]:
    """A JWKS document → its usable signing keys by `kid`; raises ValueError when it is no key set."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("the answer is not a JSON Web Key Set")
    keys: dict[str | None, SigningKey] = {}
    for entry in data["keys"][:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        allowed = _BY_TYPE.get(kty if kty == "RSA" else f"{kty}:{entry.get('crv')}")
        if allowed is None:  # oct (a shared secret), unknown types and curves: never used
            continue
        alg = entry.get("alg")
        if alg is not None:
            if alg not in allowed:
                continue
            allowed = frozenset({alg})
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            parsed = jwt.PyJWK(entry, algorithm=next(iter(sorted(allowed))))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        keys[kid] = SigningKey(kid, allowed, parsed.key)
    return keys


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        refresh: float = REFRESH_SECONDS,
        refetch: float = REFETCH_SECONDS,
        timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh = refresh
        self.refetch = refetch
        self.timeout = timeout
        self.clock = clock
        self.keys: dict[str | None, SigningKey] | None = None
        self.fetches = 0  # answers asked of the provider (for tests and the log)
        self._last_attempt = -float("inf")
        self._used = clock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._pending: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A loop of its own (a worker, or a test's): what belonged to another is unusable here.
            self._loop = loop
            self._client = None
            self._pending = None
            self._refresher = None

    async def key_for(self, kid: str | None) -> SigningKey | None:
        """The key a token with this `kid` names (None: no such key, even after a refetch);
        raises JwksUnavailable when there are no keys at all."""
        self._bind()
        self._used = self.clock()
        if self.keys is None:
            if self._pending is not None or self.clock() - self._last_attempt >= COLD_RETRY_SECONDS:
                await self._fetch_once()
            if self.keys is None:
                raise JwksUnavailable(f"the keys of {self.url} could not be fetched")
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        key = self._lookup(kid)
        if key is None and self.clock() - self._last_attempt >= self.refetch:
            await self._fetch_once()
            key = self._lookup(kid)
        return key

    def touch(self) -> None:
        """A request used the keys without asking for one (a remembered token): keep them refreshed."""
        self._used = self.clock()

    def _lookup(self, kid: str | None) -> SigningKey | None:
        keys = self.keys or {}
        if kid is None:
            # No kid: only a provider with a single key leaves no doubt which one is meant.
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    async def _fetch_once(self) -> None:
        """One fetch at a time: a caller arriving during one waits for it."""
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_task(self._fetch())
            self._pending.add_done_callback(self._fetched)
        await asyncio.shield(self._pending)

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._pending is task:
            self._pending = None

    async def _fetch(self) -> None:
        self._last_attempt = self.clock()
        self.fetches += 1
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("GET", self.url, headers={"accept": "application/json"}) as answer:
                    if answer.status_code != 200:
                        raise ValueError(f"the provider answered {answer.status_code}")
                    body = b""
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise ValueError(f"the answer is over {MAX_JWKS_BYTES} bytes")
            keys = parse_jwks(body)
        except (httpx.HTTPError, TimeoutError, ValueError, UnicodeDecodeError) as error:
            logger.warning("fetching the JWKS %s failed (keeping %s keys): %s", self.url, self._count(), error)
            return
        if not keys:
            logger.warning("the JWKS %s holds no usable signing key (keeping %s keys)", self.url, self._count())
            return
        self.keys = keys

    def _count(self) -> int:
        return len(self.keys) if self.keys is not None else 0

    async def _refresh_forever(self) -> None:
        # Until no request has asked for a while (the snapshots dropped the URL, or its endpoints went
        # quiet): the next request that needs the keys starts it again.
        while self.clock() - self._used < IDLE_SECONDS:
            await asyncio.sleep(self.refresh)
            await self._fetch_once()
        self._refresher = None

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


# One cache per URL per process; compile_jwt runs in the snapshot's thread, hence the lock.
_CACHES: dict[str, JwksCache] = {}
_LOCK = threading.Lock()


def cache_for(url: str) -> JwksCache:
    with _LOCK:
        cache = _CACHES.get(url)
        if cache is None:
            cache = _CACHES[url] = JwksCache(url)
        return cache


@on_shutdown
async def close_caches() -> None:
    for cache in list(_CACHES.values()):
        await cache.aclose()
