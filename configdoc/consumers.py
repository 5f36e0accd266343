"""Consumers: who calls the APIs, and the credentials they prove it with (ARCHITECTURE §11).

A `format_version: 2` document may list consumers at its top level:

    consumers:
      - username: mobile-app                 # ^[A-Za-z0-9_.@-]{1,64}$, unique
        custom_id: crm-1042                  # optional, unique when set; sent upstream
        groups: [partners]                   # for acl
        key_auth: [{key_sha256: "<64 hex>", label: 2026-q4}]
        jwt: [{issuer: mobile, algorithm: HS256, secret: {env: MOBILE_JWT_SECRET}},
              {issuer: partner-idp, algorithm: RS256, public_key: "-----BEGIN PUBLIC KEY-----…"}]
        basic_auth: [{username: mobile, password_hash: "pbkdf2_sha256$1000000$<salt>$<hash>"}]

Secrets never enter the document: a key is stored as its sha256, a password as a Django-style PBKDF2
hash, a symmetric JWT secret as a reference `{env: NAME}` that each data plane resolves from its own
environment (`secret_env_names` lists them, so a missing one can be named). A clear-text `key`,
`password` or `secret` is refused with what to write instead, and no message ever repeats a value that
might be a secret.

What identifies a consumer at request time is unique across all consumers: a key hash, a JWT issuer
(it selects the credential), a basic-auth username. Canonical form: consumers sorted by username,
credentials by label / issuer / username, groups sorted and de-duplicated, empty lists and an unset
custom_id dropped, public keys rewritten as SubjectPublicKeyInfo PEM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import operator
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .problems import Problem, child, item
from .schema import Field

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
USERNAME_HELP = "1-64 letters, digits and _.@-"
GROUP_RE = USERNAME_RE
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
# Sent upstream in X-Consumer-Custom-ID: visible ASCII and inner spaces only.
_HEADER_SAFE = re.compile(r"^[!-~](?:[ -~]*[!-~])?$")
_VISIBLE = re.compile(r"^[!-~]+$")
_LABEL = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
_SHA256_HEX = re.compile(r"^[0-9A-Fa-f]{64}$")
_PBKDF2 = re.compile(r"^pbkdf2_sha256\$(?P<iterations>[0-9]{1,10})\$(?P<salt>[^$]*)\$(?P<hash>[^$]*)$")
_SALT = re.compile(r"^[A-Za-z0-9./+=_-]{8,128}$")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
JWT_ALGORITHMS = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS

MAX_CONSUMERS = 100_000
MAX_CREDENTIALS = 16  # of each kind per consumer: enough to rotate, few enough to stay cheap
MAX_GROUPS = 64
MAX_PUBLIC_KEY = 16_384
MIN_PBKDF2_ITERATIONS = 100_000
# A data plane runs this many rounds to check a password: a bound keeps a document from making it burn
# seconds per request.
MAX_PBKDF2_ITERATIONS = 5_000_000
MIN_RSA_BITS = 2048


def _header_safe(value: Any) -> str | None:
    if not _HEADER_SAFE.match(value):
        return "must be visible ASCII characters (inner spaces allowed): it is sent upstream in a header"
    return None


def _issuer_problem(value: Any) -> str | None:
    if not _VISIBLE.match(value):
        return "must be visible ASCII characters without spaces (it is compared with the token's iss claim)"
    return None


def _env_name_problem(value: Any) -> str | None:
    # Not repeated: a secret written here by mistake must not end up in a log or an answer.
    if not ENV_NAME_RE.match(value):
        return (
            "must be an environment variable name (upper-case letters, digits and _, not starting with a digit); "
            "the secret itself goes in the data plane's environment"
        )
    return None


def _key_sha256_problem(value: Any) -> str | None:
    # The value is not repeated: a clear key pasted here must not end up in a log or an answer.
    if not _SHA256_HEX.match(value):
        return "must be the key's sha256 as 64 hexadecimal characters (the key itself is never stored)"
    return None


def password_hash_problem(value: Any) -> str | None:
    """Why `value` is not a usable `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` (Django's format),
    or None. The value is never repeated: it might be a password written in the wrong field."""
    if not isinstance(value, str):
        return "must be a string"
    match = _PBKDF2.match(value)
    if match is None:
        return (
            "must be a Django-style hash pbkdf2_sha256$<iterations>$<salt>$<base64 hash> "
            "(the password itself is never stored)"
        )
    iterations = int(match["iterations"])
    if not MIN_PBKDF2_ITERATIONS <= iterations <= MAX_PBKDF2_ITERATIONS:
        return f"iterations must be {MIN_PBKDF2_ITERATIONS}-{MAX_PBKDF2_ITERATIONS}, not {iterations}"
    if not _SALT.match(match["salt"]):
        return "the salt must be 8-128 characters of letters, digits and ./+=_-"
    try:
        digest = base64.b64decode(match["hash"], validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        return "the hash must be the base64 of 32 bytes (a PBKDF2-HMAC-SHA256 digest)"
    return None


def _public_key_problem(value: Any) -> str | None:
    return public_key_problem(value, None)


def public_key_problem(value: str, algorithm: str | None) -> str | None:
    """Why `value` is not a PEM public key (for `algorithm`, when given), or None."""
    try:
        key = serialization.load_pem_public_key(value.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        if "CERTIFICATE" in value:
            return "must be a PEM public key (-----BEGIN PUBLIC KEY-----), not a certificate"
        return "must be a PEM public key (-----BEGIN PUBLIC KEY----- … -----END PUBLIC KEY-----)"
    if algorithm is None:
        return None
    if algorithm.startswith("RS"):
        if not isinstance(key, rsa.RSAPublicKey):
            return f"{algorithm} needs an RSA public key"
        if key.key_size < MIN_RSA_BITS:
            return f"an RSA key must have at least {MIN_RSA_BITS} bits, not {key.key_size}"
    elif algorithm in ("ES256", "ES384"):
        curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}[algorithm]
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
            return f"{algorithm} needs an EC public key on {curve.name}"
    elif algorithm == "EdDSA" and not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA needs an Ed25519 or Ed448 public key"
    return None


def normalize_public_key(value: str) -> str:
    """A valid PEM public key as SubjectPublicKeyInfo PEM: one spelling per key."""
    key = serialization.load_pem_public_key(value.encode("ascii"))
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


SECRET_FIELDS: dict[str, Field] = {
    "env": Field(
        "str",
        max_length=128,
        check=_env_name_problem,
        help="the data plane's environment variable holding the secret: A-Z, 0-9 and _, not starting with a digit",
    ),
}

KEY_AUTH_CREDENTIAL_FIELDS: dict[str, Field] = {
    "key_sha256": Field(
        "str", max_length=64, check=_key_sha256_problem, help="the key's sha256, 64 hex (lower-cased); unique"
    ),
    "label": Field(
        "str",
        max_length=64,
        pattern=_LABEL,
        pattern_help="1-64 letters, digits and _.:@+-",
        help="names the key (X-Credential-Identifier); unique per consumer",
    ),
}

JWT_CREDENTIAL_FIELDS: dict[str, Field] = {
    "issuer": Field(
        "str", max_length=512, check=_issuer_problem, help="the tokens' iss; selects the credential; unique"
    ),
    "algorithm": Field("enum", choices=JWT_ALGORITHMS, help="the only alg accepted (never none)"),
    "secret": Field(
        "object",
        nullable=True,
        fields=SECRET_FIELDS,
        help="HS256/384/512 only: {env: NAME}, never the secret itself",
    ),
    "public_key": Field(
        "str",
        default=None,
        nullable=True,
        max_length=MAX_PUBLIC_KEY,
        check=_public_key_problem,
        help="RS*, ES*, EdDSA only: a PEM public key",
    ),
}

BASIC_AUTH_CREDENTIAL_FIELDS: dict[str, Field] = {
    "username": Field(
        "str", max_length=64, pattern=USERNAME_RE, pattern_help=USERNAME_HELP, help="unique across consumers"
    ),
    "password_hash": Field(
        "str",
        max_length=512,
        check=password_hash_problem,
        help=f"pbkdf2_sha256$<iterations ≥ {MIN_PBKDF2_ITERATIONS}>$<salt>$<base64 hash> (Django's format)",
    ),
}

CONSUMER_FIELDS: dict[str, Field] = {
    "username": Field(
        "str", max_length=64, pattern=USERNAME_RE, pattern_help=USERNAME_HELP, help="the consumer's key; unique"
    ),
    "custom_id": Field(
        "str",
        default=None,
        nullable=True,
        max_length=128,
        check=_header_safe,
        help="sent upstream as X-Consumer-Custom-ID; unique when set",
    ),
    "groups": Field(
        "list",
        default=[],
        max_items=MAX_GROUPS,
        item=Field("str", max_length=64, pattern=GROUP_RE, pattern_help=USERNAME_HELP),
        help="group names for acl; sorted, de-duplicated",
    ),
    "key_auth": Field(
        "list",
        default=[],
        max_items=MAX_CREDENTIALS,
        item=Field("object", fields=KEY_AUTH_CREDENTIAL_FIELDS),
        help="API keys as sha256 hashes",
    ),
    "jwt": Field(
        "list",
        default=[],
        max_items=MAX_CREDENTIALS,
        item=Field("object", fields=JWT_CREDENTIAL_FIELDS),
        help="JWT credentials, one per issuer",
    ),
    "basic_auth": Field(
        "list",
        default=[],
        max_items=MAX_CREDENTIALS,
        item=Field("object", fields=BASIC_AUTH_CREDENTIAL_FIELDS),
        help="username and PBKDF2 password hash",
    ),
}

CONSUMERS = Field("list", default=[], max_items=MAX_CONSUMERS, item=Field("object", fields=CONSUMER_FIELDS))

_REQUIRED: dict[str, tuple[str, ...]] = {
    "key_auth": ("key_sha256", "label"),
    "jwt": ("issuer", "algorithm"),
    "basic_auth": ("username", "password_hash"),
}
_SORT_KEY = {"key_auth": "label", "jwt": "issuer", "basic_auth": "username"}
CREDENTIAL_KINDS = ("key_auth", "jwt", "basic_auth")

# Fields people reach for with a clear secret, and what to write instead.
_CLEAR_TEXT = {
    "key_auth": {"key": "store key_sha256 (the sha256 of the key, 64 hex), never the key itself"},
    "basic_auth": {"password": "store password_hash (pbkdf2_sha256$…), never the password itself"},
    "jwt": {},
}
_USE_AN_ENV_REFERENCE = (
    "a secret is never written in the document: reference an environment variable of the data plane, "
    "secret: {env: NAME}"
)


# --- validation -----------------------------------------------------------------------------------


def normalize_consumers(value: Any, path: str, problems: list[Problem]) -> list[dict[str, Any]] | None:
    """The document's `consumers` in canonical form, or None after recording every problem."""
    from .validate import INVALID, _type_name, _value

    if not isinstance(value, list):
        problems.append(Problem(path, f"must be a list of consumers, not {_type_name(value)}"))
        return None
    if len(value) > MAX_CONSUMERS:
        problems.append(Problem(path, f"must have at most {MAX_CONSUMERS} entries, not {len(value)}"))
        return None
    before = len(problems)
    consumers: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(value):
        where = item(path, index)
        if not isinstance(entry, Mapping):
            problems.append(Problem(where, f"a consumer must be a mapping, not {_type_name(entry)}"))
            continue
        cleaned = _without_clear_text(entry, where, problems)
        consumer = _value(Field("object", fields=CONSUMER_FIELDS), cleaned, where, problems)
        if consumer is INVALID:
            continue
        if "username" not in consumer:
            problems.append(Problem(child(where, "username"), "is required"))
            continue
        if _consumer_rules(consumer, where, problems):
            consumers.append((index, consumer))
    _unique_across(consumers, path, problems)
    if len(problems) > before:
        return None
    # Sorted only now: until here, paths name credentials where the document wrote them.
    for _, consumer in consumers:
        if "groups" in consumer:
            consumer["groups"] = sorted(set(consumer["groups"]))
        for kind in CREDENTIAL_KINDS:
            if kind in consumer:
                consumer[kind] = sorted(consumer[kind], key=operator.itemgetter(_SORT_KEY[kind]))
    return sorted((consumer for _, consumer in consumers), key=lambda c: c["username"])


def _without_clear_text(entry: Mapping[str, Any], where: str, problems: list[Problem]) -> dict[str, Any]:
    """`entry` without the clear-text secrets it holds, each reported with what to write instead (and
    without its value)."""
    cleaned = dict(entry)
    for kind, refused in _CLEAR_TEXT.items():
        credentials = entry.get(kind)
        if not isinstance(credentials, list):
            continue
        kept: list[Any] = []
        for index, credential in enumerate(credentials):
            if isinstance(credential, Mapping):
                credential = dict(credential)
                for key, message in refused.items():
                    if key in credential:
                        problems.append(Problem(child(item(child(where, kind), index), key), message))
                        del credential[key]
                secret = credential.get("secret")
                if kind == "jwt" and secret is not None and not isinstance(secret, Mapping):
                    problems.append(Problem(child(item(child(where, kind), index), "secret"), _USE_AN_ENV_REFERENCE))
                    del credential["secret"]
            kept.append(credential)
        cleaned[kind] = kept
    return cleaned


# The field a clear-text one stands in for: when the clear one was reported, the missing one is not.
_INSTEAD_OF = {"key_sha256": "key", "password_hash": "password"}


def _reported(problems: list[Problem], path: str) -> bool:
    return any(problem.path == path for problem in problems)


def _consumer_rules(consumer: dict[str, Any], where: str, problems: list[Problem]) -> bool:
    """Required keys, per-consumer uniqueness and the JWT key rules; rewrites `consumer` canonically."""
    ok = True
    for kind in CREDENTIAL_KINDS:
        credentials = consumer.get(kind, [])
        for index, credential in enumerate(credentials):
            at = item(child(where, kind), index)
            for key in _REQUIRED[kind]:
                if key not in credential:
                    ok = False
                    if not _reported(problems, child(at, _INSTEAD_OF.get(key, key))):
                        problems.append(Problem(child(at, key), "is required"))
            if kind == "key_auth" and "key_sha256" in credential:
                credential["key_sha256"] = credential["key_sha256"].lower()
            if kind == "jwt" and "algorithm" in credential:
                ok = _jwt_key_rules(credential, at, problems) and ok
    if not ok:
        return False
    seen: dict[str, int] = {}
    for index, credential in enumerate(consumer.get("key_auth", [])):
        first = seen.setdefault(credential["label"], index)
        if first != index:
            problems.append(
                Problem(
                    child(item(child(where, "key_auth"), index), "label"),
                    f"label {credential['label']!r} is used twice by this consumer (also key_auth[{first}])",
                )
            )
            ok = False
    return ok


def _jwt_key_rules(credential: dict[str, Any], at: str, problems: list[Problem]) -> bool:
    algorithm = credential["algorithm"]
    if "secret" in credential and credential["secret"] is None:
        del credential["secret"]
    secret, public_key = credential.get("secret"), credential.get("public_key")
    if algorithm in HMAC_ALGORITHMS:
        ok = True
        if public_key is not None:
            problems.append(Problem(child(at, "public_key"), f"{algorithm} verifies with a secret, not a public key"))
            ok = False
        if not secret or "env" not in secret:
            ok = False
            if not _reported(problems, child(at, "secret")):  # a clear-text secret was reported already
                problems.append(Problem(child(at, "secret"), f"{algorithm} needs secret: {{env: NAME}}"))
        return ok
    ok = True
    if secret is not None:
        problems.append(
            Problem(child(at, "secret"), f"{algorithm} verifies with a public key: a secret is for HS256/384/512")
        )
        ok = False
    if public_key is None:
        problems.append(Problem(child(at, "public_key"), f"{algorithm} needs a PEM public_key"))
        return False
    message = public_key_problem(public_key, algorithm)
    if message is not None:
        problems.append(Problem(child(at, "public_key"), message))
        return False
    credential["public_key"] = normalize_public_key(public_key)
    return ok


def _unique_across(consumers: list[tuple[int, dict[str, Any]]], path: str, problems: list[Problem]) -> None:
    """What selects a consumer must select one: username, custom_id, key hash, JWT issuer and basic
    username are each unique across all consumers (and within one)."""
    claimed: dict[tuple[str, str], str] = {}

    def claim(what: str, value: str, where: str, holder: str, message: str) -> None:
        first = claimed.setdefault((what, value), holder)
        if first != holder:
            problems.append(Problem(where, f"{message} {first}"))

    for index, consumer in consumers:
        where = item(path, index)
        name = consumer["username"]
        claim("username", name, child(where, "username"), where, f"consumer {name!r} is defined twice: also")
        if consumer.get("custom_id") is not None:
            claim("custom_id", consumer["custom_id"], child(where, "custom_id"), where, "custom_id is also used by")
        for kind, key, what in (
            ("key_auth", "key_sha256", "this key hash"),
            ("jwt", "issuer", "issuer"),
            ("basic_auth", "username", "basic-auth username"),
        ):
            for position, credential in enumerate(consumer.get(kind, [])):
                at = item(child(where, kind), position)
                shown = "" if kind == "key_auth" else f" {credential[key]!r}"
                message = f"{what}{shown} must identify one consumer's credential; it is also used by"
                claim(kind, credential[key], child(at, key), at, message)


# --- for the data plane ---------------------------------------------------------------------------


def effective_consumer(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """One consumer with every key present: custom_id (None), groups, key_auth, jwt, basic_auth
    (lists, possibly empty); every jwt credential has both `secret` and `public_key` (one is None)."""
    consumer = {
        "username": canonical["username"],
        "custom_id": canonical.get("custom_id"),
        "groups": list(canonical.get("groups", ())),
        "key_auth": [dict(credential) for credential in canonical.get("key_auth", ())],
        "jwt": [
            {"secret": None, "public_key": None, **{k: v for k, v in credential.items()}}
            for credential in canonical.get("jwt", ())
        ],
        "basic_auth": [dict(credential) for credential in canonical.get("basic_auth", ())],
    }
    for credential in consumer["jwt"]:
        if credential["secret"] is not None:
            credential["secret"] = dict(credential["secret"])
    return consumer


def effective_consumers(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A canonical document's consumers by username, each as `effective_consumer` gives it."""
    return {consumer["username"]: effective_consumer(consumer) for consumer in document.get("consumers") or ()}


def secret_env_names(document: Mapping[str, Any]) -> list[str]:
    """The environment variables a canonical document's secrets reference (sorted, once each): a data
    plane resolves each when it applies the snapshot, and refuses it naming any that is missing."""
    names = {
        credential["secret"]["env"]
        for consumer in document.get("consumers") or ()
        for credential in consumer.get("jwt", ())
        if credential.get("secret")
    }
    return sorted(names)


def key_digest(key: bytes) -> bytes:
    """The sha256 digest of a key's bytes as a client presents them: the data plane looks a key up by
    it, and `hash_key` is its hex, so a key sent in UTF-8 is found by the hash the control plane stored."""
    return hashlib.sha256(key).digest()


def hash_key(key: str) -> str:
    """The `key_sha256` of an API key: the sha256 of its UTF-8 bytes, lower-case hex. The control plane
    stores it when it generates a key; the data plane looks a presented key up by it (`key_digest`)."""
    return key_digest(key.encode("utf-8", "surrogatepass")).hex()


def make_password_hash(password: str, *, salt: str, iterations: int) -> str:
    """`pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` of `password`, as Django's PBKDF2PasswordHasher
    writes it (the form `password_hash_problem` accepts and `password_matches` checks); for seeds
    written by hand and tests, the control plane uses Django's own hasher."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8", "surrogatepass"), salt.encode("ascii"), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def password_matches(password: str, password_hash: str) -> bool:
    """Whether `password` is the one `password_hash` (a valid `pbkdf2_sha256$…`, as Django's
    PBKDF2PasswordHasher writes it) was made from; compared in constant time. Costs the hash's
    iterations: the data plane caches the answer (§11)."""
    _, iterations, salt, expected = password_hash.split("$", 3)
    digest = hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", "surrogatepass"), salt.encode("ascii"), int(iterations)
    )
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), expected)


__all__ = [
    "BASIC_AUTH_CREDENTIAL_FIELDS",
    "CONSUMERS",
    "CONSUMER_FIELDS",
    "CREDENTIAL_KINDS",
    "ENV_NAME_RE",
    "GROUP_RE",
    "HMAC_ALGORITHMS",
    "JWT_ALGORITHMS",
    "JWT_CREDENTIAL_FIELDS",
    "KEY_AUTH_CREDENTIAL_FIELDS",
    "MAX_CREDENTIALS",
    "MAX_PBKDF2_ITERATIONS",
    "MIN_PBKDF2_ITERATIONS",
    "PUBLIC_KEY_ALGORITHMS",
    "SECRET_FIELDS",
    "USERNAME_RE",
    "effective_consumer",
    "hash_key",
    "key_digest",
    "make_password_hash",
    "password_matches",
    "effective_consumers",
    "normalize_consumers",
    "normalize_public_key",
    "password_hash_problem",
    "public_key_problem",
    "secret_env_names",
]
