"""The document's consumers, compiled once per snapshot for the authentication plugins (ARCHITECTURE §11).

Who calls the APIs (not the operators): each `Consumer` with the headers the upstream gets about it,
and the lookups the plugins make per request, each one dict access:

- `by_key_sha256`: the sha256 digest (32 bytes) of a presented API key → (consumer, key label). The
  key is hashed, never compared in clear; a dict lookup by digest gives away nothing a timing attack
  can use (the digest of a guess says nothing about the stored key's), which is the constant-time
  property §11 asks for without a scan over every key.
- `jwt_by_issuer`: a token's `iss` → its credential (algorithm pinned, key material resolved).
- `basic_by_username`: a basic-auth username → (consumer, `pbkdf2_sha256$…` hash).

Secrets are references in the document (`secret: {env: NAME}`), resolved here from the node's own
environment when the snapshot is applied: a variable that is not set refuses the snapshot, naming it,
and the node keeps serving its previous one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from configdoc.consumers import effective_consumers

from .types import Headers


class MissingSecret(ValueError):
    """A secret's environment variable is not set on this node (snapshot.SnapshotError says which)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Consumer:
    username: str
    custom_id: str | None
    groups: frozenset[str]
    # What the upstream is told about the caller (X-Consumer-Username, -Custom-ID, -Groups), encoded
    # once here; the request's own copies of these names are always removed first.
    upstream_headers: Headers = field(default_factory=list, compare=False)


@dataclass(frozen=True, slots=True)
class JwtCredential:
    consumer: Consumer
    issuer: str
    algorithm: str  # the only algorithm a token of this issuer may use (never `none`)
    # HS*: the secret's bytes (from the environment); RS*/ES*/EdDSA: the public key in PEM.
    key: bytes | str = field(repr=False)
    # The key as PyJWT verifies with it, prepared once per snapshot (a PEM parsed into a key object),
    # never per request; `None` only for a credential built by hand in a test (plugins/jwt_auth.py
    # prepares it then).
    verifier: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Consumers:
    by_username: Mapping[str, Consumer] = field(default_factory=dict)
    by_key_sha256: Mapping[bytes, tuple[Consumer, str]] = field(default_factory=dict)
    jwt_by_issuer: Mapping[str, JwtCredential] = field(default_factory=dict)
    basic_by_username: Mapping[str, tuple[Consumer, str]] = field(default_factory=dict)


NO_CONSUMERS = Consumers()


def _upstream_headers(username: str, custom_id: str | None, groups: frozenset[str]) -> Headers:
    headers: Headers = [(b"x-consumer-username", username.encode())]
    if custom_id is not None:
        headers.append((b"x-consumer-custom-id", custom_id.encode()))
    if groups:
        headers.append((b"x-consumer-groups", ", ".join(sorted(groups)).encode()))
    return headers


def compile_consumers(document: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Consumers:
    """A canonical (validated) document's consumers → the lookups; `environ` (default: this process's
    environment) resolves `{env: NAME}` secrets. Raises MissingSecret listing every unset variable."""
    if not document.get("consumers"):
        return NO_CONSUMERS
    env = os.environ if environ is None else environ
    by_username: dict[str, Consumer] = {}
    by_key: dict[bytes, tuple[Consumer, str]] = {}
    by_issuer: dict[str, JwtCredential] = {}
    by_basic: dict[str, tuple[Consumer, str]] = {}
    problems: list[str] = []
    for username, spec in effective_consumers(document).items():
        groups = frozenset(spec["groups"])
        consumer = Consumer(username, spec["custom_id"], groups, _upstream_headers(username, spec["custom_id"], groups))
        by_username[username] = consumer
        for credential in spec["key_auth"]:
            by_key[bytes.fromhex(credential["key_sha256"])] = (consumer, credential["label"])
        for credential in spec["jwt"]:
            key: bytes | str
            if credential["secret"] is not None:
                name = credential["secret"]["env"]
                value = env.get(name)
                if value is None:
                    problems.append(
                        f"consumers[{username}].jwt[{credential['issuer']}].secret: the environment variable"
                        f" {name} is not set on this data plane"
                    )
                    continue
                key = value.encode()
            else:
                key = credential["public_key"]
            algorithm = credential["algorithm"]
            try:
                verifier = jwt.get_algorithm_by_name(algorithm).prepare_key(key)
            except (jwt.InvalidKeyError, ValueError, TypeError):
                # PyJWT refuses an HMAC secret that is a PEM key: an RS/ES key is never an HS secret.
                problems.append(
                    f"consumers[{username}].jwt[{credential['issuer']}]: the key is not usable for {algorithm}"
                )
                continue
            by_issuer[credential["issuer"]] = JwtCredential(consumer, credential["issuer"], algorithm, key, verifier)
        for credential in spec["basic_auth"]:
            by_basic[credential["username"]] = (consumer, credential["password_hash"])
    if problems:
        raise MissingSecret(problems)
    return Consumers(by_username, by_key, by_issuer, by_basic)
