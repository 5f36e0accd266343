"""Importing and exporting the whole config document: service, management commands and API."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from configdoc import canonical_json, load_document
from controlplane.breakers.models import BreakerPolicy
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.core.revisions import current_document_bytes, latest_revision, revision_document_bytes
from controlplane.routing.models import Endpoint, RouteKey
from controlplane.routing.services import endpoint_create
from controlplane.snapshots.diff import UNSET
from controlplane.snapshots.services import config_export, config_import, revision_diff, revision_rollback
from tests.conftest import endpoint_body

ACTOR = Actor.command("test")
EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
pytestmark = pytest.mark.django_db


def document(*endpoints: dict[str, Any], policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"format_version": 1, "breaker_policies": policies or [], "endpoints": list(endpoints)}


def example() -> dict[str, Any]:
    return load_document((EXAMPLES / "gateway.yaml").read_bytes()).document


def revision_number() -> int:
    revision = latest_revision()
    assert revision is not None
    return revision.number


def empty_the_database() -> None:
    Endpoint.objects.all().delete()
    BreakerPolicy.objects.exclude(name="default").delete()


# --- the service -----------------------------------------------------------------------------------


def test_an_import_is_one_revision_with_one_audit_event_per_object() -> None:
    plan = config_import(document=example(), actor=ACTOR)
    assert plan.revision == 2 and revision_number() == 2
    assert plan.counts() == {"create": 4, "update": 0, "delete": 0}
    events = AuditEvent.objects.filter(revision_number=2)
    assert sorted(events.values_list("action", "object_key")) == [
        ("breaker_policy.create", "lenient"),
        ("endpoint.create", "catalog:v1"),
        ("endpoint.create", "users:v1"),
        ("endpoint.create", "users:v2"),
    ]
    assert json.loads(current_document_bytes()) == example()


def test_importing_the_same_document_twice_makes_no_change_and_no_revision() -> None:
    config_import(document=example(), actor=ACTOR)
    plan = config_import(document=example(), actor=ACTOR)
    assert (plan.changes, plan.revision) == ([], None)
    assert revision_number() == 2


def test_a_dry_run_shows_the_exact_field_change_and_changes_nothing() -> None:
    config_import(document=example(), actor=ACTOR)
    edited = example()
    edited["endpoints"][0]["timeout"] = 10
    before = current_document_bytes()
    plan = config_import(document=edited, actor=ACTOR, dry_run=True)
    [change] = plan.changes
    assert (change.kind, change.key, change.action) == ("endpoint", "catalog:v1", "update")
    assert [(f.path, f.after) for f in change.fields] == [("timeout", 10)]
    assert "~ endpoint catalog:v1\n    timeout: (unset) → 10\n" in plan.as_text()
    assert plan.as_text().endswith("would create 0, update 1, delete 0\n")
    assert current_document_bytes() == before and revision_number() == 2


def test_without_prune_nothing_is_deleted_and_with_prune_what_the_document_does_not_name_goes() -> None:
    config_import(document=example(), actor=ACTOR)
    only_catalog = {**example(), "endpoints": [e for e in example()["endpoints"] if e["name"] == "catalog"]}
    assert config_import(document=only_catalog, actor=ACTOR).changes == []
    assert Endpoint.objects.count() == 3
    plan = config_import(document=only_catalog, actor=ACTOR, prune=True)
    assert sorted((c.action, c.key) for c in plan.changes) == [("delete", "users:v1"), ("delete", "users:v2")]
    assert list(Endpoint.objects.values_list("name", flat=True)) == ["catalog"]
    plan = config_import(document=document(), actor=ACTOR, prune=True)
    assert sorted((c.kind, c.key) for c in plan.changes) == [("breaker_policy", "lenient"), ("endpoint", "catalog:v1")]
    assert list(BreakerPolicy.objects.values_list("name", flat=True)) == ["default"]


def test_an_import_moves_the_default_version_and_its_route_key() -> None:
    endpoint_create(data=endpoint_body(version="v1"), actor=ACTOR)
    v1 = endpoint_body(version="v1")
    v2 = endpoint_body(version="v2", default=True, targets=[{"url": "http://127.0.0.1:8011/api"}])
    plan = config_import(document=document(v1, v2), actor=ACTOR)
    assert sorted((c.action, c.key) for c in plan.changes) == [("create", "users:v2"), ("update", "users:v1")]
    assert RouteKey.objects.get(key="/users").endpoint.version == "v2"
    assert list(Endpoint.objects.filter(is_default=True).values_list("version", flat=True)) == ["v2"]


def test_a_merge_import_clears_the_default_of_a_version_the_document_does_not_name() -> None:
    endpoint_create(data=endpoint_body(version="v3"), actor=ACTOR)
    config_import(document=document(endpoint_body(version="v1")), actor=ACTOR)
    assert dict(Endpoint.objects.values_list("version", "is_default")) == {"v1": True, "v3": False}
    assert RouteKey.objects.get(key="/users").endpoint.version == "v1"


def test_a_failed_import_changes_nothing() -> None:
    endpoint_create(data=endpoint_body(name="orders", paths=["/shop"]), actor=ACTOR)
    before, number = current_document_bytes(), revision_number()
    clash = endpoint_body(name="shop", paths=["/orders"])  # claims /orders, held by orders:v1
    with pytest.raises(ConfigValidationError) as caught:
        config_import(document=document(endpoint_body(), clash), actor=ACTOR)
    assert "/orders" in str(caught.value)
    assert current_document_bytes() == before and revision_number() == number
    assert not Endpoint.objects.filter(name="users").exists()


def test_an_invalid_document_is_refused_with_every_problem() -> None:
    bad = document(
        endpoint_body(targets=[{"url": "ftp://127.0.0.1/"}]),
        endpoint_body(name="orders", colour="red"),
        endpoint_body(name="items", breaker_policy="nope"),
    )
    with pytest.raises(ConfigValidationError) as caught:
        config_import(document=bad, actor=ACTOR)
    assert {p.path for p in caught.value.problems} == {
        "endpoints[0].targets[0].url",
        "endpoints[1].colour",
        "endpoints[2].breaker_policy",
    }


def test_read_only_keys_are_refused_by_import() -> None:
    with pytest.raises(ConfigValidationError, match="read-only"):
        config_import(document=document(endpoint_body(id=3)), actor=ACTOR)


def test_an_exported_json_document_imports_back_over_the_api_without_change(operator_client: Any) -> None:
    config_import(document=example(), actor=ACTOR)
    exported = operator_client.get("/api/v1/config/export/?format=json").content
    response = operator_client.post("/api/v1/config/import/?prune=1", exported, content_type="application/json")
    assert response.json()["changes"] == [] and response.json()["revision"] is None


def test_a_seed_file_with_its_own_health_check_defaults_imports_them(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text((EXAMPLES / "seed-config.yaml").read_text().replace("interval: 30", "interval: 15"))
    call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert config_export()["health_check"] == {"interval": 15}


def test_document_health_check_defaults_are_stored_exported_revisioned_and_rolled_back() -> None:
    config_import(document={**document(), "health_check": {"interval": 15}}, actor=ACTOR)
    assert config_export()["health_check"] == {"interval": 15}
    event = AuditEvent.objects.get(revision_number=2)
    assert (event.action, event.before, event.after) == ("health_check.create", None, {"interval": 15})
    config_import(document={**document(), "health_check": {"interval": 20, "panic": True}}, actor=ACTOR)
    [change] = revision_diff(from_number=2, to_number=3)
    assert [(f.path, f.before, f.after) for f in change.fields] == [("interval", 15, 20), ("panic", UNSET, True)]
    again = config_import(document={**document(), "health_check": {"interval": 20, "panic": True}}, actor=ACTOR)
    assert again.changes == []
    revision_rollback(number=1, actor=ACTOR)
    assert "health_check" not in config_export()
    assert revision_document_bytes(3) == canonical_json(
        {**document(), "breaker_policies": [{"name": "default"}], "health_check": {"interval": 20, "panic": True}}
    )


def test_export_then_import_into_an_empty_database_then_export_gives_the_same_bytes() -> None:
    config_import(document=example(), actor=ACTOR)
    for fmt in ("yaml", "json"):
        out = StringIO()
        call_command("export_config", "--format", fmt, stdout=out)
        first = out.getvalue()
        empty_the_database()
        config_import(document=load_document(first).document, actor=ACTOR)
        again = StringIO()
        call_command("export_config", "--format", fmt, stdout=again)
        assert again.getvalue() == first


def test_exporting_twice_gives_identical_bytes_and_the_export_is_sparse() -> None:
    config_import(document=example(), actor=ACTOR)
    assert config_export() == config_export() == example()
    text = StringIO()
    call_command("export_config", stdout=text)
    assert "connect_timeout" not in text.getvalue() and "strip_path" not in text.getvalue()


def test_the_seed_example_imports_and_maps_disabled_and_health_check_path(tmp_path: Path) -> None:
    out, err = StringIO(), StringIO()
    call_command("import_config", str(EXAMPLES / "seed-config.yaml"), stdout=out, stderr=err)
    assert "did create 2" in out.getvalue() and "log_level" in err.getvalue()
    endpoint = Endpoint.objects.get(name="httpbin_get")
    assert endpoint.document["health_check"] == {"path": "/get"} and endpoint.enabled


# --- management commands ---------------------------------------------------------------------------


def test_import_config_dry_run_prints_the_field_diff_and_exits_cleanly(tmp_path: Path) -> None:
    config_import(document=example(), actor=ACTOR)
    edited = example()
    edited["endpoints"][1]["retries"] = {"attempts": 3}
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(edited))
    out = StringIO()
    call_command("import_config", str(path), "--dry-run", stdout=out, stderr=StringIO())
    assert (
        out.getvalue() == "~ endpoint users:v1\n    retries.attempts: (unset) → 3\nwould create 0, update 1, delete 0\n"
    )
    assert revision_number() == 2


def test_import_config_refuses_a_broken_file_listing_every_problem_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "format_version: 1\n"
        "endpoints:\n"
        "  - name: users\n"
        "    version: v1\n"
        "    targets: [{url: 'http://127.0.0.1:8010/'}]\n"
        "  - name: users\n"
        "    version: v1\n"
        "    targets: [{url: 'http://127.0.0.1:8011/'}]\n"
        "  - name: orders\n"
        "    version: v1\n"
        "    paths: [/users]\n"
        "    targets: [{url: 'http://127.0.0.1:8012/'}]\n"
        "colour: red\n"
    )
    with pytest.raises(CommandError) as caught:
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
    message = str(caught.value)
    assert "nothing changed" in message
    assert "endpoints[1].version (line 7): endpoint users:v1 is defined twice" in message
    assert "endpoints[2].paths (line 11): route key /users is claimed by both users:v1" in message
    assert "colour (line 13): unknown key" in message
    assert revision_number() == 1


def test_import_config_shows_progress_on_large_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controlplane.snapshots.services.PROGRESS_EVERY", 2)
    path = tmp_path / "many.json"
    path.write_text(json.dumps(document(*(endpoint_body(name=f"svc{i}") for i in range(5)))))
    err = StringIO()
    call_command("import_config", str(path), stdout=StringIO(), stderr=err)
    assert "5 endpoints and 1 breaker policies" in err.getvalue()
    assert "  2/5 endpoints\n  4/5 endpoints\n" in err.getvalue()


def test_import_config_refuses_an_alias_bomb(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        lines.append(f"{chr(97 + level)}: &{chr(97 + level)} [" + ",".join([f"*{chr(96 + level)}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines))
    with pytest.raises(CommandError, match="aliases"):
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())


def test_export_config_writes_a_file(tmp_path: Path) -> None:
    config_import(document=example(), actor=ACTOR)
    target = tmp_path / "out.json"
    call_command("export_config", "-o", str(target), "--format", "json")
    assert target.read_bytes() == current_document_bytes() + b"\n"


# --- API -------------------------------------------------------------------------------------------


def test_config_export_answers_yaml_or_json_to_readers(readonly_client: Any) -> None:
    config_import(document=example(), actor=ACTOR)
    response = readonly_client.get("/api/v1/config/export/?format=yaml")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    assert load_document(response.content).document == example()
    response = readonly_client.get("/api/v1/config/export/?format=json")
    assert response.content == current_document_bytes() + b"\n"
    assert readonly_client.get("/api/v1/config/export/?format=xml").status_code == 400


def test_config_export_and_import_need_a_token(client: Any) -> None:
    assert client.get("/api/v1/config/export/").status_code == 401
    assert client.post("/api/v1/config/import/", b"{}", content_type="application/json").status_code == 401


def test_config_import_needs_config_write(readonly_client: Any) -> None:
    response = readonly_client.post("/api/v1/config/import/", example(), format="json")
    assert response.status_code == 403
    assert revision_number() == 1


def test_config_import_takes_yaml_and_json_bodies_with_dry_run_and_prune(operator_client: Any) -> None:
    text = (EXAMPLES / "gateway.yaml").read_bytes()
    response = operator_client.post("/api/v1/config/import/?dry_run=1", text, content_type="application/yaml")
    assert response.status_code == 200, response.content
    assert response.json()["dry_run"] is True and response.json()["summary"]["create"] == 4
    assert revision_number() == 1
    response = operator_client.post("/api/v1/config/import/", text, content_type="application/yaml")
    assert response.json()["revision"] == 2
    assert AuditEvent.objects.filter(revision_number=2, actor_label="user:oscar").count() == 4
    response = operator_client.post("/api/v1/config/import/?prune=1", document(), format="json")
    assert response.json()["summary"] == {"create": 0, "update": 0, "delete": 4}


def test_config_import_answers_every_problem_with_its_line(operator_client: Any) -> None:
    body = b"format_version: 1\nendpoints:\n  - name: users\n    version: v1\n    targets: []\n    colour: red\n"
    response = operator_client.post("/api/v1/config/import/", body, content_type="application/yaml")
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "validation_error"
    assert {(p["path"], p["line"]) for p in data["problems"]} == {
        ("endpoints[0].targets", 5),
        ("endpoints[0].colour", 6),
    }
    assert revision_number() == 1


# --- revisions: diff and rollback ------------------------------------------------------------------


def test_revision_diff_shows_each_object_and_field_between_two_revisions(readonly_client: Any) -> None:
    config_import(document=example(), actor=ACTOR)
    edited = example()
    edited["endpoints"][0]["timeout"] = 10
    config_import(document=edited, actor=ACTOR)
    response = readonly_client.get("/api/v1/revisions/diff/?from=2&to=3")
    assert response.status_code == 200
    assert response.json()["changes"] == [
        {
            "kind": "endpoint",
            "key": "catalog:v1",
            "action": "update",
            "fields": [{"field": "timeout", "before": None, "after": 10}],
        }
    ]
    changes = readonly_client.get("/api/v1/revisions/diff/?from=1&to=3").json()["changes"]
    assert [(c["action"], c["key"]) for c in changes] == [
        ("create", "lenient"),
        ("create", "catalog:v1"),
        ("create", "users:v1"),
        ("create", "users:v2"),
    ]
    assert readonly_client.get("/api/v1/revisions/diff/?from=1&to=99").status_code == 404
    assert readonly_client.get("/api/v1/revisions/diff/?from=x&to=1").status_code == 400


def test_rollback_applies_the_old_document_as_a_new_audited_revision(operator_client: Any) -> None:
    config_import(document=example(), actor=ACTOR)
    edited = example()
    edited["endpoints"][0]["timeout"] = 10
    edited["endpoints"].append(endpoint_body(name="extra"))
    config_import(document=edited, actor=ACTOR)
    response = operator_client.post("/api/v1/revisions/2/rollback/")
    assert response.status_code == 200, response.content
    assert response.json()["revision"] == 4
    assert ConfigRevision.objects.get(number=4).summary == "rollback to revision 2"
    assert json.loads(current_document_bytes()) == example()
    assert AuditEvent.objects.filter(action="config.rollback", object_key="2", revision_number=4).exists()
    assert AuditEvent.objects.filter(action="endpoint.delete", object_key="extra:v1", revision_number=4).exists()


def test_rollback_needs_config_write_and_an_existing_revision(readonly_client: Any, operator_client: Any) -> None:
    assert readonly_client.post("/api/v1/revisions/1/rollback/").status_code == 403
    assert operator_client.post("/api/v1/revisions/99/rollback/").status_code == 404


def test_import_config_applies_a_format_2_document_with_its_plugins(tmp_path: Path) -> None:
    # The control plane stores plugins: importing a document that sets them keeps its policies too.
    path = tmp_path / "policies.yaml"
    path.write_text(
        "format_version: 2\n"
        "plugins: {cors: {origins: ['https://app.example.com']}}\n"
        "endpoints:\n"
        "  - name: orders\n"
        "    version: v1\n"
        "    targets: [{url: 'http://127.0.0.1:8012/'}]\n"
        "    plugins: {ip_restriction: {allow: [10.0.0.0/8]}}\n"
    )
    call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert Endpoint.objects.get(name="orders").plugins == {"ip_restriction": {"allow": ["10.0.0.0/8"]}}
    exported = config_export()
    assert exported["format_version"] == 2
    assert exported["plugins"] == {"cors": {"origins": ["https://app.example.com"]}}
