"""The consumers compiled into a snapshot: the authentication plugins' lookups, and secrets resolved
from the node's environment (a missing variable refuses the snapshot, naming it)."""

from __future__ import annotations

import hashlib

import pytest

from configdoc.consumers import hash_key
from dataplane.snapshot import SnapshotError, compile_document, load_document_text

DOCUMENT = """
format_version: 2
consumers:
  - username: mobile-app
    custom_id: crm-1042
    groups: [partners, beta]
    key_auth: [{key_sha256: "KEY_SHA256", label: "2026-q4"}]
    jwt: [{issuer: mobile, algorithm: HS256, secret: {env: MOBILE_JWT_SECRET}}]
endpoints:
  - name: orders
    version: v1
    targets: [{url: "http://127.0.0.1:9/"}]
""".replace("KEY_SHA256", hash_key("s3cret-key"))


def test_a_key_is_found_by_its_digest_and_the_upstream_headers_name_the_consumer() -> None:
    snapshot = compile_document(load_document_text(DOCUMENT), environ={"MOBILE_JWT_SECRET": "shh"})

    consumer, label = snapshot.consumers.by_key_sha256[hashlib.sha256(b"s3cret-key").digest()]
    assert (consumer.username, label) == ("mobile-app", "2026-q4")
    assert consumer.upstream_headers == [
        (b"x-consumer-username", b"mobile-app"),
        (b"x-consumer-custom-id", b"crm-1042"),
        (b"x-consumer-groups", b"beta, partners"),
    ]
    assert hashlib.sha256(b"another key").digest() not in snapshot.consumers.by_key_sha256
    credential = snapshot.consumers.jwt_by_issuer["mobile"]
    assert (credential.algorithm, credential.key, credential.consumer) == ("HS256", b"shh", consumer)


def test_a_secret_whose_variable_is_not_set_refuses_the_snapshot_naming_it() -> None:
    with pytest.raises(SnapshotError) as refused:
        compile_document(load_document_text(DOCUMENT), environ={})

    assert "MOBILE_JWT_SECRET" in str(refused.value)
    assert "consumers[mobile-app].jwt[mobile].secret" in str(refused.value)


def test_a_changed_secret_recompiles_the_endpoints_rather_than_reusing_them() -> None:
    document = load_document_text(DOCUMENT)
    first = compile_document(document, environ={"MOBILE_JWT_SECRET": "one"})
    same = compile_document(document, environ={"MOBILE_JWT_SECRET": "one"}, previous=first)
    rotated = compile_document(document, environ={"MOBILE_JWT_SECRET": "two"}, previous=first)

    assert same.endpoints["orders:v1"] is first.endpoints["orders:v1"]
    assert rotated.endpoints["orders:v1"] is not first.endpoints["orders:v1"]
    assert rotated.consumers.jwt_by_issuer["mobile"].key == b"two"
