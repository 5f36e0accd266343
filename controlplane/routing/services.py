"""Writes to endpoints and their targets. Each runs in core.revisions.config_write: one revision, audited.

Default-version rules (ARCHITECTURE §2): the first version created for a name is its default;
`default: true` on another version moves it (the old one is cleared first, under row locks on that
name); deleting the default promotes the highest remaining version (dotted numeric compare, `v`
ignored). The database allows at most one default per name; these services keep it exactly one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

from configdoc import (
    LATEST_FORMAT_VERSION,
    Problem,
    canonical_json,
    endpoint_key,
    matchers_of,
    normalize_endpoint,
    route_keys,
    version_sort_key,
)
from configdoc.routes import ambiguous_pairs
from configdoc.splits import split_problems
from controlplane.breakers.models import BreakerPolicy
from controlplane.consumers.services import check_anonymous
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, ConflictError, NotFoundError
from controlplane.core.revisions import ENDPOINT, ChangeSet, check_if_match, config_write

from .models import Endpoint, RouteKey, Target

DEFAULT_POLICY = "default"


def _normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    # The latest format: an endpoint may use plugins and preserve_host (§11); the document it joins
    # becomes format 2 when one does (configdoc.required_format_version), else stays format 1.
    document, problems = normalize_endpoint(
        data, allow_link_local=settings.GATEWAY_ALLOW_LINK_LOCAL_TARGETS, format_version=LATEST_FORMAT_VERSION
    )
    if problems:
        raise ConfigValidationError(problems)
    return document


def _policy_for(document: Mapping[str, Any]) -> BreakerPolicy:
    name = document.get("breaker_policy", DEFAULT_POLICY)
    try:
        return BreakerPolicy.objects.get(name=name)
    except BreakerPolicy.DoesNotExist:
        raise ConfigValidationError([Problem("breaker_policy", f"unknown breaker policy {name!r}")]) from None


def _apply(endpoint: Endpoint, document: dict[str, Any], policy: BreakerPolicy) -> None:
    endpoint.name = document["name"]
    endpoint.version = document["version"]
    endpoint.is_default = bool(document["default"])
    endpoint.enabled = document.get("enabled", True)
    endpoint.description = document.get("description", "")
    endpoint.tags = document.get("tags", [])
    endpoint.plugins = document.get("plugins", {})
    endpoint.preserve_host = document.get("preserve_host", False)
    endpoint.breaker_policy = policy
    endpoint.document = document
    endpoint.canonical = canonical_json(document).decode("utf-8")


def _set_default(endpoint: Endpoint, value: bool, changes: ChangeSet) -> None:
    before = endpoint.document
    document = {**before, "default": value}
    endpoint.is_default = value
    endpoint.document = document
    endpoint.canonical = canonical_json(document).decode("utf-8")
    endpoint.save(update_fields=["is_default", "document", "canonical", "updated_at"])
    changes.record(ENDPOINT, endpoint.key, before=before, after=document)


def _clear_default(siblings: Iterable[Endpoint], changes: ChangeSet) -> list[Endpoint]:
    cleared = [s for s in siblings if s.is_default]
    for sibling in cleared:
        _set_default(sibling, False, changes)
    return cleared


def _promote_highest(siblings: list[Endpoint], changes: ChangeSet) -> list[Endpoint]:
    if not siblings or any(s.is_default for s in siblings):
        return []
    highest = max(siblings, key=lambda s: version_sort_key(s.version))
    _set_default(highest, True, changes)
    return [highest]


def _locked(endpoint: Endpoint) -> Endpoint:
    """`endpoint`'s row, locked and fresh, as long as it still has the key it was read under.

    The caller read `endpoint` before taking the locks. A write that committed meanwhile may have
    deleted it, or renamed it (same row, another key): either way the object the client addressed is
    gone, and acting on the renamed row would change an endpoint the client never named.
    """
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if locked is None or (locked.name, locked.version) != (endpoint.name, endpoint.version):
        raise NotFoundError(f"endpoint {endpoint.key} does not exist")
    return locked


def _sync_targets(endpoint: Endpoint, document: Mapping[str, Any]) -> None:
    """Replace the endpoint's targets with the document's, matched by url (so identity survives)."""
    wanted = {t["url"]: t for t in document["targets"]}
    existing = {t.url: t for t in endpoint.targets.all()}
    stale = [t.pk for url, t in existing.items() if url not in wanted]
    if stale:
        Target.objects.filter(pk__in=stale).delete()
    for url, spec in wanted.items():
        weight, enabled = spec.get("weight", 100), spec.get("enabled", True)
        target = existing.get(url)
        if target is None:
            Target.objects.create(endpoint=endpoint, url=url, weight=weight, enabled=enabled)
        elif (target.weight, target.enabled) != (weight, enabled):
            target.weight, target.enabled = weight, enabled
            target.save(update_fields=["weight", "enabled"])


def _problem_path(key: str, document: Mapping[str, Any]) -> str:
    paths = document.get("paths", [])
    if key in paths:
        return f"paths[{paths.index(key)}]"
    return "name" if key == f"/{document['name']}" else "version"


def _sync_route_keys(endpoints: Iterable[Endpoint]) -> None:
    """Claim the route keys of `endpoints`, refusing a key another endpoint holds unless §12's
    matchers (hosts, match_headers, methods) let every request choose between the two."""
    endpoints = list({e.pk: e for e in endpoints}.values())
    wanted: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        for key in route_keys(endpoint.document):
            claimants = wanted.setdefault(key, [])
            if endpoint not in claimants:  # an extra path may repeat one of the endpoint's own keys
                claimants.append(endpoint)
    holders: dict[str, list[Endpoint]] = {}
    others = RouteKey.objects.filter(key__in=list(wanted)).exclude(endpoint__in=endpoints).select_related("endpoint")
    for claim in others:
        holders.setdefault(claim.key, []).append(claim.endpoint)
    problems: list[Problem] = []
    for key, claimants in wanted.items():
        present = holders.get(key, [])
        members = [(e, matchers_of(e.document)) for e in [*present, *claimants]]
        if len(members) < 2:
            continue
        for first, second in ambiguous_pairs(members):
            if first in present:
                message = f"route key {key} is already claimed by {first.key}"
            else:
                message = f"route key {key} is claimed by both {first.key} and {second.key}"
            problems.append(
                Problem(
                    _problem_path(key, second.document),
                    f"{message}, and no request could choose between {first.key} and {second.key}: give them "
                    "different hosts or match_headers, or methods that do not overlap",
                )
            )
    if problems:
        raise ConfigValidationError(problems)
    RouteKey.objects.filter(endpoint__in=endpoints).delete()
    RouteKey.objects.bulk_create(
        RouteKey(key=key, endpoint=endpoint) for key, claimants in wanted.items() for endpoint in claimants
    )


def check_traffic_splits(names: Iterable[str], *, written: Endpoint | None = None) -> None:
    """§12's canary rules across the versions of `names`, as the database holds them inside the write
    (configdoc.splits.split_problems, the rule validate_document applies to a whole document): a split
    is on the default version and names another version that exists. Problems with `written` (the
    endpoint the request is about) keep their field paths; those with another version name it, so that
    deleting, renaming or un-defaulting a version a split depends on says which split is in the way."""
    rows = list(Endpoint.objects.filter(name__in=set(names)).order_by("name", "version"))
    if not any(row.document.get("traffic_split") for row in rows):
        return
    by_path = {f"row{row.pk}": row for row in rows}
    problems: list[Problem] = []
    for problem in split_problems((path, row.document) for path, row in by_path.items()):
        path, _, relative = problem.path.partition(".")
        row = by_path[path]
        if written is not None and row.pk == written.pk:
            problems.append(Problem(relative, problem.message))
        else:
            problems.append(Problem("", f"{row.key}'s {relative}: {problem.message}; change that split first"))
    if problems:
        raise ConfigValidationError(problems)


def endpoint_create(*, data: Mapping[str, Any], actor: Actor, request_id: str = "") -> Endpoint:
    document = _normalize(data)
    key = endpoint_key(document["name"], document["version"])
    with config_write(actor=actor, summary=f"create endpoint {key}", request_id=request_id) as changes:
        if Endpoint.objects.filter(name=document["name"], version=document["version"]).exists():
            raise ConflictError(f"endpoint {key} already exists")
        policy = _policy_for(document)
        check_anonymous(document.get("plugins"), "plugins")
        siblings = list(Endpoint.objects.select_for_update().filter(name=document["name"]))
        becomes_default = data.get("default") is True or not any(s.is_default for s in siblings)
        moved = _clear_default(siblings, changes) if becomes_default else []
        document["default"] = becomes_default
        endpoint = Endpoint()
        _apply(endpoint, document, policy)
        endpoint.save()
        _sync_targets(endpoint, document)
        _sync_route_keys([endpoint, *moved])
        check_traffic_splits([endpoint.name], written=endpoint)
        changes.record(ENDPOINT, key, before=None, after=document)
    return endpoint


def endpoint_update(
    *,
    endpoint: Endpoint,
    data: Mapping[str, Any],
    actor: Actor,
    partial: bool = False,
    request_id: str = "",
    if_match: str | None = None,
) -> Endpoint:
    """Replace (PUT) or merge into (PATCH, top-level keys) an endpoint; `targets` replaces the set.

    A PUT without `default` keeps the endpoint's default status. Renaming (a new name or version)
    keeps the endpoint's identity and targets.
    """
    with config_write(actor=actor, summary=f"update endpoint {endpoint.key}", request_id=request_id) as changes:
        # Merge under the lock, so a PATCH never builds on a copy another write has replaced.
        endpoint = _locked(endpoint)
        check_if_match(endpoint.canonical, if_match)
        before, old_key, old_name, was_default = endpoint.document, endpoint.key, endpoint.name, endpoint.is_default
        merged = {**before, **data} if partial else dict(data)
        merged.setdefault("default", was_default)
        document = _normalize(merged)
        new_key = endpoint_key(document["name"], document["version"])
        renamed, name_changed = new_key != old_key, document["name"] != old_name
        if renamed and Endpoint.objects.filter(name=document["name"], version=document["version"]).exists():
            raise ConflictError(f"endpoint {new_key} already exists")
        requested = data.get("default")
        new_siblings = list(Endpoint.objects.select_for_update().filter(name=document["name"]).exclude(pk=endpoint.pk))
        old_siblings = (
            list(Endpoint.objects.select_for_update().filter(name=old_name).exclude(pk=endpoint.pk))
            if name_changed
            else new_siblings
        )
        if requested is False and was_default and not name_changed and new_siblings:
            raise ConfigValidationError(
                [
                    Problem(
                        "default",
                        "a name always has a default version: set default: true on another version to move it",
                    )
                ]
            )
        if name_changed:
            becomes_default = requested is True or not any(s.is_default for s in new_siblings)
        else:
            becomes_default = was_default or requested is True
        affected: list[Endpoint] = [endpoint]
        if becomes_default and not (was_default and not name_changed):
            affected += _clear_default(new_siblings, changes)
        document["default"] = becomes_default
        policy = _policy_for(document)
        check_anonymous(document.get("plugins"), "plugins")
        _apply(endpoint, document, policy)
        endpoint.save()
        if name_changed and was_default:
            affected += _promote_highest(old_siblings, changes)
        _sync_targets(endpoint, document)
        _sync_route_keys(affected)
        check_traffic_splits({old_name, endpoint.name}, written=endpoint)
        if renamed:
            changes.record(ENDPOINT, old_key, before=before, after=None)
            changes.record(ENDPOINT, new_key, before=None, after=document)
        else:
            changes.record(ENDPOINT, new_key, before=before, after=document)
    return endpoint


def endpoint_delete(*, endpoint: Endpoint, actor: Actor, request_id: str = "", if_match: str | None = None) -> None:
    with config_write(actor=actor, summary=f"delete endpoint {endpoint.key}", request_id=request_id) as changes:
        endpoint = _locked(endpoint)
        check_if_match(endpoint.canonical, if_match)
        siblings = list(Endpoint.objects.select_for_update().filter(name=endpoint.name).exclude(pk=endpoint.pk))
        changes.record(ENDPOINT, endpoint.key, before=endpoint.document, after=None)
        was_default = endpoint.is_default
        name = endpoint.name
        endpoint.delete()
        if was_default:
            _sync_route_keys(_promote_highest(siblings, changes))
        check_traffic_splits([name])


def endpoints_set_enabled(*, endpoints: Iterable[Endpoint], enabled: bool, actor: Actor, request_id: str = "") -> int:
    """Enable or disable several endpoints as one write: one revision, one audit event per endpoint
    that changed. Answers how many changed."""
    ids = [endpoint.pk for endpoint in endpoints]
    verb = "enable" if enabled else "disable"
    with config_write(actor=actor, summary=f"{verb} {len(ids)} endpoint(s)", request_id=request_id) as changes:
        locked = Endpoint.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        changed = 0
        for endpoint in locked:
            if endpoint.enabled == enabled:
                continue
            before = endpoint.document
            document = _normalize({**before, "enabled": enabled})
            _apply(endpoint, document, endpoint.breaker_policy)
            endpoint.save(update_fields=["enabled", "document", "canonical", "updated_at"])
            changes.record(ENDPOINT, endpoint.key, before=before, after=document)
            changed += 1
    return changed
