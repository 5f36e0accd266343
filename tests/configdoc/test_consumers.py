"""Consumers and the authentication plugins' contract (ARCHITECTURE §11): schemas, cross-references,
secrets kept out of the document, canonical form and the data plane's helpers."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from configdoc import (
    canonical_json,
    config_sha256,
    dump_document_yaml,
    effective_consumers,
    effective_plugins,
    load_document,
    secret_env_names,
    validate_document,
)
from configdoc.consumers import MAX_CREDENTIALS, MAX_PBKDF2_ITERATIONS, hash_key, password_matches
from configdoc.plugins import AUTHENTICATION_PLUGINS, PLUGINS, effective_anonymous

TARGET = [{"url": "http://127.0.0.1:8010"}]
KEY_HASH = hashlib.sha256(b"a key shown once").hexdigest()
OTHER_HASH = hashlib.sha256(b"another key").hexdigest()


def pbkdf2(
    password: str = "s3cret",  # noqa: S107 - a test password
    iterations: int = 100_000,
    salt: str = "abcdefghijklmnop",
) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


PASSWORD_HASH = pbkdf2()


def pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


@cache
def public_key(kind: str) -> str:
    if kind == "rsa":
        return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if kind == "rsa1024":
        return pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the key the contract refuses
    if kind == "p256":
        return pem(ec.generate_private_key(ec.SECP256R1()))
    if kind == "p384":
        return pem(ec.generate_private_key(ec.SECP384R1()))
    if kind == "ed25519":
        return pem(ed25519.Ed25519PrivateKey.generate())
    raise AssertionError(kind)


def consumer(username: str = "mobile-app", **fields: Any) -> dict[str, Any]:
    return {"username": username, **fields}


def document(
    consumers: Any = None, *, plugins: Any = None, global_plugins: Any = None, version: Any = 2
) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"name": "orders", "version": "v1", "targets": TARGET}
    if plugins is not None:
        endpoint["plugins"] = plugins
    data: dict[str, Any] = {"format_version": version, "endpoints": [endpoint]}
    if consumers is not None:
        data["consumers"] = consumers
    if global_plugins is not None:
        data["plugins"] = global_plugins
    return data


def validate(data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    canonical, problems = validate_document(data, max_format_version=2)
    return canonical, {problem.path: problem.message for problem in problems}


def full_consumer() -> dict[str, Any]:
    return consumer(
        custom_id="crm-1042",
        groups=["partners", "beta", "partners"],
        key_auth=[{"key_sha256": KEY_HASH.upper(), "label": "2026-q4"}, {"key_sha256": OTHER_HASH, "label": "2026-q3"}],
        jwt=[
            {"issuer": "partner-idp", "algorithm": "RS256", "public_key": public_key("rsa")},
            {"issuer": "mobile", "algorithm": "HS256", "secret": {"env": "MOBILE_JWT_SECRET"}},
        ],
        basic_auth=[{"username": "mobile", "password_hash": PASSWORD_HASH}],
    )


# --- a valid document -------------------------------------------------------------------------------


def test_the_architecture_example_is_valid_and_canonical() -> None:
    plugins = {
        "key_auth": {"key_names": ["apikey", "X-API-Key"], "in": ["header", "query"], "hide_credentials": True},
        "jwt": {"claims_to_verify": ["exp"], "leeway": 30, "issuers": [], "audiences": [], "jwks_url": None},
        "basic_auth": {"realm": "gateway", "hide_credentials": True, "anonymous": "guest"},
        "forward_auth": {
            "url": "http://auth.internal/check",
            "timeout": 2,
            "request_headers": ["Authorization", "Cookie"],
            "response_headers": ["X-User-Id"],
        },
        "acl": {"allow": ["partners"]},
    }
    canonical, problems = validate(document([full_consumer(), consumer("guest")], plugins=plugins))
    assert problems == {}
    assert canonical["format_version"] == 2
    first, second = canonical["consumers"]
    assert [first["username"], second["username"]] == ["guest", "mobile-app"]
    assert first == {"username": "guest"}
    assert second["groups"] == ["beta", "partners"]
    assert [c["label"] for c in second["key_auth"]] == ["2026-q3", "2026-q4"]
    assert second["key_auth"][1]["key_sha256"] == KEY_HASH  # lower-cased
    assert [c["issuer"] for c in second["jwt"]] == ["mobile", "partner-idp"]
    assert second["jwt"][0] == {"issuer": "mobile", "algorithm": "HS256", "secret": {"env": "MOBILE_JWT_SECRET"}}
    assert second["jwt"][1]["public_key"].startswith("-----BEGIN PUBLIC KEY-----\n")
    endpoint = canonical["endpoints"][0]["plugins"]
    assert endpoint["key_auth"] == {
        "key_names": ["X-API-Key", "apikey"],
        "in": ["header", "query"],
        "hide_credentials": True,
    }
    assert endpoint["jwt"] == {"leeway": 30}
    assert endpoint["basic_auth"] == {"hide_credentials": True, "anonymous": "guest"}
    assert endpoint["forward_auth"] == {
        "url": "http://auth.internal/check",
        "request_headers": ["Authorization", "Cookie"],
        "response_headers": ["X-User-Id"],
    }
    again, _ = validate(json.loads(canonical_json(canonical)))
    assert canonical_json(again) == canonical_json(canonical)
    text = dump_document_yaml(canonical)
    assert text.index("consumers:") < text.index("endpoints:")
    assert text.index("issuer: mobile") < text.index("algorithm: HS256") < text.index("env: MOBILE_JWT_SECRET")
    assert load_document(text, max_format_version=2).document == canonical


def test_consumers_alone_make_a_format_2_document_and_a_format_1_document_may_not_have_them() -> None:
    canonical, problems = validate(document([consumer()]))
    assert problems == {} and canonical["format_version"] == 2
    _, problems = validate(document([consumer()], version=1))
    assert "consumers needs format_version: 2" in problems["consumers"]
    empty, problems = validate(document([]))
    assert problems == {} and empty["format_version"] == 1 and "consumers" not in empty
    assert config_sha256(empty) == config_sha256(validate(document(version=1))[0])


def test_canonical_order_does_not_depend_on_the_order_written() -> None:
    shuffled = full_consumer()
    shuffled["key_auth"].reverse()
    shuffled["jwt"].reverse()
    one, _ = validate(document([consumer("b"), full_consumer(), consumer("a")]))
    two, _ = validate(document([consumer("a"), shuffled, consumer("b")]))
    assert canonical_json(one) == canonical_json(two)


def test_a_public_key_is_stored_in_one_spelling() -> None:
    key = public_key("p256")
    spaced = "\n" + key.replace("\n", "\r\n") + "\n\n"
    for written in (key, spaced):
        credential = {"issuer": "i", "algorithm": "ES256", "public_key": written}
        canonical, problems = validate(document([consumer(jwt=[credential])]))
        assert problems == {}
        assert canonical["consumers"][0]["jwt"][0]["public_key"] == key


@pytest.mark.parametrize(
    ("algorithm", "kind"),
    [("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"), ("ES256", "p256"), ("ES384", "p384"), ("EdDSA", "ed25519")],
)
def test_every_public_key_algorithm_takes_its_kind_of_key(algorithm: str, kind: str) -> None:
    credential = {"issuer": "i", "algorithm": algorithm, "public_key": public_key(kind)}
    _, problems = validate(document([consumer(jwt=[credential])]))
    assert problems == {}


# --- the data plane's helpers ---------------------------------------------------------------------


def test_effective_consumers_have_every_key_and_secret_env_names_lists_each_variable_once() -> None:
    other = consumer(
        "svc", jwt=[{"issuer": "svc", "algorithm": "HS512", "secret": {"env": "A_SECRET"}}], groups=["internal"]
    )
    shared = consumer("svc2", jwt=[{"issuer": "svc2", "algorithm": "HS384", "secret": {"env": "A_SECRET"}}])
    canonical, problems = validate(document([full_consumer(), other, shared, consumer("bare")]))
    assert problems == {}
    consumers = effective_consumers(canonical)
    assert list(consumers) == ["bare", "mobile-app", "svc", "svc2"]
    assert consumers["bare"] == {
        "username": "bare",
        "custom_id": None,
        "groups": [],
        "key_auth": [],
        "jwt": [],
        "basic_auth": [],
    }
    mobile = consumers["mobile-app"]
    assert mobile["custom_id"] == "crm-1042"
    assert mobile["jwt"][0] == {
        "issuer": "mobile",
        "algorithm": "HS256",
        "secret": {"env": "MOBILE_JWT_SECRET"},
        "public_key": None,
    }
    assert mobile["jwt"][1]["secret"] is None and mobile["jwt"][1]["public_key"]
    assert secret_env_names(canonical) == ["A_SECRET", "MOBILE_JWT_SECRET"]
    assert secret_env_names(validate(document(version=1))[0]) == []
    assert effective_consumers(validate(document(version=1))[0]) == {}


def test_hash_key_and_password_matches_agree_with_what_the_control_plane_stores() -> None:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    assert hash_key("a key shown once") == KEY_HASH
    assert hash_key("clé") == hashlib.sha256("clé".encode()).hexdigest()
    stored = PBKDF2PasswordHasher().encode("correct horse", "abcdefghijklmnop", 100_000)
    _, problems = validate(document([consumer(basic_auth=[{"username": "u", "password_hash": stored}])]))
    assert problems == {}
    assert password_matches("correct horse", stored)
    assert not password_matches("correct horsf", stored)
    assert not password_matches("", stored)
    assert password_matches("s3cret", PASSWORD_HASH)


def test_the_anonymous_consumer_of_a_chain() -> None:
    chain = effective_plugins({"key_auth": {}}, {"jwt": {"anonymous": "guest"}})
    assert list(chain) == ["jwt", "key_auth"]
    assert effective_anonymous(chain) == "guest"
    assert effective_anonymous(effective_plugins({"key_auth": {}}, None)) is None
    assert effective_anonymous({}) is None


# --- consumer rules -------------------------------------------------------------------------------


def _jwt(**fields: Any) -> dict[str, Any]:
    return consumer(jwt=[fields])


@pytest.mark.parametrize(
    ("entry", "path", "words"),
    [
        ({}, "consumers[0].username", "is required"),
        (consumer(""), "consumers[0].username", "not valid"),
        (consumer("has space"), "consumers[0].username", "not valid"),
        (consumer("x" * 65), "consumers[0].username", "at most 64"),
        (consumer(7), "consumers[0].username", "must be a string"),
        (consumer(custom_id="x" * 129), "consumers[0].custom_id", "at most 128"),
        (consumer(custom_id=" padded"), "consumers[0].custom_id", "visible ASCII"),
        (consumer(custom_id="caf\u00e9"), "consumers[0].custom_id", "visible ASCII"),
        (consumer(groups="partners"), "consumers[0].groups", "must be a list"),
        (consumer(groups=["a,b"]), "consumers[0].groups[0]", "not valid"),
        (consumer(colour="red"), "consumers[0].colour", "unknown key"),
        (consumer(key_auth=[{"label": "l"}]), "consumers[0].key_auth[0].key_sha256", "is required"),
        (consumer(key_auth=[{"key_sha256": KEY_HASH}]), "consumers[0].key_auth[0].label", "is required"),
        (consumer(key_auth=[{"key_sha256": KEY_HASH[:-1], "label": "l"}]), "consumers[0].key_auth[0].key_sha256", "64"),
        (consumer(key_auth=[{"key_sha256": "g" * 64, "label": "l"}]), "consumers[0].key_auth[0].key_sha256", "64"),
        (consumer(key_auth=[{"key_sha256": KEY_HASH, "label": "a b"}]), "consumers[0].key_auth[0].label", "not valid"),
        (
            consumer(key_auth=[{"key_sha256": KEY_HASH, "label": "l"}, {"key_sha256": OTHER_HASH, "label": "l"}]),
            "consumers[0].key_auth[1].label",
            "used twice by this consumer",
        ),
        (
            consumer(key_auth=[{"key_sha256": KEY_HASH, "label": f"l{i}"} for i in range(MAX_CREDENTIALS + 1)]),
            "consumers[0].key_auth",
            f"at most {MAX_CREDENTIALS}",
        ),
        (_jwt(algorithm="HS256", secret={"env": "S"}), "consumers[0].jwt[0].issuer", "is required"),
        (_jwt(issuer="i", secret={"env": "S"}), "consumers[0].jwt[0].algorithm", "is required"),
        (_jwt(issuer="i", algorithm="none", secret={"env": "S"}), "consumers[0].jwt[0].algorithm", "must be one of"),
        (_jwt(issuer="i", algorithm="hs256", secret={"env": "S"}), "consumers[0].jwt[0].algorithm", "must be one of"),
        (_jwt(issuer="has space", algorithm="HS256", secret={"env": "S"}), "consumers[0].jwt[0].issuer", "visible"),
        (_jwt(issuer="i", algorithm="HS256"), "consumers[0].jwt[0].secret", "needs secret: {env: NAME}"),
        (_jwt(issuer="i", algorithm="HS256", secret={}), "consumers[0].jwt[0].secret", "needs secret: {env: NAME}"),
        (_jwt(issuer="i", algorithm="HS256", secret=None), "consumers[0].jwt[0].secret", "needs secret"),
        (_jwt(issuer="i", algorithm="HS256", secret={"env": "lower"}), "consumers[0].jwt[0].secret.env", "variable"),
        (_jwt(issuer="i", algorithm="HS256", secret={"env": "1X"}), "consumers[0].jwt[0].secret.env", "variable"),
        (
            _jwt(issuer="i", algorithm="HS256", secret={"env": "S", "value": "x"}),
            "consumers[0].jwt[0].secret.value",
            "unknown key",
        ),
        (
            _jwt(issuer="i", algorithm="HS256", secret={"env": "S"}, public_key=public_key("rsa")),
            "consumers[0].jwt[0].public_key",
            "not a public key",
        ),
        (_jwt(issuer="i", algorithm="RS256"), "consumers[0].jwt[0].public_key", "needs a PEM public_key"),
        (
            _jwt(issuer="i", algorithm="RS256", public_key=public_key("rsa"), secret={"env": "S"}),
            "consumers[0].jwt[0].secret",
            "for HS256/384/512",
        ),
        (_jwt(issuer="i", algorithm="RS256", public_key="not a key"), "consumers[0].jwt[0].public_key", "PEM"),
        (
            _jwt(
                issuer="i", algorithm="RS256", public_key="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
            ),
            "consumers[0].jwt[0].public_key",
            "not a certificate",
        ),
        (
            _jwt(issuer="i", algorithm="RS256", public_key=public_key("p256")),
            "consumers[0].jwt[0].public_key",
            "needs an RSA public key",
        ),
        (
            _jwt(issuer="i", algorithm="RS256", public_key=public_key("rsa1024")),
            "consumers[0].jwt[0].public_key",
            "at least 2048 bits",
        ),
        (
            _jwt(issuer="i", algorithm="ES256", public_key=public_key("p384")),
            "consumers[0].jwt[0].public_key",
            "secp256r1",
        ),
        (
            _jwt(issuer="i", algorithm="EdDSA", public_key=public_key("rsa")),
            "consumers[0].jwt[0].public_key",
            "Ed25519",
        ),
        (consumer(basic_auth=[{"username": "u"}]), "consumers[0].basic_auth[0].password_hash", "is required"),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": "md5$x$y"}]),
            "consumers[0].basic_auth[0].password_hash",
            "pbkdf2_sha256$<iterations>",
        ),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": pbkdf2(iterations=99_999)}]),
            "consumers[0].basic_auth[0].password_hash",
            "iterations must be 100000",
        ),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": "pbkdf2_sha256$999999999$abcdefghij$" + "A" * 44}]),
            "consumers[0].basic_auth[0].password_hash",
            f"{MAX_PBKDF2_ITERATIONS}, not 999999999",
        ),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": pbkdf2(salt="short")}]),
            "consumers[0].basic_auth[0].password_hash",
            "salt",
        ),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": PASSWORD_HASH[:-4]}]),
            "consumers[0].basic_auth[0].password_hash",
            "32 bytes",
        ),
        (
            consumer(basic_auth=[{"username": "a:b", "password_hash": PASSWORD_HASH}]),
            "consumers[0].basic_auth[0].username",
            "not valid",
        ),
        ("mobile-app", "consumers[0]", "must be a mapping"),
    ],
)
def test_a_bad_consumer_is_refused_with_its_path(entry: Any, path: str, words: str) -> None:
    canonical, problems = validate(document([entry]))
    assert canonical == {}
    assert words in problems.get(path, ""), problems


@pytest.mark.parametrize("value", [None, {}, "mobile-app", 1])
def test_consumers_must_be_a_list(value: Any) -> None:
    _, problems = validate({**document(), "consumers": value})
    assert "must be a list of consumers" in problems["consumers"]


# --- identity is unique ---------------------------------------------------------------------------


def test_what_identifies_a_consumer_identifies_one() -> None:
    first = consumer(
        "a",
        custom_id="c-1",
        key_auth=[{"key_sha256": KEY_HASH, "label": "l"}],
        jwt=[{"issuer": "idp", "algorithm": "HS256", "secret": {"env": "S"}}],
        basic_auth=[{"username": "shared", "password_hash": PASSWORD_HASH}],
    )
    second = consumer(
        "b",
        custom_id="c-1",
        key_auth=[{"key_sha256": KEY_HASH.upper(), "label": "other-label"}],
        jwt=[{"issuer": "idp", "algorithm": "RS256", "public_key": public_key("rsa")}],
        basic_auth=[{"username": "shared", "password_hash": pbkdf2("other")}],
    )
    _, problems = validate(document([first, second, consumer("a")]))
    assert problems == {
        "consumers[1].custom_id": "custom_id is also used by consumers[0]",
        "consumers[1].key_auth[0].key_sha256": (
            "this key hash must identify one consumer's credential; it is also used by consumers[0].key_auth[0]"
        ),
        "consumers[1].jwt[0].issuer": (
            "issuer 'idp' must identify one consumer's credential; it is also used by consumers[0].jwt[0]"
        ),
        "consumers[1].basic_auth[0].username": (
            "basic-auth username 'shared' must identify one consumer's credential; it is also used by "
            "consumers[0].basic_auth[0]"
        ),
        "consumers[2].username": "consumer 'a' is defined twice: also consumers[0]",
    }


def test_a_duplicate_is_reported_where_the_document_wrote_it_not_where_sorting_puts_it() -> None:
    first = consumer("a", jwt=[{"issuer": "z", "algorithm": "HS256", "secret": {"env": "A"}}])
    second = consumer(
        "b",
        jwt=[
            {"issuer": "y", "algorithm": "HS256", "secret": {"env": "B"}},
            {"issuer": "z", "algorithm": "HS256", "secret": {"env": "C"}},
            {"issuer": "x", "algorithm": "HS256", "secret": {"env": "D"}},
        ],
    )
    _, problems = validate(document([second, first]))
    assert list(problems) == ["consumers[1].jwt[0].issuer"]
    assert problems["consumers[1].jwt[0].issuer"].endswith("also used by consumers[0].jwt[1]")


def test_one_consumer_may_not_hold_one_identity_twice_either() -> None:
    twice = consumer(
        key_auth=[{"key_sha256": KEY_HASH, "label": "a"}, {"key_sha256": KEY_HASH, "label": "b"}],
        jwt=[
            {"issuer": "{first}", "algorithm": "HS256", "secret": {"env": "A"}},
            {"issuer": "{first}", "algorithm": "HS384", "secret": {"env": "B"}},
        ],
        basic_auth=[
            {"username": "u", "password_hash": PASSWORD_HASH},
            {"username": "u", "password_hash": PASSWORD_HASH},
        ],
    )
    _, problems = validate(document([twice]))
    assert set(problems) == {
        "consumers[0].key_auth[1].key_sha256",
        "consumers[0].jwt[1].issuer",
        "consumers[0].basic_auth[1].username",
    }
    assert "issuer '{first}' must identify one consumer's credential" in problems["consumers[0].jwt[1].issuer"]


def test_one_consumer_may_hold_several_credentials_of_each_kind_to_rotate() -> None:
    rotating = consumer(
        key_auth=[{"key_sha256": KEY_HASH, "label": "old"}, {"key_sha256": OTHER_HASH, "label": "new"}],
        jwt=[
            {"issuer": "a", "algorithm": "HS256", "secret": {"env": "OLD"}},
            {"issuer": "b", "algorithm": "HS256", "secret": {"env": "NEW"}},
        ],
        basic_auth=[
            {"username": "u1", "password_hash": PASSWORD_HASH},
            {"username": "u2", "password_hash": pbkdf2("new")},
        ],
    )
    _, problems = validate(document([rotating]))
    assert problems == {}


# --- secrets never enter the document -------------------------------------------------------------

CLEAR = "hunter2-the-clear-secret"


@pytest.mark.parametrize(
    ("entry", "path", "words"),
    [
        (_jwt(issuer="i", algorithm="HS256", secret=CLEAR), "consumers[0].jwt[0].secret", "secret: {env: NAME}"),
        (_jwt(issuer="i", algorithm="HS256", secret=[CLEAR]), "consumers[0].jwt[0].secret", "secret: {env: NAME}"),
        (consumer(key_auth=[{"key": CLEAR, "label": "l"}]), "consumers[0].key_auth[0].key", "store key_sha256"),
        (
            consumer(basic_auth=[{"username": "u", "password": CLEAR}]),
            "consumers[0].basic_auth[0].password",
            "store password_hash",
        ),
        (_jwt(issuer="i", algorithm="HS256", secret={"env": CLEAR}), "consumers[0].jwt[0].secret.env", "variable"),
        (consumer(key_auth=[{"key_sha256": CLEAR, "label": "l"}]), "consumers[0].key_auth[0].key_sha256", "sha256"),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": CLEAR}]),
            "consumers[0].basic_auth[0].password_hash",
            "never stored",
        ),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": f"pbkdf2_sha256$100000${CLEAR}$x"}]),
            "consumers[0].basic_auth[0].password_hash",
            "32 bytes",
        ),
    ],
)
def test_a_clear_text_secret_is_refused_saying_what_to_store_and_never_repeated(
    entry: Any, path: str, words: str
) -> None:
    data = document([entry])
    canonical, found = validate_document(data, max_format_version=2)
    problems = {problem.path: problem.message for problem in found}
    assert canonical == {}
    assert words in problems.get(path, ""), problems
    assert all(CLEAR not in str(problem) for problem in found)
    yaml_text = dump_document_yaml(data)
    assert all(CLEAR not in str(problem) for problem in load_document(yaml_text, max_format_version=2).problems)


# --- hostile values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        (consumer("a\x00"), "consumers[0].username"),
        (consumer("\ud800"), "consumers[0].username"),
        (consumer("x" * 10_000), "consumers[0].username"),
        (consumer(custom_id="a\x00"), "consumers[0].custom_id"),
        (consumer(custom_id="\udcff"), "consumers[0].custom_id"),
        (consumer(custom_id="a\r\nX-Injected: 1"), "consumers[0].custom_id"),
        (consumer(groups=["\x00"]), "consumers[0].groups[0]"),
        (consumer(groups=["g"] * 10_000), "consumers[0].groups"),
        (consumer(key_auth=[{"key_sha256": "\x00" * 64, "label": "l"}]), "consumers[0].key_auth[0].key_sha256"),
        (consumer(key_auth=[{"key_sha256": KEY_HASH, "label": "\ud800"}]), "consumers[0].key_auth[0].label"),
        (_jwt(issuer="x" * 10_000, algorithm="HS256", secret={"env": "S"}), "consumers[0].jwt[0].issuer"),
        (_jwt(issuer="i\x00", algorithm="HS256", secret={"env": "S"}), "consumers[0].jwt[0].issuer"),
        (_jwt(issuer="i", algorithm="HS256", secret={"env": "S\x00"}), "consumers[0].jwt[0].secret.env"),
        (_jwt(issuer="i", algorithm="HS256", secret={"env": "A" * 10_000}), "consumers[0].jwt[0].secret.env"),
        (_jwt(issuer="i", algorithm="RS256", public_key="x" * 100_000), "consumers[0].jwt[0].public_key"),
        (_jwt(issuer="i", algorithm="RS256", public_key="\ud800"), "consumers[0].jwt[0].public_key"),
        (
            _jwt(issuer="i", algorithm="RS256", public_key="-----BEGIN PUBLIC KEY-----\n\u00e9\n"),
            "consumers[0].jwt[0].public_key",
        ),
        (
            consumer(basic_auth=[{"username": "u", "password_hash": "pbkdf2_sha256$100000$" + "a" * 10_000 + "$x"}]),
            "consumers[0].basic_auth[0].password_hash",
        ),
        (consumer(basic_auth=[{"username": "u", "password_hash": "\x00"}]), "consumers[0].basic_auth[0].password_hash"),
        (consumer(**{"\x00": 1}), "consumers[0].\\x00"),
    ],
)
def test_hostile_consumer_values_are_refused_with_their_path(entry: Any, path: str) -> None:
    canonical, found = validate_document(document([entry]), max_format_version=2)
    problems = {problem.path: problem.message for problem in found}
    assert canonical == {}
    assert path in problems, problems
    for problem in found:
        text = str(problem)
        assert "\x00" not in text and "\r" not in text and "\n" not in text
        assert len(text) < 1000
        text.encode("utf-8")


# --- the plugins ----------------------------------------------------------------------------------


def test_authentication_plugins_and_acl_are_access_plugins_in_their_phases() -> None:
    for name in AUTHENTICATION_PLUGINS:
        assert PLUGINS[name].phase == "authentication" and PLUGINS[name].access
    assert PLUGINS["acl"].phase == "acl" and PLUGINS["acl"].access
    chain = effective_plugins(
        {"acl": {"deny": ["banned"]}, "cors": {}},
        {"key_auth": {}, "forward_auth": {"url": "http://auth.internal/check"}},
    )
    assert list(chain) == ["cors", "forward_auth", "key_auth", "acl"]


def plugin(name: str, config: Any, consumers: Any = None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    plugins = {name: config}
    if name == "acl":
        plugins["key_auth"] = {}
    canonical, problems = validate(
        document(consumers if consumers is not None else [consumer("guest")], plugins=plugins)
    )
    if problems:
        return None, problems
    return canonical["endpoints"][0]["plugins"][name], problems


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("key_auth", {}, {}),
        ("key_auth", {"key_names": ["apikey"], "in": ["header"], "hide_credentials": False}, {}),
        (
            "key_auth",
            {"key_names": ["b", "a", "b", "A"], "in": ["query", "header", "query"]},
            {"key_names": ["A", "a", "b"], "in": ["header", "query"]},
        ),
        ("key_auth", {"anonymous": "guest", "mode": "report"}, {"anonymous": "guest", "mode": "report"}),
        ("key_auth", {"anonymous": None}, {}),
        ("jwt", {"claims_to_verify": ["nbf", "exp", "nbf"]}, {"claims_to_verify": ["exp", "nbf"]}),
        ("jwt", {"claims_to_verify": []}, {"claims_to_verify": []}),
        (
            "jwt",
            {"leeway": 300, "issuers": ["b", "a"], "audiences": ["api"]},
            {"leeway": 300, "issuers": ["a", "b"], "audiences": ["api"]},
        ),
        (
            "jwt",
            {"jwks_url": "https://idp.example.com/.well-known/jwks.json", "consumer_claim": "sub"},
            {"jwks_url": "https://idp.example.com/.well-known/jwks.json", "consumer_claim": "sub"},
        ),
        (
            "jwt",
            {"jwks_url": "http://127.0.0.1:9000/jwks?tenant=a"},
            {"jwks_url": "http://127.0.0.1:9000/jwks?tenant=a"},
        ),
        ("basic_auth", {"realm": "gateway"}, {}),
        (
            "basic_auth",
            {"realm": "Orders API", "hide_credentials": True},
            {"realm": "Orders API", "hide_credentials": True},
        ),
        ("forward_auth", {"url": "http://auth.internal/check", "timeout": 2}, {"url": "http://auth.internal/check"}),
        (
            "forward_auth",
            {
                "url": "https://10.0.0.5:8443/v1/check",
                "timeout": 0.25,
                "request_headers": ["cookie", "Authorization", "Cookie"],
            },
            {"url": "https://10.0.0.5:8443/v1/check", "timeout": 0.25, "request_headers": ["Authorization", "cookie"]},
        ),
        ("forward_auth", {"enabled": False}, {"enabled": False}),
        ("acl", {"allow": ["b", "a", "a"]}, {"allow": ["a", "b"]}),
        ("acl", {"deny": ["banned"], "mode": "report"}, {"deny": ["banned"], "mode": "report"}),
        ("acl", {"enabled": False}, {"enabled": False}),
    ],
)
def test_a_valid_auth_plugin_config_is_accepted_in_canonical_form(name: str, config: Any, expected: Any) -> None:
    canonical, problems = plugin(name, config)
    assert problems == {}
    assert canonical == expected


@pytest.mark.parametrize(
    ("name", "config", "path", "words"),
    [
        ("key_auth", {"key_names": []}, "key_names", "must not be empty"),
        ("key_auth", {"key_names": ["Bad Name"]}, "key_names[0]", "not a valid header name"),
        ("key_auth", {"key_names": ["X-Consumer-Username"]}, "key_names[0]", "written by the gateway"),
        ("key_auth", {"key_names": ["Connection"]}, "key_names[0]", "hop-by-hop"),
        ("key_auth", {"in": ["cookie"]}, "in[0]", "must be one of header, query"),
        ("key_auth", {"in": []}, "in", "must not be empty"),
        ("key_auth", {"hide_credentials": "yes"}, "hide_credentials", "true or false"),
        ("key_auth", {"anonymous": "no such"}, "anonymous", "not valid"),
        ("key_auth", {"anonymous": 1}, "anonymous", "must be a string"),
        ("key_auth", {"mode": "audit"}, "mode", "enforce, report"),
        ("key_auth", {"keys": "x"}, "keys", "unknown key"),
        ("jwt", {"claims_to_verify": ["iat"]}, "claims_to_verify[0]", "must be one of exp, nbf"),
        ("jwt", {"leeway": 301}, "leeway", "at most 300"),
        ("jwt", {"leeway": -1}, "leeway", "at least 0"),
        ("jwt", {"issuers": ["a b"]}, "issuers[0]", "visible ASCII"),
        ("jwt", {"audiences": "api"}, "audiences", "must be a list"),
        ("jwt", {"jwks_url": "ftp://idp.example.com/jwks"}, "jwks_url", "http:// or https://"),
        ("jwt", {"jwks_url": "http://169.254.169.254/latest"}, "jwks_url", "link-local or cloud metadata"),
        ("jwt", {"jwks_url": "http://metadata.google.internal/jwks"}, "jwks_url", "link-local or cloud metadata"),
        ("jwt", {"jwks_url": "http://[fe80::1]/jwks"}, "jwks_url", "link-local or cloud metadata"),
        ("jwt", {"jwks_url": "http://2852039166/jwks"}, "jwks_url", "link-local or cloud metadata"),
        ("jwt", {"jwks_url": "http://user:pw@idp.example.com/jwks"}, "jwks_url", "credentials"),
        ("jwt", {"jwks_url": "https:///jwks"}, "jwks_url", "no host"),
        ("jwt", {"jwks_url": "http://idp.example.com:99999/"}, "jwks_url", "not a valid URL"),
        ("jwt", {"jwks_url": "http://idp.example.com/#frag"}, "jwks_url", "fragment"),
        ("jwt", {"consumer_claim": "has space"}, "consumer_claim", "visible ASCII"),
        ("jwt", {"header_names": ["Authorization"]}, "header_names", "unknown key"),
        ("basic_auth", {"realm": 'a"b'}, "realm", "not valid"),
        ("basic_auth", {"realm": ""}, "realm", "not valid"),
        ("basic_auth", {"realm": "a\r\nb"}, "realm", "not valid"),
        ("forward_auth", {}, "url", "is required"),
        ("forward_auth", {"url": "auth.internal/check"}, "url", "http:// or https://"),
        ("forward_auth", {"url": "http://169.254.169.254/"}, "url", "link-local or cloud metadata"),
        ("forward_auth", {"url": "http://auth.internal/check", "timeout": 0}, "timeout", "greater than 0"),
        ("forward_auth", {"url": "http://auth.internal/check", "timeout": 61}, "timeout", "at most 60"),
        (
            "forward_auth",
            {"url": "http://a.internal/", "request_headers": ["Transfer-Encoding"]},
            "request_headers[0]",
            "hop-by-hop",
        ),
        (
            "forward_auth",
            {"url": "http://a.internal/", "response_headers": ["X-Consumer-Username"]},
            "response_headers[0]",
            "written by the gateway",
        ),
        (
            "forward_auth",
            {"url": "http://a.internal/", "response_headers": ["x_consumer_groups"]},
            "response_headers[0]",
            "written by the gateway",
        ),
        (
            "forward_auth",
            {"url": "http://a.internal/", "response_headers": ["X-Forwarded-For"]},
            "response_headers[0]",
            "written by the gateway",
        ),
        ("forward_auth", {"url": "http://a.internal/", "response_headers": ["Host"]}, "response_headers[0]", "Host"),
        ("forward_auth", {"url": "http://a.internal/", "anonymous": "guest"}, "anonymous", "unknown key"),
        ("acl", {}, "", "exactly one of allow or deny"),
        ("acl", {"allow": ["a"], "deny": ["b"]}, "", "exactly one of allow or deny"),
        ("acl", {"allow": ["a b"]}, "allow[0]", "not valid"),
        ("acl", None, "", "must be a mapping"),
    ],
)
def test_a_bad_auth_plugin_value_is_refused_with_its_path(name: str, config: Any, path: str, words: str) -> None:
    canonical, problems = plugin(name, config)
    where = f"endpoints[0].plugins.{name}" + (f".{path}" if path else "")
    assert canonical is None
    assert words in problems.get(where, ""), problems


@pytest.mark.parametrize(
    ("name", "config", "path"),
    [
        ("key_auth", {"key_names": ["a\x00"]}, "key_names[0]"),
        ("key_auth", {"key_names": ["\ud800"]}, "key_names[0]"),
        ("key_auth", {"key_names": ["k" * 10_000]}, "key_names[0]"),
        ("key_auth", {"key_names": [f"k{i}" for i in range(17)]}, "key_names"),
        ("key_auth", {"anonymous": "guest\x00"}, "anonymous"),
        ("jwt", {"issuers": ["\x00"]}, "issuers[0]"),
        ("jwt", {"audiences": ["\udcff"]}, "audiences[0]"),
        ("jwt", {"issuers": ["i" * 10_000]}, "issuers[0]"),
        ("jwt", {"jwks_url": "http://idp.example.com/\x00"}, "jwks_url"),
        ("jwt", {"jwks_url": "http://idp.example.com/\ud800"}, "jwks_url"),
        ("jwt", {"jwks_url": "http://idp.example.com/" + "a" * 10_000}, "jwks_url"),
        ("jwt", {"jwks_url": "http://idp.example.com/a\r\nb"}, "jwks_url"),
        ("jwt", {"consumer_claim": "c" * 10_000}, "consumer_claim"),
        ("basic_auth", {"realm": "r\x00"}, "realm"),
        ("basic_auth", {"realm": "r" * 10_000}, "realm"),
        ("forward_auth", {"url": "http://a.internal/\x00"}, "url"),
        ("forward_auth", {"url": "http://a.internal/", "request_headers": ["X-\ud800"]}, "request_headers[0]"),
        ("acl", {"allow": ["g\x00"]}, "allow[0]"),
        ("acl", {"deny": ["g"] * 10_000}, "deny"),
    ],
)
def test_hostile_auth_plugin_values_are_refused_with_their_path(name: str, config: Any, path: str) -> None:
    canonical, problems = plugin(name, config)
    assert canonical is None
    assert f"endpoints[0].plugins.{name}.{path}" in problems, problems
    for message in problems.values():
        assert "\x00" not in message and "\r" not in message and "\n" not in message
        assert len(message) < 1000
        message.encode("utf-8")


# --- rules across the document --------------------------------------------------------------------


def test_acl_without_an_authentication_plugin_is_refused_naming_the_endpoint() -> None:
    _, problems = validate(document([], plugins={"acl": {"allow": ["partners"]}}))
    assert "acl needs an authentication plugin" in problems["endpoints[0].plugins.acl"]
    _, problems = validate(document([], global_plugins={"acl": {"allow": ["partners"]}}))
    assert "the document's acl: acl needs an authentication plugin" in problems["endpoints[0]"]
    _, problems = validate(
        document([], global_plugins={"acl": {"allow": ["p"]}, "jwt": {}}, plugins={"jwt": {"enabled": False}})
    )
    assert "acl needs an authentication plugin" in problems["endpoints[0]"]


@pytest.mark.parametrize("auth", AUTHENTICATION_PLUGINS)
def test_acl_with_any_authentication_plugin_is_accepted_wherever_either_is_set(auth: str) -> None:
    config = {"url": "http://auth.internal/check"} if auth == "forward_auth" else {}
    _, problems = validate(document([], global_plugins={auth: config}, plugins={"acl": {"allow": ["partners"]}}))
    assert problems == {}
    _, problems = validate(document([], global_plugins={"acl": {"deny": ["banned"]}}, plugins={auth: config}))
    assert problems == {}
    # a global acl with no endpoint to run it breaks nothing
    data = {"format_version": 2, "plugins": {"acl": {"allow": ["p"]}}, "endpoints": []}
    assert validate(data)[1] == {}


def test_anonymous_must_name_a_consumer_of_the_document() -> None:
    _, problems = validate(
        document(
            [consumer("guest")],
            global_plugins={"jwt": {"anonymous": "nobody"}},
            plugins={"key_auth": {"anonymous": "ghost"}},
        )
    )
    assert problems == {
        "endpoints[0].plugins": (
            "the authentication plugins name different anonymous consumers (jwt: nobody, key_auth: ghost); name one"
        ),
        "plugins.jwt.anonymous": "names no consumer: 'nobody' is not the username of a consumer of the document",
        "endpoints[0].plugins.key_auth.anonymous": (
            "names no consumer: 'ghost' is not the username of a consumer of the document"
        ),
    }
    _, problems = validate(document(None, plugins={"basic_auth": {"anonymous": "guest"}}))
    assert "names no consumer" in problems["endpoints[0].plugins.basic_auth.anonymous"]


def test_an_endpoints_authentication_plugins_agree_on_the_anonymous_consumer() -> None:
    consumers = [consumer("guest"), consumer("visitor")]
    _, problems = validate(
        document(
            consumers, global_plugins={"jwt": {"anonymous": "visitor"}}, plugins={"key_auth": {"anonymous": "guest"}}
        )
    )
    assert problems == {
        "endpoints[0].plugins": (
            "the authentication plugins name different anonymous consumers (jwt: visitor, key_auth: guest); name one"
        )
    }
    _, problems = validate(
        document(
            consumers, global_plugins={"jwt": {"anonymous": "guest"}}, plugins={"key_auth": {"anonymous": "guest"}}
        )
    )
    assert problems == {}
    _, problems = validate(
        document(consumers, global_plugins={"jwt": {"anonymous": "visitor"}}, plugins={"key_auth": {}})
    )
    assert problems == {}


def test_a_broken_consumer_list_does_not_also_report_every_anonymous() -> None:
    _, problems = validate(
        document([consumer("guest"), consumer("guest")], plugins={"key_auth": {"anonymous": "guest"}})
    )
    assert list(problems) == ["consumers[1].username"]


def test_every_problem_in_a_yaml_file_is_reported_with_its_line() -> None:
    text = """\
format_version: 2
consumers:
  - username: mobile-app
    key_auth: [{key: hunter2, label: a}]
    jwt:
      - {issuer: mobile, algorithm: HS256, secret: hunter2}
plugins:
  acl: {allow: [partners]}
endpoints:
  - name: orders
    version: v1
    targets: [{url: "http://127.0.0.1:8010"}]
    plugins:
      key_auth: {anonymous: nobody}
      forward_auth: {url: "http://169.254.169.254/"}
"""
    result = load_document(text, max_format_version=2)
    found = {problem.path: problem.line for problem in result.problems}
    assert found == {
        "consumers[0].key_auth[0].key": 4,
        "consumers[0].jwt[0].secret": 6,
        "endpoints[0].plugins.forward_auth.url": 15,
    }
    assert all("hunter2" not in str(problem) for problem in result.problems)
