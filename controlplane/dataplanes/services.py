"""Writes of the dataplanes app: tokens (audited, no config revision), node status."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from controlplane.accounts.roles import DATAPLANE, DATAPLANE_SYNC, has_gateway_perm
from controlplane.breakers.services import breaker_transitions_record
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent
from controlplane.stats.services import stats_ingest

from .models import DataPlaneNode, DataPlaneToken

TOKEN_PREFIX = "gwdp_"  # noqa: S105 - the marker every token starts with, not a secret
# What `prefix` stores: "gwdp_" and the first 8 characters of the random part, enough to find the row.
LOOKUP_LENGTH = len(TOKEN_PREFIX) + 8
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def hash_secret(secret: str) -> str:
    """sha256 of the token. The secret is 256 random bits, so a fast hash is enough (no password stretching)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _service_username(name: str) -> str:
    return f"dataplane-{name}"


def _audit(actor: Actor, action: str, name: str, *, before: Any, after: Any) -> None:
    AuditEvent.objects.create(
        actor_id=actor.user_id,
        actor_label=actor.label,
        action=action,
        object_type="dataplane_token",
        object_key=name,
        before=before,
        after=after,
    )


@transaction.atomic
def dataplane_token_issue(*, name: str, actor: Actor) -> tuple[DataPlaneToken, str]:
    """Issue a token named `name`; returns it and its secret, which is not stored and cannot be shown again.

    The token is bound to a new service user with only the `dataplane` role: never staff, no usable
    password. Raises ValueError for a bad or taken name.
    """
    if not _NAME.match(name):
        raise ValueError(f"token name {name!r} must be 1-100 letters, digits, '.', '_' or '-'")
    User = get_user_model()
    username = _service_username(name)
    if DataPlaneToken.objects.filter(name=name).exists() or User.objects.filter(username=username).exists():
        raise ValueError(f"a data-plane token named {name!r} already exists")
    user = User(username=username, is_staff=False, is_superuser=False, is_active=True)
    user.set_unusable_password()
    user.save()
    user.groups.add(Group.objects.get(name=DATAPLANE))
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = DataPlaneToken.objects.create(
        name=name, prefix=secret[:LOOKUP_LENGTH], secret_sha256=hash_secret(secret), user=user
    )
    _audit(actor, "dataplane_token.issue", name, before=None, after={"name": name, "prefix": token.prefix})
    return token, secret


@transaction.atomic
def dataplane_token_revoke(*, name: str, actor: Actor) -> None:
    """Delete the token and its service user. Raises DataPlaneToken.DoesNotExist for an unknown name."""
    token = DataPlaneToken.objects.select_related("user").get(name=name)
    before = {"name": token.name, "prefix": token.prefix}
    token.user.delete()  # cascades to the token
    _audit(actor, "dataplane_token.revoke", name, before=before, after=None)


@transaction.atomic
def node_status_record(*, report: Mapping[str, Any], token_name: str = "") -> DataPlaneNode:
    """Store a validated status report (see status.validate_status_report) as the node's latest status,
    with the name of the token it came with. A retired node that reports again reappears.

    One transaction: the traffic it adds to stats/, the node's row (its counters) and its breaker
    history appear together. Apart, a reader could see a report's requests in the totals while the
    node's row still held the counters before them (a worker's share short of what stats/ counted)."""
    stats_ingest(report=report)  # traffic deltas against this boot's previous counters, before the row changes
    node, _ = DataPlaneNode.objects.update_or_create(
        node_id=report["node_id"],
        defaults={
            "token_name": token_name,
            "boot_id": report["boot_id"],
            "hostname": report["hostname"],
            "version": report["version"],
            "revision": report["revision"],
            "config_sha256": report["config_sha256"] or "",
            "state_seq": report["state_seq"],
            "result": report["result"],
            "error": report["error"] or "",
            "breakers": report["breakers"],
            "counters": report["counters"],
            "certificates": report.get("certificates", []),
            "last_seen": timezone.now(),
        },
    )
    # The breakers app keeps the reported transitions as history (deduplicated, bounded).
    breaker_transitions_record(node_id=node.node_id, boot_id=node.boot_id, breakers=report["breakers"])
    return node


@transaction.atomic
def node_retire(*, node_id: str, actor: Actor, request_id: str = "") -> None:
    """Forget a node an operator stopped on purpose: its row goes now instead of after the purge, so it no
    longer shows in the fleet view or counts towards the system status. Audited (`dataplane_node.retire`,
    with the last report's summary); no config revision, no `state_seq` bump (nothing is sent to nodes).
    If the node reports again it reappears. Raises DataPlaneNode.DoesNotExist for an unknown node_id."""
    node = DataPlaneNode.objects.select_for_update().get(node_id=node_id)
    before = {
        "node_id": node.node_id,
        "hostname": node.hostname,
        "version": node.version,
        "revision": node.revision,
        "result": node.result,
        "token_name": node.token_name,
        "last_seen": node.last_seen.isoformat(),
    }
    node.delete()
    AuditEvent.objects.create(
        actor_id=actor.user_id,
        actor_label=actor.label,
        action="dataplane_node.retire",
        object_type="dataplane_node",
        object_key=node_id,
        before=before,
        after=None,
        request_id=request_id,
    )


def nodes_purge_silent() -> int:
    """Delete the nodes silent for GATEWAY_NODE_PURGE_SECONDS; returns how many. A purged node that reports
    again simply reappears."""
    from datetime import timedelta

    from django.conf import settings

    cutoff = timezone.now() - timedelta(seconds=settings.GATEWAY_NODE_PURGE_SECONDS)
    deleted, _ = DataPlaneNode.objects.filter(last_seen__lt=cutoff).delete()
    return deleted


# A token used within this many seconds is not written again: a fleet polling every few seconds
# should not turn every pull into a write.
LAST_USED_RESOLUTION_SECONDS = 60


def dataplane_token_authenticate(*, secret: str) -> DataPlaneToken | None:
    """The token whose secret this is, if it exists and its user may sync; else None. Records `last_used_at`."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    digest = hash_secret(secret)
    for token in DataPlaneToken.objects.select_related("user").filter(prefix=secret[:LOOKUP_LENGTH]):
        if hmac.compare_digest(token.secret_sha256, digest):
            if not has_gateway_perm(token.user, DATAPLANE_SYNC):
                return None
            now = timezone.now()
            if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
                DataPlaneToken.objects.filter(pk=token.pk).update(last_used_at=now)
                token.last_used_at = now
            return token
    return None
