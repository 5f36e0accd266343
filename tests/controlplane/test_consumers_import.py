"""Consumers through the document as a whole: import_config / export_config, revisions, diff and rollback
(ARCHITECTURE §11 "Control plane"): exports hold only hashes and {env:} references, the audit log and the
shown diffs hold neither, and what the control plane publishes is what configdoc accepts.
"""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from configdoc import validate_document
from configdoc.consumers import hash_key, make_password_hash
from controlplane.consumers.models import Consumer, ConsumerIdentity
from controlplane.consumers.services import consumer_create, consumer_key_create
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.core.revisions import current_document_bytes
from controlplane.snapshots.services import config_export, config_import, revision_diff, revision_rollback
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
ACTOR = Actor.command("test")
KEY = "a-client-key-nobody-should-ever-see-0123456789"
PASSWORD_HASH = make_password_hash("open-sesame", salt="saltsaltsalt", iterations=100_000)


def consumer(username: str = "mobile-app", **fields: Any) -> dict[str, Any]:
    return {"username": username, **fields}


def document(*consumers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format_version": 2, "endpoints": [endpoint_body()], "consumers": list(consumers), **extra}


FULL = consumer(
    custom_id="crm-1042",
    groups=["partners"],
    key_auth=[{"label": "2026-q4", "key_sha256": hash_key(KEY)}],
    jwt=[{"issuer": "mobile", "algorithm": "HS256", "secret": {"env": "MOBILE_JWT_SECRET"}}],
    basic_auth=[{"username": "mob", "password_hash": PASSWORD_HASH}],
)


def test_an_imported_document_exports_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump(document(FULL)))
    call_command("import_config", str(path), stdout=StringIO())
    out = StringIO()
    call_command("export_config", "--format", "json", stdout=out)
    exported = json.loads(out.getvalue())
    canonical, problems = validate_document(document(FULL), max_format_version=2)
    assert problems == [] and exported == canonical
    assert exported["consumers"][0]["key_auth"][0]["key_sha256"] == hash_key(KEY)
    again = tmp_path / "again.json"
    again.write_text(out.getvalue())
    count = ConfigRevision.objects.count()
    call_command("import_config", str(again), stdout=StringIO())
    assert ConfigRevision.objects.count() == count  # nothing changed
    assert ConsumerIdentity.objects.count() == 4  # custom_id, key hash, issuer, basic username


def test_an_export_holds_hashes_and_env_references_never_a_key_or_password() -> None:
    config_import(document=document(FULL), actor=ACTOR)
    created, label, key = consumer_key_create(consumer=Consumer.objects.get(), label="fresh", actor=ACTOR)
    text = json.dumps(config_export())
    assert key not in text and KEY not in text and "open-sesame" not in text
    assert hash_key(key) in text and '"env": "MOBILE_JWT_SECRET"' in text


def test_a_clear_key_or_password_in_an_import_is_refused_without_repeating_it() -> None:
    bad = consumer(key_auth=[{"label": "k", "key": KEY}], basic_auth=[{"username": "u", "password": "open-sesame"}])
    with pytest.raises(ConfigValidationError) as refused:
        config_import(document=document(bad), actor=ACTOR)
    paths = {p.path for p in refused.value.problems}
    assert {"consumers[0].key_auth[0].key", "consumers[0].basic_auth[0].password"} <= paths
    assert KEY not in str(refused.value) and "open-sesame" not in str(refused.value)
    assert not Consumer.objects.exists()


def test_an_import_cannot_claim_a_key_another_consumer_holds() -> None:
    config_import(document=document(FULL), actor=ACTOR)
    thief = consumer("thief", key_auth=[{"label": "x", "key_sha256": hash_key(KEY)}])
    with pytest.raises(ConfigValidationError) as refused:
        config_import(document=document(thief), actor=ACTOR)  # merge: mobile-app stays and holds the key
    assert [p.path for p in refused.value.problems] == ["key_auth[0].key_sha256"]
    assert hash_key(KEY) not in str(refused.value)
    config_import(document=document(thief), actor=ACTOR, prune=True)  # mobile-app goes: the key is free
    assert list(Consumer.objects.values_list("username", flat=True)) == ["thief"]


def test_prune_deletes_consumers_the_document_does_not_name() -> None:
    config_import(document=document(FULL, consumer("other")), actor=ACTOR)
    plan = config_import(document=document(consumer("other")), actor=ACTOR, prune=True)
    assert [(c.kind, c.key, c.action) for c in plan.changes] == [("consumer", "mobile-app", "delete")]
    assert not ConsumerIdentity.objects.exists()


def test_diff_and_rollback_include_consumers_and_the_shown_diff_holds_no_hash() -> None:
    config_import(document=document(), actor=ACTOR)
    first = ConfigRevision.objects.order_by("-number").first().number  # type: ignore[union-attr]
    config_import(document=document(FULL), actor=ACTOR)
    second = first + 1
    changes = revision_diff(from_number=first, to_number=second)
    assert [(c.kind, c.key, c.action) for c in changes] == [("consumer", "mobile-app", "create")]
    shown = json.dumps([c.as_dict() for c in changes]) + "\n".join(line for c in changes for line in c.lines())
    assert hash_key(KEY) not in shown and PASSWORD_HASH not in shown and "2026-q4" in shown
    revision_rollback(number=first, actor=ACTOR)
    assert not Consumer.objects.exists()
    revision_rollback(number=second, actor=ACTOR)
    assert Consumer.objects.get().document == validate_document(document(FULL), max_format_version=2)[0]["consumers"][0]


def test_a_hash_only_change_is_shown_without_either_hash() -> None:
    config_import(document=document(FULL), actor=ACTOR)
    rotated = {**FULL, "key_auth": [{"label": "2026-q4", "key_sha256": hash_key("another")}]}
    plan = config_import(document=document(rotated), actor=ACTOR)
    text = plan.as_text()
    assert "key_auth" in text and hash_key("another") not in text and hash_key(KEY) not in text


def test_the_audit_log_and_the_logs_never_hold_a_key_a_hash_or_a_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config_import(document=document(FULL), actor=ACTOR)
    created = consumer_create(
        data={"username": "web", "basic_auth": [{"username": "webu", "password": "pw-web-123"}]}, actor=ACTOR
    )
    _, _, key = consumer_key_create(consumer=created, label="k", actor=ACTOR)
    web_hash = Consumer.objects.get(username="web").document["basic_auth"][0]["password_hash"]
    audit = json.dumps(list(AuditEvent.objects.values("action", "before", "after", "object_key")))
    for secret in (key, hash_key(key), KEY, hash_key(KEY), PASSWORD_HASH, web_hash, "pw-web-123", "open-sesame"):
        assert secret not in audit
        assert secret not in caplog.text
    assert "consumer.create" in audit


def test_the_live_document_with_consumers_is_what_configdoc_accepts() -> None:
    config_import(document=document(FULL), actor=ACTOR)
    live = json.loads(current_document_bytes())
    canonical, problems = validate_document(live, max_format_version=2)
    assert problems == [] and canonical == live and live["format_version"] == 2


def test_import_config_rejects_a_format_1_document_with_consumers(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({**document(FULL), "format_version": 1}))
    with pytest.raises(CommandError):
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
