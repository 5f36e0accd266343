"""`basic_auth` (ARCHITECTURE §11): authenticate by HTTP Basic username and password (RFC 7617)
against the consumers' PBKDF2 hashes (phase LATE, priority 220: after `key_auth` and `jwt`; see
authentication.py for how they share the phase).

The credential is an `Authorization: Basic <base64(username:password)>` header; the scheme name
compares case-insensitively, and an `Authorization` of another scheme (`Bearer`: jwt's) is not a
basic credential and is left alone. What the plugin decides:

- no basic `Authorization`: nothing to do here (the gate decides: `anonymous`, or 401
  `unauthorized`);
- the username is a consumer's basic-auth username and the password matches its hash: accepted,
  `X-Credential-Identifier` is the basic username;
- anything else is 401 `invalid_credentials` with `WWW-Authenticate: Basic realm="<realm>",
  charset="UTF-8"` (RFC 7617 §2.1): a wrong password, an unknown username, base64 that does not
  decode, no `:`, bytes that are not UTF-8, or `Authorization` sent more than once alongside a
  basic one (the gateway never picks one: the upstream might read another).

Cost and timing. Verifying a PBKDF2 hash takes its iterations (a million: a good part of a second), so
it runs on a small thread pool of its own (hashlib releases the GIL), never on the event loop, and
never on the default executor the resolver shares. A successful verification is remembered for a minute
per worker: the cache holds a fingerprint, BLAKE2b keyed with a process-random key (RFC 7693's MAC
mode) over `stored hash NUL username NUL password` (the password itself is never kept), at most 10,000
entries, the oldest evicted first; only successes are cached, so a flood of wrong passwords costs its
hashes but cannot grow memory. The stored hash is part of the fingerprint, so a consumer whose hash
changes in a new snapshot is verified afresh. Concurrent requests with the same credential share one
verification, and one used in the last 15 s of its minute is verified again in the background (answered
from the cache meanwhile), so steady traffic never waits for a PBKDF2. An unknown username costs the
same work, verified against a dummy hash with the stored hashes' highest iteration count, so the
answer's timing does not say which usernames exist. At most `MAX_WAITING` verifications wait for the
pool per worker: beyond that a request that needs a fresh verification gets 503 `auth_unavailable` with
`Retry-After: 1` at once, so a flood of wrong passwords queues no more than a few seconds of hashing
ahead of a real login (credentials verified in the last minute are answered from the cache and never
wait).

`hide_credentials: true` removes a basic `Authorization` header from the upstream request (another
scheme's stays, for its own plugin). `mode: report` lets a refused request through as nobody;
`gateway_policy_decisions_total{plugin="basic_auth"}` counts `allow`, `deny` and `would_deny`. The
password never appears in an answer, the access log's `detail` or any log line.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from configdoc.consumers import MIN_PBKDF2_ITERATIONS, password_matches

from ..consumers import Consumer
from ..errors import AuthUnavailable
from ..exchange import Exchange
from ..types import Headers
from . import Answer, Plugin, PluginContext, Wait, register
from .authentication import AuthPlugin, Identity, authorization

CACHE_SECONDS = 60.0
# A credential used in the last REFRESH_SECONDS of its minute is verified again in the background
# (BasicAuth._refresh): under steady traffic the minute's PBKDF2 never holds a request up.
REFRESH_SECONDS = 15.0
CACHE_ENTRIES = 10_000
VERIFY_THREADS = 2  # PBKDF2 is CPU work: more threads than cores would only queue in the kernel
MAX_WAITING = 32  # PBKDF2 verifications queued or running per worker before 503 auth_unavailable
DEFAULT_ITERATIONS = 1_000_000  # the dummy hash's when no consumer has a basic credential (Django's)


class VerifiedCache:
    """Fingerprints of credentials verified lately (a minute), bounded, oldest evicted first; touched
    only from the event loop's thread. `clock` is injected so tests drive time."""

    def __init__(
        self,
        *,
        seconds: float = CACHE_SECONDS,
        entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.entries = entries
        self.clock = clock
        self.key = os.urandom(32)  # per process: a fingerprint means nothing outside it
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def fingerprint(self, stored_hash: str, username: str, password: str) -> bytes:
        message = "\0".join((stored_hash, username, password)).encode("utf-8", "surrogatepass")
        # Keyed BLAKE2b is a MAC by design (no HMAC construction needed) and Python's own C: a few
        # thousand instructions, where OpenSSL 3's one-shot HMAC-SHA256 took ~12,000 (name lookups,
        # locks, four compressions) and was the largest single cost of a cached basic_auth request.
        return hashlib.blake2b(message, key=self.key, digest_size=32).digest()

    def __contains__(self, fingerprint: bytes) -> bool:
        return self.left(fingerprint) > 0

    def left(self, fingerprint: bytes) -> float:
        """Seconds until this fingerprint must be verified again; 0: not verified (or no longer)."""
        expiry = self._expiry.get(fingerprint)
        if expiry is None:
            return 0.0
        left = expiry - self.clock()
        if left <= 0:
            del self._expiry[fingerprint]
            return 0.0
        return left

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, fingerprint: bytes) -> None:
        expiry = self._expiry
        expiry.pop(fingerprint, None)  # re-added: it goes to the young end
        expiry[fingerprint] = self.clock() + self.seconds
        while len(expiry) > self.entries:
            expiry.popitem(last=False)


# One cache and one pool per worker process, shared by every endpoint's basic_auth: a credential is
# verified once a minute whichever endpoint it calls. Made on first use (after a fork, in the worker).
CACHE = VerifiedCache()
_POOL: ThreadPoolExecutor | None = None
_waiting = 0  # verifications submitted to the pool and not finished (this worker's)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="basic-auth")
    return _POOL


class Malformed(ValueError):
    """An `Authorization: Basic` value that is no username:password (the message is safe to log)."""


def parse_basic(token: bytes) -> tuple[str, str]:
    """`base64(username:password)` → (username, password); raises Malformed."""
    try:
        # strict_mode: only the base64 alphabet, padding only at the end (what b64decode's validate=True
        # checks with a regular expression first, here in one C call).
        decoded = binascii.a2b_base64(token.strip(b" \t"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise Malformed("the credential is not base64") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the credential is not UTF-8") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise Malformed("the credential has no username:password")
    return username, password


class BasicAuth(AuthPlugin):
    name: ClassVar[str] = "basic_auth"
    priority: ClassVar[int] = 220
    awaits: ClassVar[bool] = True
    tries_sync: ClassVar[bool] = True  # access() decides a cached credential without waiting

    def __init__(
        self,
        by_username: Mapping[str, tuple[Consumer, str]],
        *,
        realm: str,
        hide: bool,
        report: bool,
        cache: VerifiedCache | None = None,
    ) -> None:
        super().__init__(report=report)
        self.by_username = by_username
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'.encode("ascii")
        self.hide = hide
        self.cache = cache if cache is not None else CACHE  # the worker's, unless a test gives its own
        iterations = max(
            (int(stored.split("$", 2)[1]) for _, stored in by_username.values()), default=DEFAULT_ITERATIONS
        )
        # Never matches (its digest is not one of a password): an unknown username's comparable work.
        self.dummy_hash = f"pbkdf2_sha256${max(iterations, MIN_PBKDF2_ITERATIONS)}${os.urandom(12).hex()}${'A' * 43}="
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._identities: dict[str, Identity] = {}
        self.max_waiting = MAX_WAITING  # (tests lower it)

    def access(self, exchange: Exchange) -> Answer | Wait | None:
        """Decided here, without waiting, unless the password needs its PBKDF2 check: a credential
        verified in the last minute (the cache), none at all, or a malformed one. Otherwise `Wait`:
        the phase goes on once the pool answered (`_decide`)."""
        if exchange.caller is not None:
            return None
        token, count = authorization(exchange.scope["headers"], b"basic")
        if token is None:
            return None
        if count > 1:
            self.refuse(exchange, "send one Authorization header", f"Authorization was sent {count} times")
            return None
        try:
            username, password = parse_basic(token)
        except Malformed as malformed:
            self.refuse(exchange, "the basic credential is malformed", str(malformed))
            return None
        found = self.by_username.get(username)
        if found is not None:
            cache = self.cache
            fingerprint = cache.fingerprint(found[1], username, password)
            left = cache.left(fingerprint)
            if left > 0:  # verified in the last minute
                if left < REFRESH_SECONDS:
                    self._refresh(fingerprint, found[1], password)
                self.accept(exchange, self._identity(username, found[0]))
                return None
        return Wait(self._decide(exchange, found, username, password))

    async def _decide(
        self, exchange: Exchange, found: tuple[Consumer, str] | None, username: str, password: str
    ) -> Answer | None:
        stored = found[1] if found is not None else self.dummy_hash
        if not await self.verify(stored, username, password) or found is None:
            # An unknown username is not named in the detail either: the access log is read by people
            # who should not learn which usernames exist from a typo.
            self.refuse(exchange, "the username or password is not valid", "wrong username or password")
            return None
        self.accept(exchange, self._identity(username, found[0]))
        return None

    def _identity(self, username: str, consumer: Consumer) -> Identity:
        """The caller once the password checked out: one Identity per basic username of the snapshot."""
        who = self._identities.get(username)
        if who is None:
            who = self._identities[username] = Identity(consumer, credential=username)
        return who

    async def verify(self, stored: str, username: str, password: str) -> bool:
        """Whether `password` matches `stored`: from the cache, or one PBKDF2 on the pool (shared with
        the concurrent requests asking the same); only a success is cached."""
        cache = self.cache
        fingerprint = cache.fingerprint(stored, username, password)
        if fingerprint in cache:
            return True
        pending = self._pending.get(fingerprint)
        if pending is None:
            if _waiting >= self.max_waiting:
                raise AuthUnavailable(
                    "too many password checks are waiting; retry shortly",
                    headers=[(b"retry-after", b"1")],
                    detail=f"basic_auth: {_waiting} PBKDF2 verifications already waiting",
                )
            pending = self._submit(fingerprint, stored, password)
        matches = await asyncio.shield(pending)
        if matches and stored is not self.dummy_hash:
            cache.add(fingerprint)
        return matches

    def _refresh(self, fingerprint: bytes, stored: str, password: str) -> None:
        """Verify a cached credential again before its minute is up, on the pool, while the requests
        that carry it are answered from the cache: steady traffic never waits for a PBKDF2. Skipped
        when it is already under way or the pool has `max_waiting` queued (then the entry expires and
        the next request verifies it, as any fresh credential)."""
        if fingerprint in self._pending or _waiting >= self.max_waiting:
            return
        cache = self.cache

        def verified(done: asyncio.Future[bool]) -> None:
            if not done.cancelled() and done.exception() is None and done.result():
                cache.add(fingerprint)

        self._submit(fingerprint, stored, password).add_done_callback(verified)

    def _submit(self, fingerprint: bytes, stored: str, password: str) -> asyncio.Future[bool]:
        """One PBKDF2 verification on the pool, shared by whoever asks for the same fingerprint."""
        global _waiting
        _waiting += 1
        pending = asyncio.get_running_loop().run_in_executor(_pool(), password_matches, password, stored)
        self._pending[fingerprint] = pending
        pending.add_done_callback(lambda _: self._done(fingerprint))
        return pending

    def _done(self, fingerprint: bytes) -> None:
        global _waiting
        _waiting -= 1
        self._pending.pop(fingerprint, None)

    def uses(self, hook: str) -> bool:
        return hook != "request" or self.hide

    def request(self, exchange: Exchange, headers: Headers) -> None:
        if self.hide:
            headers[:] = [
                (name, value)
                for name, value in headers
                if name != b"authorization" or value.strip(b" \t").partition(b" ")[0].lower() != b"basic"
            ]


@register("basic_auth")
def compile_basic_auth(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (realm, hide_credentials, anonymous, mode, enabled) → the plugin;
    `anonymous` is the gate's (authentication.gate_for)."""
    return BasicAuth(
        context.consumers.basic_by_username,
        realm=config["realm"],
        hide=config["hide_credentials"],
        report=config["mode"] == "report",
    )
