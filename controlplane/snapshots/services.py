"""The config document as a whole: import, export, revision diff and rollback (ARCHITECTURE §3).

`config_import` applies a document through one `config_write`: one revision, one audit event per
changed object, all or nothing. It writes rows the way the per-object services do (it reuses their
helpers for rows, targets, default versions and route keys) but in one transaction, because a
document is one intent: importing it halfway would leave a config nobody wrote.

Objects are matched by key (`name:version`, policy name). Nothing is deleted unless `prune`. A dry
run does the whole import, collects the plan, and rolls back, so it reports exactly what a real run
would do, including conflicts with rows the document does not name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from configdoc import LATEST_FORMAT_VERSION, Problem, canonical_json, endpoint_key, validate_document
from configdoc.plugins import normalize_plugins
from controlplane.breakers import services as breaker_services
from controlplane.breakers.models import BreakerPolicy
from controlplane.consumers import services as consumer_services
from controlplane.consumers.models import Consumer
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.core.models import AuditEvent
from controlplane.core.revisions import (
    BREAKER_POLICY,
    CONSUMER,
    ENDPOINT,
    HEALTH_CHECK,
    PLUGINS,
    ChangeSet,
    check_if_match,
    config_write,
    current_document_bytes,
    revision_document_bytes,
)
from controlplane.routing import services as routing_services
from controlplane.routing.models import Endpoint, Target

from .diff import ObjectChange, diff_objects, document_objects, shown_changes
from .models import DocumentDefaults

DEFAULT_POLICY = "default"
# How often (in endpoints written) a long import reports progress.
PROGRESS_EVERY = 500
# Rows per INSERT when an import creates endpoints and targets in bulk.
BULK_BATCH = 1000

Progress = Callable[[int, int], None]


@dataclass
class ImportPlan:
    """What an import changed (or, for a dry run, would change), object by object, field by field."""

    changes: list[ObjectChange] = field(default_factory=list)
    dry_run: bool = False
    prune: bool = False
    revision: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "delete": 0}
        for change in self.changes:
            out[change.action] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "prune": self.prune,
            "revision": self.revision,
            "summary": self.counts(),
            "changes": [c.as_dict() for c in self.changes],
        }

    def as_text(self) -> str:
        lines = [line for change in self.changes for line in change.lines()]
        counts = self.counts()
        verb = "would" if self.dry_run else "did"
        tail = f"{verb} create {counts['create']}, update {counts['update']}, delete {counts['delete']}"
        if not self.changes:
            tail = "no changes"
        elif self.revision is not None:
            tail += f" (revision {self.revision})"
        return "\n".join([*lines, tail]) + "\n"


class _DryRun(Exception):
    """Raised inside the write to roll a dry run back after its plan is known."""


def validated(document: Any, *, lines: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The canonical form of `document`, or ConfigValidationError listing every problem."""
    canonical, problems = validate_document(
        document,
        allow_link_local=settings.GATEWAY_ALLOW_LINK_LOCAL_TARGETS,
        lines=lines,
        max_format_version=LATEST_FORMAT_VERSION,
    )
    if problems:
        raise ConfigValidationError(problems)
    return canonical


def config_export() -> dict[str, Any]:
    """The live document, canonical and sparse. It holds no secrets: the document has none."""
    document: dict[str, Any] = json.loads(current_document_bytes())
    return document


def config_import(
    *,
    document: Any,
    actor: Actor,
    prune: bool = False,
    dry_run: bool = False,
    summary: str | None = None,
    request_id: str = "",
    progress: Progress | None = None,
) -> ImportPlan:
    """Make the database match `document` (every object it names; with `prune`, only those)."""
    wanted = validated(document)
    plan = ImportPlan(dry_run=dry_run, prune=prune)
    summary = summary or f"import config ({'prune' if prune else 'merge'})"
    try:
        with config_write(actor=actor, summary=summary, request_id=request_id) as changes:
            _apply_document(wanted, changes, prune=prune, progress=progress)
            plan.changes = [
                ObjectChange(c.kind, c.key, c.before, c.after, shown_changes(c.kind, c.before, c.after))
                for c in changes.changes
            ]
            if dry_run:
                raise _DryRun
    except _DryRun:
        return plan
    plan.revision = changes.revision.number if changes.revision is not None else None
    return plan


def _apply_document(wanted: dict[str, Any], changes: ChangeSet, *, prune: bool, progress: Progress | None) -> None:
    policies = {p["name"]: p for p in wanted["breaker_policies"]}
    endpoints = {endpoint_key(e["name"], e["version"]): e for e in wanted["endpoints"]}
    names = {e["name"] for e in wanted["endpoints"]}

    _apply_health_check(wanted.get("health_check") or None, changes)
    _apply_plugins(wanted.get("plugins") or {}, changes)
    existing_policies = {p.name: p for p in BreakerPolicy.objects.select_for_update()}
    existing = {e.key: e for e in Endpoint.objects.select_for_update().select_related("breaker_policy")}
    endpoint: Endpoint | None  # each step's loop variable; step 4 looks endpoints up, and some are new

    # 1. Prune first, so what goes frees its route keys and default flags for what comes.
    if prune:
        for key, endpoint in list(existing.items()):
            if key not in endpoints:
                changes.record(ENDPOINT, key, before=endpoint.document, after=None)
                endpoint.delete()
                del existing[key]

    # 2. Clear default flags the document moves away, before any is set: at most one default per
    #    name is a database constraint, checked row by row.
    touched: dict[int, Endpoint] = {}
    for key, endpoint in existing.items():
        spec = endpoints.get(key)
        should_clear = (spec is not None and not spec["default"]) or (spec is None and endpoint.name in names)
        if endpoint.is_default and should_clear:
            routing_services._set_default(endpoint, False, changes)
            touched[endpoint.pk] = endpoint

    # 3. Policies before the endpoints that use them.
    for name, spec in policies.items():
        policy = existing_policies.get(name)
        if policy is not None and policy.document == spec:
            continue
        before = policy.document if policy is not None else None
        policy = policy or BreakerPolicy()
        breaker_services._apply(policy, dict(spec))
        policy.save()
        existing_policies[name] = policy
        changes.record(BREAKER_POLICY, name, before=before, after=spec)

    # 4. Endpoints, then their route keys all at once (a default moving between versions swaps keys).
    #    New endpoints and their targets are inserted in bulk: a few statements for any number of them
    #    rather than four per endpoint (bench/api_scale.py imports 10,000).
    created: list[Endpoint] = []
    for done, (key, spec) in enumerate(endpoints.items(), start=1):
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done, len(endpoints))
        endpoint = existing.get(key)
        if endpoint is not None and endpoint.document == spec:
            continue
        before = endpoint.document if endpoint is not None else None
        policy = existing_policies[spec.get("breaker_policy", DEFAULT_POLICY)]
        changes.record(ENDPOINT, key, before=before, after=spec)
        if endpoint is None:
            endpoint = Endpoint()
            routing_services._apply(endpoint, dict(spec), policy)
            created.append(endpoint)
            continue
        routing_services._apply(endpoint, dict(spec), policy)
        endpoint.save()
        routing_services._sync_targets(endpoint, spec)
        touched[endpoint.pk] = endpoint
    if created:
        Endpoint.objects.bulk_create(created, batch_size=BULK_BATCH)
        targets = [
            Target(endpoint=endpoint, url=t["url"], weight=t.get("weight", 100), enabled=t.get("enabled", True))
            for endpoint in created
            for t in endpoint.document["targets"]
        ]
        Target.objects.bulk_create(targets, batch_size=BULK_BATCH)
        touched.update((endpoint.pk, endpoint) for endpoint in created)
    if touched:
        routing_services._sync_route_keys(touched.values())
        # A merge may move a default away from a version that splits (§12): the document alone was valid.
        routing_services.check_traffic_splits({endpoint.name for endpoint in touched.values()})

    # 5. Consumers, their identities claimed all at once (a key hash may move between two of them).
    _apply_consumers({c["username"]: c for c in wanted.get("consumers") or []}, changes, prune=prune)

    # 6. Policies nothing names any more (their endpoints are gone or moved by now).
    if prune:
        for name, policy in existing_policies.items():
            if name not in policies and name != DEFAULT_POLICY:
                changes.record(BREAKER_POLICY, name, before=policy.document, after=None)
                policy.delete()


def _apply_consumers(wanted: dict[str, dict[str, Any]], changes: ChangeSet, *, prune: bool) -> None:
    """The document's consumers (canonical, hashes and env references only), matched by username.

    The whole document was validated, so every key hash, issuer and basic-auth username is unique
    within it; `claim_identities` refuses one still held by a consumer the import leaves alone."""
    existing = {c.username: c for c in Consumer.objects.select_for_update()}
    if prune:
        for username, consumer in list(existing.items()):
            if username not in wanted:
                changes.record(CONSUMER, username, before=consumer.document, after=None)
                consumer.delete()
                del existing[username]
    touched: list[Consumer] = []
    for username, spec in wanted.items():
        found = existing.get(username)
        if found is not None and found.document == spec:
            continue
        before = found.document if found is not None else None
        row = found or Consumer()
        consumer_services.apply(row, dict(spec))
        row.save()
        touched.append(row)
        changes.record(CONSUMER, username, before=before, after=spec)
    if touched:
        consumer_services.claim_identities(touched)


def _apply_health_check(wanted: dict[str, Any] | None, changes: ChangeSet) -> None:
    """The document's own health_check defaults: recorded as one object, absent when empty."""
    row = DocumentDefaults.objects.select_for_update().filter(pk=1).first()
    current = (row.health_check or None) if row is not None else None
    if current == wanted:
        return
    row = row or DocumentDefaults(pk=1)
    row.health_check = wanted or {}
    row.canonical = canonical_json(wanted).decode("utf-8") if wanted else ""
    row.save()
    changes.record(HEALTH_CHECK, HEALTH_CHECK, before=current, after=wanted)


def _apply_plugins(wanted: dict[str, Any], changes: ChangeSet) -> DocumentDefaults:
    """The document's global plugins (canonical): recorded as one object, `{}` when none."""
    row = DocumentDefaults.objects.select_for_update().filter(pk=1).first() or DocumentDefaults(pk=1)
    current = dict(row.plugins or {})
    if current != wanted:
        row.plugins = wanted
        row.plugins_canonical = canonical_json(wanted).decode("utf-8") if wanted else ""
        row.save()
        changes.record(PLUGINS, PLUGINS, before=current, after=wanted)
    return row


# --- the document's global plugins (§11) ------------------------------------------------------------


def plugins_read() -> tuple[dict[str, Any], str]:
    """The document's global plugins (canonical sparse) and their canonical text (for the ETag)."""
    row = DocumentDefaults.objects.filter(pk=1).values_list("plugins", "plugins_canonical").first()
    plugins, text = row if row is not None else ({}, "")
    return dict(plugins or {}), text or "{}"


def plugins_update(
    *,
    data: Any,
    actor: Actor,
    partial: bool = False,
    request_id: str = "",
    if_match: str | None = None,
) -> dict[str, Any]:
    """Replace (PUT) or merge by plugin name (PATCH: a name given replaces that plugin's config wholly,
    `null` removes it) the document's global plugins. One revision and one `plugins.update` audit event
    when they change; validated by configdoc (problems name `plugins.<name>.<field>`)."""
    if not isinstance(data, Mapping):
        raise ConfigValidationError([Problem("plugins", "must be a mapping of plugin name to config")])
    with config_write(actor=actor, summary="update global plugins", request_id=request_id) as changes:
        # The counter lock is held: no other config write runs until this one commits, so the merge
        # below builds on the row as it is, and concurrent PATCHes apply one after the other.
        row = DocumentDefaults.objects.select_for_update().filter(pk=1).first()
        current = dict(row.plugins or {}) if row is not None else {}
        check_if_match(canonical_json(current).decode("utf-8"), if_match)
        if partial:
            merged = {**current, **data}
            merged = {name: config for name, config in merged.items() if not (name in data and data[name] is None)}
        else:
            merged = dict(data)
        problems: list[Problem] = []
        wanted = normalize_plugins(merged, "plugins", problems)
        if problems or wanted is None:
            raise ConfigValidationError(problems)
        consumer_services.check_anonymous(wanted, "plugins")
        _apply_plugins(wanted, changes)
    return wanted


# --- revisions -------------------------------------------------------------------------------------


def revision_document(number: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(revision_document_bytes(number))
    return document


def revision_diff(*, from_number: int, to_number: int) -> list[ObjectChange]:
    """Every object that differs between two revisions' documents, field by field."""
    return diff_objects(
        document_objects(revision_document(from_number)), document_objects(revision_document(to_number))
    )


def revision_rollback(*, number: int, actor: Actor, request_id: str = "") -> ImportPlan:
    """Apply revision `number`'s document as a new revision (with prune), audited as a rollback.

    Only the document is rolled back: operational state (health, breaker overrides) is not part of
    it and is left alone.
    """
    document = revision_document(number)
    with transaction.atomic():
        plan = config_import(
            document=document,
            actor=actor,
            prune=True,
            summary=f"rollback to revision {number}",
            request_id=request_id,
        )
        AuditEvent.objects.create(
            actor_id=actor.user_id,
            actor_label=actor.label,
            action="config.rollback",
            object_type="revision",
            object_key=str(number),
            before=None,
            after={"revision": plan.revision, "changes": plan.counts()},
            request_id=request_id,
            revision_number=plan.revision,
        )
    return plan
