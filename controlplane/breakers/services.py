"""Writes to breaker policies. Each runs in core.revisions.config_write: one revision, audited."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from configdoc import Problem, canonical_json, normalize_breaker_policy
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, ConflictError
from controlplane.core.revisions import BREAKER_POLICY, check_if_match, config_write

from .models import BreakerPolicy

DEFAULT_POLICY = "default"


def _normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    document, problems = normalize_breaker_policy(data)
    if problems:
        raise ConfigValidationError(problems)
    return document


def _apply(policy: BreakerPolicy, document: dict[str, Any]) -> None:
    policy.name = document["name"]
    policy.document = document
    policy.canonical = canonical_json(document).decode("utf-8")


def breaker_policy_create(*, data: Mapping[str, Any], actor: Actor, request_id: str = "") -> BreakerPolicy:
    document = _normalize(data)
    name = document["name"]
    with config_write(actor=actor, summary=f"create breaker policy {name}", request_id=request_id) as changes:
        if BreakerPolicy.objects.filter(name=name).exists():
            raise ConflictError(f"breaker policy {name} already exists")
        policy = BreakerPolicy()
        _apply(policy, document)
        policy.save()
        changes.record(BREAKER_POLICY, name, before=None, after=document)
    return policy


def breaker_policy_update(
    *,
    policy: BreakerPolicy,
    data: Mapping[str, Any],
    actor: Actor,
    partial: bool = False,
    request_id: str = "",
    if_match: str | None = None,
) -> BreakerPolicy:
    with config_write(actor=actor, summary=f"update breaker policy {policy.name}", request_id=request_id) as changes:
        # Merge under the lock, so a PATCH never builds on a copy another write has replaced.
        policy = BreakerPolicy.objects.select_for_update().get(pk=policy.pk)
        check_if_match(policy.canonical, if_match)
        before = policy.document
        document = _normalize({**before, **data} if partial else {"name": policy.name, **data})
        if document["name"] != policy.name:
            # Endpoints refer to policies by name; a rename would silently rewrite all of them.
            raise ConfigValidationError(
                [Problem("name", "a breaker policy cannot be renamed; create a new one and move the endpoints to it")]
            )
        _apply(policy, document)
        policy.save()
        changes.record(BREAKER_POLICY, policy.name, before=before, after=document)
    return policy


def breaker_policy_delete(
    *, policy: BreakerPolicy, actor: Actor, request_id: str = "", if_match: str | None = None
) -> None:
    if policy.name == DEFAULT_POLICY:
        raise ConflictError("the default breaker policy cannot be deleted")
    with config_write(actor=actor, summary=f"delete breaker policy {policy.name}", request_id=request_id) as changes:
        policy = BreakerPolicy.objects.select_for_update().get(pk=policy.pk)
        check_if_match(policy.canonical, if_match)
        users = sorted(f"{name}:{version}" for name, version in policy.endpoints.values_list("name", "version"))
        if users:
            shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
            raise ConflictError(f"breaker policy {policy.name} is used by {shown}")
        changes.record(BREAKER_POLICY, policy.name, before=policy.document, after=None)
        policy.delete()
