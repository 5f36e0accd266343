"""Revisions and audit events: one transaction, gapless numbers, byte-for-byte documents."""

from __future__ import annotations

import threading
import zlib
from hashlib import sha256
from typing import Any

import pytest
from django.db import connection

from configdoc import assemble_document, canonical_json
from controlplane.breakers.models import BreakerPolicy
from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.core.revisions import current_document_bytes, latest_revision, revision_document_bytes
from controlplane.routing.models import Endpoint, Target
from controlplane.routing.services import endpoint_create, endpoint_delete, endpoint_update
from tests.conftest import endpoint_body

ACTOR = Actor.command("test")
pytestmark = pytest.mark.django_db


def test_a_fresh_database_is_at_revision_one_with_the_default_policy() -> None:
    revision = latest_revision()
    assert revision is not None and revision.number == 1
    assert revision_document_bytes(1) == b'{"breaker_policies":[{"name":"default"}],"endpoints":[],"format_version":1}'
    assert list(BreakerPolicy.objects.values_list("name", flat=True)) == ["default"]


def test_a_write_makes_one_revision_and_one_audit_event_naming_the_object() -> None:
    endpoint_create(data=endpoint_body(), actor=ACTOR, request_id="req-1")
    revision = latest_revision()
    assert revision is not None and revision.number == 2
    assert revision.actor_label == "command:test"
    assert [(c["kind"], c["key"]) for c in revision.changes] == [("endpoint", "users:v1")]
    event = AuditEvent.objects.get(revision_number=2)
    assert (event.action, event.object_key, event.request_id, event.before) == (
        "endpoint.create",
        "users:v1",
        "req-1",
        None,
    )
    assert event.after["targets"] == [{"url": "http://127.0.0.1:8010/api"}]


def test_a_write_that_changes_nothing_makes_no_revision_and_no_audit_event() -> None:
    endpoint = endpoint_create(data=endpoint_body(methods=["GET", "POST"]), actor=ACTOR)
    events = AuditEvent.objects.count()
    endpoint_update(endpoint=endpoint, data=endpoint_body(methods=["POST", "GET", "get"], timeout=30), actor=ACTOR)
    assert latest_revision().number == 2  # type: ignore[union-attr]
    assert AuditEvent.objects.count() == events


def test_a_failing_write_leaves_nothing_behind() -> None:
    endpoint_create(data=endpoint_body("orders", paths=["/api/shop"]), actor=ACTOR)
    before = (
        Endpoint.objects.count(),
        Target.objects.count(),
        ConfigRevision.objects.count(),
        AuditEvent.objects.count(),
    )
    # The collision is found after the new endpoint's row and targets were written: all of it must go.
    with pytest.raises(ConfigValidationError) as caught:
        endpoint_create(data=endpoint_body("users", paths=["/api/shop"]), actor=ACTOR)
    [message] = caught.value.fields()["paths[0]"]
    assert message.startswith("route key /api/shop is already claimed by orders:v1, and no request could choose")
    after = (
        Endpoint.objects.count(),
        Target.objects.count(),
        ConfigRevision.objects.count(),
        AuditEvent.objects.count(),
    )
    assert after == before


def test_the_live_document_is_the_canonical_json_of_its_objects() -> None:
    breaker_policy_create(data={"name": "strict", "failure_threshold": 2}, actor=ACTOR)
    endpoint_create(data=endpoint_body("b-svc", tags=["x"], timeout=12.0), actor=ACTOR)
    endpoint_create(data=endpoint_body("a_svc", breaker_policy="strict"), actor=ACTOR)
    endpoint_create(data=endpoint_body("a-svc", "v10"), actor=ACTOR)
    endpoint_create(data=endpoint_body("a-svc", "v2"), actor=ACTOR)
    expected = canonical_json(
        assemble_document(
            breaker_policies=BreakerPolicy.objects.values_list("document", flat=True),
            endpoints=Endpoint.objects.values_list("document", flat=True),
        )
    )
    assert current_document_bytes() == expected
    assert latest_revision().config_sha256 == sha256(expected).hexdigest()  # type: ignore[union-attr]


def test_every_revision_rebuilds_byte_for_byte_across_checkpoints(settings: Any) -> None:
    settings.GATEWAY_REVISION_CHECKPOINT_EVERY = 3
    documents = {1: current_document_bytes()}
    endpoint = endpoint_create(data=endpoint_body(), actor=ACTOR)
    documents[2] = current_document_bytes()
    for timeout in (5, 6, 7, 8):
        endpoint = endpoint_update(endpoint=endpoint, data={"timeout": timeout}, partial=True, actor=ACTOR)
        documents[latest_revision().number] = current_document_bytes()  # type: ignore[union-attr]
    endpoint_delete(endpoint=endpoint, actor=ACTOR)
    documents[latest_revision().number] = current_document_bytes()  # type: ignore[union-attr]
    checkpoints = set(ConfigRevision.objects.filter(checkpoint__isnull=False).values_list("number", flat=True))
    assert checkpoints == {1, 4, 7}
    for number, document in documents.items():
        assert revision_document_bytes(number) == document
    stored = ConfigRevision.objects.get(number=4).checkpoint
    assert zlib.decompress(bytes(stored)) == documents[4]


def test_the_audit_log_refuses_updates_and_deletes() -> None:
    endpoint_create(data=endpoint_body(), actor=ACTOR)
    event = AuditEvent.objects.first()
    assert event is not None
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    from django.db import DatabaseError, transaction

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writes_get_gapless_numbers_in_commit_order() -> None:
    writers, per_writer = 6, 4
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(index: int) -> None:
        try:
            barrier.wait()
            for step in range(per_writer):
                endpoint_create(data=endpoint_body(f"svc{index}-{step}"), actor=ACTOR)
            # A write that fails must not burn a number.
            try:
                endpoint_create(data=endpoint_body(f"svc{index}-0"), actor=ACTOR)
            except Exception:  # noqa: S110 - the expected conflict
                pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    numbers = list(ConfigRevision.objects.order_by("number").values_list("number", flat=True))
    assert numbers == list(range(1, writers * per_writer + 2))
    # Commit order: each revision's document contains exactly one more endpoint than the one before.
    for number in numbers[1:]:
        assert revision_document_bytes(number).count(b'"name":"svc') == number - 1
    assert AuditEvent.objects.filter(action="endpoint.create").count() == writers * per_writer
