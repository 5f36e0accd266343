"""Writes of the breakers app.

Breaker policies are configuration: each write runs in core.revisions.config_write (one revision, audited).
Overrides (force, reset) are operational state (ARCHITECTURE §2, §6): each is audited and bumps
`state_seq` in the same transaction, and makes no revision. Transitions come from the nodes' reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from configdoc import Problem, canonical_json, normalize_breaker_policy
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, ConflictError, NotFoundError
from controlplane.core.models import AuditEvent
from controlplane.core.revisions import BREAKER_POLICY, check_if_match, config_write
from controlplane.core.state import bump_state_seq
from controlplane.routing.models import Endpoint

from .models import BreakerOverride, BreakerPolicy, BreakerState, BreakerTransition, ForcedState

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


def _locked(policy: BreakerPolicy) -> BreakerPolicy:
    """`policy`'s row, locked and fresh; NotFoundError when a write that committed since it was read
    deleted it (policies are never renamed, so the row is the name)."""
    locked = BreakerPolicy.objects.select_for_update().filter(pk=policy.pk).first()
    if locked is None:
        raise NotFoundError(f"breaker policy {policy.name} does not exist")
    return locked


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
        policy = _locked(policy)
        check_if_match(policy.canonical, if_match)
        before = policy.document
        # A PUT (not partial) is the whole representation, `name` included, like an endpoint's: filling in
        # the name here made an empty PUT reset the policy to every default.
        document = _normalize({**before, **data} if partial else dict(data))
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
        policy = _locked(policy)
        check_if_match(policy.canonical, if_match)
        users = sorted(f"{name}:{version}" for name, version in policy.endpoints.values_list("name", "version"))
        if users:
            shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
            raise ConflictError(f"breaker policy {policy.name} is used by {shown}")
        changes.record(BREAKER_POLICY, policy.name, before=policy.document, after=None)
        policy.delete()


# --- overrides (operational state: audited, bump state_seq, no revision) ---------------------------------

MAX_FORCE_SECONDS = 30 * 24 * 3600  # a force meant to last longer than a month should be lifted by hand


def override_view(override: BreakerOverride | None, now: datetime | None = None) -> dict[str, Any]:
    """An override as the API and the audit log show it; an expired force shows as `expired`, not in force."""
    now = now or timezone.now()
    if override is None:
        return {
            "force": None,
            "until": None,
            "expired": False,
            "reset_generation": 0,
            "updated_by": "",
            "updated_at": None,
        }
    active = override.active_force(now)
    return {
        "force": active,
        "until": override.until if override.force else None,  # when an expired force ended
        "expired": bool(override.force) and active is None,
        "reset_generation": override.reset_generation,
        "updated_by": override.updated_by,
        "updated_at": override.updated_at,
    }


def _audit_state(override: BreakerOverride, now: datetime) -> dict[str, Any]:
    view = override_view(override, now)
    until = view["until"].isoformat() if view["until"] is not None else None
    return {"force": view["force"], "until": until, "reset_generation": view["reset_generation"]}


def _locked_override(endpoint: Endpoint) -> BreakerOverride:
    """The endpoint's override row, locked (made on first use).

    The endpoint's row is locked first, and must still carry the key the caller read it under: a delete
    committed since would otherwise take the override row with it (DoesNotExist), or leave a new one
    pointing nowhere (an IntegrityError at commit), and after a rename the client's key names nothing.
    Under that lock, two first writes on one endpoint no longer race to create the row.
    """
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk, name=endpoint.name, version=endpoint.version)
    if locked.only("pk").first() is None:
        raise NotFoundError(f"endpoint {endpoint.key} does not exist")
    BreakerOverride.objects.get_or_create(endpoint=endpoint)
    return BreakerOverride.objects.select_for_update().get(endpoint=endpoint)


def _record(endpoint: Endpoint, action: str, *, actor: Actor, before: Any, after: Any, request_id: str) -> None:
    AuditEvent.objects.create(
        actor_id=actor.user_id,
        actor_label=actor.label,
        action=action,
        object_type="breaker",
        object_key=endpoint.key,
        before=before,
        after=after,
        request_id=request_id,
    )


def breaker_force(
    *, endpoint: Endpoint, state: str | None, seconds: int | None, actor: Actor, request_id: str = ""
) -> BreakerOverride:
    """Force the endpoint's breaker `open` or `closed` on every node, for `seconds` or until lifted
    (None); `state=None` lifts the force. Audited (`breaker.force` / `breaker.lift`), bumps `state_seq`."""
    problems = []
    if state is not None and state not in ForcedState.values:
        problems.append(Problem("state", "must be open, closed or null"))
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_FORCE_SECONDS:
            problems.append(Problem("seconds", f"must be a whole number of seconds from 1 to {MAX_FORCE_SECONDS}"))
        elif state is None:
            problems.append(Problem("seconds", "an expiry needs a forced state"))
    if problems:
        raise ConfigValidationError(problems, "the breaker override is not valid")
    now = timezone.now()
    with transaction.atomic():
        override = _locked_override(endpoint)
        before = _audit_state(override, now)
        override.force = state or ""
        # Whole seconds, rounded up: the snapshot carries `until` as unix seconds, and a force never ends early.
        override.until = (
            datetime.fromtimestamp(math.ceil(now.timestamp() + seconds), tz=UTC) if seconds is not None else None
        )
        override.updated_at = now
        override.updated_by = actor.label
        override.save()
        action = "breaker.lift" if state is None else "breaker.force"
        _record(endpoint, action, actor=actor, before=before, after=_audit_state(override, now), request_id=request_id)
        bump_state_seq()
    return override


def breaker_reset(*, endpoint: Endpoint, actor: Actor, request_id: str = "") -> BreakerOverride:
    """Close the endpoint's breaker once on every node (its `reset_generation` grows by one); a force stays.
    Audited (`breaker.reset`), bumps `state_seq`."""
    now = timezone.now()
    with transaction.atomic():
        override = _locked_override(endpoint)
        before = _audit_state(override, now)
        override.reset_generation += 1
        override.updated_at = now
        override.updated_by = actor.label
        override.save()
        after = _audit_state(override, now)
        _record(endpoint, "breaker.reset", actor=actor, before=before, after=after, request_id=request_id)
        bump_state_seq()
    return override


def override_state(now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """The snapshot's `state.breakers`: `{key: {"force", "until" (unix seconds), "reset_generation"}}` for
    every endpoint with a force in effect at `now` or a reset; an expired force is left out."""
    now = now or timezone.now()
    rows = (
        BreakerOverride.objects.filter(~Q(force="") | Q(reset_generation__gt=0))
        .select_related("endpoint")
        .order_by("endpoint__name", "endpoint__version")
    )
    state: dict[str, dict[str, Any]] = {}
    for row in rows:
        force = row.active_force(now)
        if force is None and row.reset_generation == 0:
            continue
        until = int(row.until.timestamp()) if force is not None and row.until is not None else None
        state[row.endpoint.key] = {"force": force, "until": until, "reset_generation": row.reset_generation}
    return state


# --- transitions reported by the nodes ---------------------------------------------------------------

TRANSITIONS_KEPT = 1000  # per endpoint
TRANSITION_RETENTION_DAYS = 30
_STATES = set(BreakerState.values)


def _moment(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if not 0 < value < 32503680000:  # before the year 3000: anything else is a broken clock
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def breaker_transitions_record(*, node_id: str, boot_id: str, breakers: Mapping[str, Any]) -> int:
    """Store the transitions in a node's report (`breakers[key].transitions`, each `{from, to, at}`);
    returns how many were new. A report without transitions, an unknown endpoint or a malformed
    entry stores nothing (the report itself is valid without them)."""
    cutoff = timezone.now() - timedelta(days=TRANSITION_RETENTION_DAYS)
    wanted: dict[tuple[str, str], list[tuple[str, str, datetime]]] = {}
    for key, entry in breakers.items():
        transitions = entry.get("transitions") if isinstance(entry, Mapping) else None
        name, _, version = key.partition(":")
        if not isinstance(transitions, list) or not name or not version:
            continue
        for item in transitions:
            if not isinstance(item, Mapping):
                continue
            at = _moment(item.get("at"))
            source, target = item.get("from"), item.get("to")
            if at is None or at < cutoff or source not in _STATES or target not in _STATES:
                continue  # malformed, or already past retention (it would be stored and trimmed every report)
            wanted.setdefault((name, version), []).append((str(source), str(target), at))
    if not wanted:
        return 0
    match = Q()
    for name, version in wanted:
        match |= Q(name=name, version=version)
    endpoints = {(e.name, e.version): e.pk for e in Endpoint.objects.filter(match).only("pk", "name", "version")}
    rows = [
        BreakerTransition(
            endpoint_id=endpoints[pair], node_id=node_id, boot_id=boot_id, from_state=src, to_state=dst, at=at
        )
        for pair, items in wanted.items()
        if pair in endpoints
        for src, dst, at in items
    ]
    if not rows:
        return 0
    # Counted per node and boot: one node's reports come one at a time, so other nodes' inserts don't blur it.
    mine = BreakerTransition.objects.filter(endpoint_id__in=endpoints.values(), node_id=node_id, boot_id=boot_id)
    with transaction.atomic():
        before = mine.count()
        BreakerTransition.objects.bulk_create(rows, ignore_conflicts=True)
        added = mine.count() - before
        if added:
            _trim_transitions(endpoints.values())
    return max(added, 0)


def _trim_transitions(endpoint_ids: Any) -> None:
    """Keep each endpoint's history bounded: TRANSITION_RETENTION_DAYS, and at most TRANSITIONS_KEPT."""
    cutoff = timezone.now() - timedelta(days=TRANSITION_RETENTION_DAYS)
    for endpoint_id in endpoint_ids:
        history = BreakerTransition.objects.filter(endpoint_id=endpoint_id)
        history.filter(at__lt=cutoff).delete()
        newest_first = history.order_by("-at", "-id").values_list("at", "id")
        oldest_kept = list(newest_first[TRANSITIONS_KEPT - 1 : TRANSITIONS_KEPT])
        if oldest_kept:
            at, pk = oldest_kept[0]
            history.filter(Q(at__lt=at) | Q(at=at, id__lt=pk)).delete()


def breaker_transitions_purge(*, now: datetime | None = None) -> int:
    """Delete transitions older than TRANSITION_RETENTION_DAYS everywhere; returns how many (a beat task)."""
    cutoff = (now or timezone.now()) - timedelta(days=TRANSITION_RETENTION_DAYS)
    deleted, _ = BreakerTransition.objects.filter(at__lt=cutoff).delete()
    return deleted
