"""Config writes, revisions and their audit events.

Every service that changes the config document runs inside `config_write`:

    with config_write(actor=actor, summary="create endpoint users:v1") as changes:
        ...write rows...
        changes.record("endpoint", "users:v1", before=None, after=canonical_dict)

`config_write` locks the revision counter first (so concurrent writes serialise, and numbers are
gapless and in commit order), runs the body, and then, in the same transaction, makes one revision
and one audit event per changed object — or nothing at all when the document did not change. If the
body raises, the transaction rolls back and nothing is left behind.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from django.conf import settings
from django.db import transaction

from configdoc import assemble_document, canonical_json, endpoint_key

from .actors import Actor
from .models import AuditEvent, ConfigRevision, RevisionCounter

# Object kinds that make up the document, in the document's own vocabulary.
ENDPOINT = "endpoint"
BREAKER_POLICY = "breaker_policy"
# The document's own health_check defaults (one object, key "health_check"; snapshots.DocumentDefaults).
HEALTH_CHECK = "health_check"


@dataclass
class Change:
    kind: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def action(self) -> str:
        if self.before is None:
            return "create"
        if self.after is None:
            return "delete"
        return "update"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "before": self.before, "after": self.after}


@dataclass
class ChangeSet:
    """The objects one write touched. Recording the same object twice keeps the first `before`."""

    actor: Actor
    summary: str
    request_id: str = ""
    _changes: dict[tuple[str, str], Change] = field(default_factory=dict)
    revision: ConfigRevision | None = None

    def record(self, kind: str, key: str, *, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        previous = self._changes.get((kind, key))
        if previous is not None:
            before = previous.before
        self._changes[(kind, key)] = Change(kind, key, before, after)

    @property
    def changes(self) -> list[Change]:
        """The changes that alter the document, in a stable order."""
        return sorted((c for c in self._changes.values() if c.before != c.after), key=lambda c: (c.kind, c.key))


@contextmanager
def config_write(*, actor: Actor, summary: str, request_id: str = "") -> Iterator[ChangeSet]:
    with transaction.atomic():
        # Lock first, always: every writer takes this lock before touching any config row, so
        # writers cannot deadlock on each other and revision numbers follow commit order.
        counter = RevisionCounter.objects.select_for_update().get(pk=1)
        changeset = ChangeSet(actor=actor, summary=summary, request_id=request_id)
        yield changeset
        changeset.revision = _commit(counter, changeset)


def _commit(counter: RevisionCounter, changeset: ChangeSet) -> ConfigRevision | None:
    changes = changeset.changes
    if not changes:
        return None
    number = counter.last_number + 1
    document = current_document_bytes()
    every = max(1, settings.GATEWAY_REVISION_CHECKPOINT_EVERY)
    revision = ConfigRevision.objects.create(
        number=number,
        config_sha256=sha256(document).hexdigest(),
        changes=[c.as_dict() for c in changes],
        checkpoint=zlib.compress(document, 6) if number % every == 1 or every == 1 else None,
        actor_id=changeset.actor.user_id,
        actor_label=changeset.actor.label,
        summary=changeset.summary[:500],
        request_id=changeset.request_id,
    )
    counter.last_number = number
    counter.save(update_fields=["last_number"])
    AuditEvent.objects.bulk_create(
        AuditEvent(
            actor_id=changeset.actor.user_id,
            actor_label=changeset.actor.label,
            action=f"{c.kind}.{c.action}",
            object_type=c.kind,
            object_key=c.key,
            before=c.before,
            after=c.after,
            request_id=changeset.request_id,
            revision_number=number,
        )
        for c in changes
    )
    return revision


def current_document_bytes() -> bytes:
    """The canonical JSON of the live document, joined from each object's stored canonical text.

    Equal to `canonical_json(assemble_document(...))` of the same objects (a test holds it to that);
    joining precomputed fragments keeps a write's cost in the objects it changed, not in
    re-serialising every endpoint.
    """
    from controlplane.breakers.models import BreakerPolicy
    from controlplane.routing.models import Endpoint
    from controlplane.snapshots.models import DocumentDefaults

    policies = sorted(BreakerPolicy.objects.values_list("name", "canonical"))
    endpoints = sorted(Endpoint.objects.values_list("name", "version", "canonical"))
    health = DocumentDefaults.objects.filter(pk=1).values_list("canonical", flat=True).first()
    parts = [
        b'{"breaker_policies":[',
        ",".join(text for _, text in policies).encode("utf-8"),
        b'],"endpoints":[',
        ",".join(text for _, _, text in endpoints).encode("utf-8"),
        b'],"format_version":1',
        b',"health_check":' + health.encode("utf-8") if health else b"",
        b"}",
    ]
    return b"".join(parts)


def latest_revision() -> ConfigRevision | None:
    return ConfigRevision.objects.order_by("-number").first()


def revision_document_bytes(number: int) -> bytes:
    """Rebuild revision `number`'s canonical document byte for byte (checked against its sha256)."""
    revision = ConfigRevision.objects.get(number=number)
    base = (
        ConfigRevision.objects.filter(number__lte=number, checkpoint__isnull=False)
        .order_by("-number")
        .only("number", "checkpoint")
        .first()
    )
    if base is None:
        raise RuntimeError(f"no checkpoint at or before revision {number}")
    document = json.loads(zlib.decompress(bytes(base.checkpoint)))
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for policy in document.get("breaker_policies", []):
        objects[(BREAKER_POLICY, policy["name"])] = policy
    for endpoint in document.get("endpoints", []):
        objects[(ENDPOINT, endpoint_key(endpoint["name"], endpoint["version"]))] = endpoint
    health = document.get("health_check")
    later = ConfigRevision.objects.filter(number__gt=base.number, number__lte=number).order_by("number")
    for step in later.only("changes").iterator():
        for change in step.changes:
            if change["kind"] == HEALTH_CHECK:
                health = change["after"]
            elif change["after"] is None:
                objects.pop((change["kind"], change["key"]), None)
            else:
                objects[(change["kind"], change["key"])] = change["after"]
    rebuilt = canonical_json(
        assemble_document(
            breaker_policies=[obj for (kind, _), obj in objects.items() if kind == BREAKER_POLICY],
            endpoints=[obj for (kind, _), obj in objects.items() if kind == ENDPOINT],
            health_check=health,
        )
    )
    if sha256(rebuilt).hexdigest() != revision.config_sha256:
        raise RuntimeError(f"revision {number} does not rebuild to its recorded sha256")
    return rebuilt


def object_etag(canonical: str) -> str:
    """The strong ETag of one document object: the sha256 of its canonical JSON, quoted."""
    return '"' + sha256(canonical.encode("utf-8")).hexdigest() + '"'


def check_if_match(canonical: str, if_match: str | None) -> None:
    """Raise PreconditionFailed unless `if_match` (an If-Match header value, or None) matches.

    Called by services after they locked the row, so a write cannot slip in between check and write.
    """
    if if_match is None:
        return
    from .errors import PreconditionFailed

    current = object_etag(canonical).strip('"')
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if "*" not in wanted and current not in wanted:
        raise PreconditionFailed("the object changed since you read it (If-Match does not match its ETag)")
