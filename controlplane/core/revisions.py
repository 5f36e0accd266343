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
from bisect import bisect_left, insort
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from django.conf import settings
from django.db import transaction

from configdoc import assemble_document, canonical_json, endpoint_key
from configdoc.plugins import FORMAT_2_ENDPOINT_KEYS

from .actors import Actor
from .models import AuditEvent, ConfigRevision, RevisionCounter
from .tracing import annotate_current, current_traceparent

# Object kinds that make up the document, in the document's own vocabulary.
ENDPOINT = "endpoint"
BREAKER_POLICY = "breaker_policy"
# The document's own health_check defaults (one object, key "health_check"; snapshots.DocumentDefaults).
HEALTH_CHECK = "health_check"
# A consumer (§11), key = its username. Its audit events show it without hashes (consumers.redaction).
CONSUMER = "consumer"
# The document's own (global) plugins (one object, key "plugins"; snapshots.DocumentDefaults), §11.
# Recorded with `{}` rather than None for "none", so its audit events are always `plugins.update`.
PLUGINS = "plugins"
# In canonical JSON (no whitespace, quotes inside strings escaped) these occur only as keys, so an
# endpoint's canonical text uses a format-2 key (§11) exactly when it holds one of them.
_FORMAT_2_ENDPOINT_MARKERS = tuple(f'"{key}":' for key in FORMAT_2_ENDPOINT_KEYS)


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
    live = _document_after(counter.last_number, changes)
    document = live.body
    every = max(1, settings.GATEWAY_REVISION_CHECKPOINT_EVERY)
    traceparent = current_traceparent()
    if traceparent:  # the write's span names the revision it made, so a trace search finds it
        annotate_current({"gateway.config.revision": number, "gateway.config.sha256": live.sha256})
    revision = ConfigRevision.objects.create(
        number=number,
        config_sha256=live.sha256,
        changes=[c.as_dict() for c in changes],
        checkpoint=zlib.compress(document, 6) if number % every == 1 or every == 1 else None,
        actor_id=changeset.actor.user_id,
        actor_label=changeset.actor.label,
        summary=changeset.summary[:500],
        request_id=changeset.request_id,
        traceparent=traceparent,
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
            before=audit_view(c.kind, c.before),
            after=audit_view(c.kind, c.after),
            request_id=changeset.request_id,
            trace_id=traceparent[3:35],
            revision_number=number,
        )
        for c in changes
    )
    return revision


def audit_view(kind: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the audit log (and any other view of a change people read) shows of an object: a consumer
    without its key and password hashes (§11: credential material never enters the audit log)."""
    if kind != CONSUMER or value is None:
        return value
    from controlplane.consumers.redaction import public_consumer

    return public_consumer(value)


def shown_changes(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A revision's recorded changes as people may read them (the API, the admin): objects as
    `audit_view` shows them. The recorded ones keep the hashes: they rebuild the document."""
    return [
        {**c, "before": audit_view(c["kind"], c["before"]), "after": audit_view(c["kind"], c["after"])} for c in changes
    ]


# --- the live document ---------------------------------------------------------------------------------
#
# A revision records the sha256 of the whole canonical document, so a write must know the document's
# bytes. Reading every endpoint's canonical text for that made each write cost O(document) in the
# database (10,000 rows read by a PATCH of one endpoint at 10,000 endpoints). Instead each
# process remembers the last document it read or wrote (`_last`), and a write starts from it when it is
# provably the live one: its sha256 equals the one recorded by the revision this write builds on (read
# under the counter lock, so no other write can commit in between). The write then reads only the
# endpoint rows it changed, the breaker policies and the health defaults (a few rows each). Otherwise
# (a cold process, another process wrote since, more than PATCH_LIMIT endpoints changed) it reads the
# whole document as before. A stale or rolled-back `_last` can only cost a full read, never a wrong
# hash. What stays O(document) is in memory: joining the fragments and hashing the bytes (a few ms at
# 10,000 endpoints), and every GATEWAY_REVISION_CHECKPOINT_EVERY-th revision's compressed checkpoint.

# Past this many changed endpoints a write reads the whole document (one query) instead.
PATCH_LIMIT = 200

EndpointKey = tuple[str, str]


@dataclass(frozen=True)
class LiveDocument:
    """The canonical document: endpoint fragments (canonical texts by (name, version)) in document
    order, its bytes and their sha256. Never mutated; `_last` is replaced by one assignment."""

    endpoints: dict[EndpointKey, str]
    order: list[EndpointKey]
    body: bytes
    sha256: str

    @classmethod
    def build(
        cls,
        *,
        policies: list[tuple[str, str]],
        endpoints: dict[EndpointKey, str],
        health: str | None,
        plugins: str | None = None,
        consumers: str | None = None,
        order: list[EndpointKey] | None = None,
    ) -> LiveDocument:
        order = sorted(endpoints) if order is None else order
        joined = ",".join([endpoints[key] for key in order])
        # configdoc.required_format_version, read off the fragments: 2 when the document's plugins are
        # set or an endpoint uses a format-2 key, else 1 (one scan of the text, no parsing).
        uses_format_2 = (
            bool(plugins) or bool(consumers) or any(marker in joined for marker in _FORMAT_2_ENDPOINT_MARKERS)
        )
        parts = [
            b'{"breaker_policies":[',
            ",".join(text for _, text in sorted(policies)).encode("utf-8"),
            b'],"consumers":[' + consumers.encode("utf-8") if consumers else b"",
            b'],"endpoints":[',
            joined.encode("utf-8"),
            b'],"format_version":2' if uses_format_2 else b'],"format_version":1',
            b',"health_check":' + health.encode("utf-8") if health else b"",
            b',"plugins":' + plugins.encode("utf-8") if plugins else b"",
            b"}",
        ]
        body = b"".join(parts)
        return cls(endpoints=endpoints, order=order, body=body, sha256=sha256(body).hexdigest())


_last: LiveDocument | None = None


@dataclass(frozen=True)
class _SmallRows:
    policies: list[tuple[str, str]]
    health: str | None
    plugins: str | None
    consumers: str | None

    def parts(self) -> dict[str, Any]:
        return {"policies": self.policies, "health": self.health, "plugins": self.plugins, "consumers": self.consumers}


def _small_rows() -> _SmallRows:
    """Every breaker policy's (name, canonical), the health defaults' and the global plugins' canonical
    text, and the consumers' canonical texts joined in username order.

    Consumers are read whole on every write: each is a short row, and there are far fewer of them than
    requests; a fleet with very many consumers would want them patched like endpoints are."""
    from controlplane.breakers.models import BreakerPolicy
    from controlplane.consumers.models import Consumer
    from controlplane.snapshots.models import DocumentDefaults

    policies = list(BreakerPolicy.objects.values_list("name", "canonical"))
    row = DocumentDefaults.objects.filter(pk=1).values_list("canonical", "plugins_canonical").first()
    health, plugins = row if row is not None else (None, None)
    # Ordered by the text's own username sort (Python's), not the database collation's.
    rows = sorted(Consumer.objects.order_by().values_list("username", "canonical"))
    consumers = ",".join(text for _, text in rows) or None
    return _SmallRows(policies, health, plugins, consumers)


def _read_document() -> LiveDocument:
    """The whole live document, read from the database (and remembered)."""
    global _last
    from controlplane.routing.models import Endpoint

    small = _small_rows()
    rows = Endpoint.objects.order_by().values_list("name", "version", "canonical")  # sorted here, not twice
    _last = LiveDocument.build(endpoints={(n, v): text for n, v, text in rows}, **small.parts())
    return _last


def _document_after(previous: int, changes: list[Change]) -> LiveDocument:
    """The document as this write leaves it: `_last` plus the changed endpoint rows when `_last` is
    revision `previous`'s document, else read whole (see the section comment)."""
    global _last
    from django.db.models import Q

    from controlplane.routing.models import Endpoint

    base = _last
    keys = {_split_key(c.key) for c in changes if c.kind == ENDPOINT}
    if base is None or len(keys) > PATCH_LIMIT:
        return _read_document()
    recorded = ConfigRevision.objects.filter(number=previous).values_list("config_sha256", flat=True).first()
    if recorded != base.sha256:
        return _read_document()
    fresh: dict[EndpointKey, str] = {}
    if keys:
        wanted = Q()
        for name, version in keys:
            wanted |= Q(name=name, version=version)
        rows = Endpoint.objects.filter(wanted).values_list("name", "version", "canonical")
        fresh = {(n, v): text for n, v, text in rows}
    endpoints, order = dict(base.endpoints), list(base.order)
    for key in keys:
        if key in fresh:
            if key not in endpoints:
                insort(order, key)
            endpoints[key] = fresh[key]
        elif key in endpoints:  # deleted, or renamed away
            del endpoints[key]
            del order[bisect_left(order, key)]
    _last = LiveDocument.build(endpoints=endpoints, order=order, **_small_rows().parts())
    return _last


def remembered_document(config_sha256: str) -> bytes | None:
    """The bytes of the document this process last read or wrote when they hash to `config_sha256` (so
    they are exactly the document of the revision that recorded it), else None."""
    last = _last
    return last.body if last is not None and last.sha256 == config_sha256 else None


def _split_key(key: str) -> EndpointKey:
    name, _, version = key.partition(":")  # names never hold ':' (^[A-Za-z0-9_-]+$)
    return name, version


def current_document_bytes() -> bytes:
    """The canonical JSON of the live document, joined from each object's stored canonical text.

    Equal to `canonical_json(assemble_document(...))` of the same objects (a test holds it to that);
    joining precomputed fragments keeps the cost in reading rows, not in re-serialising every endpoint.
    """
    return _read_document().body


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
    if base is None or base.checkpoint is None:
        raise RuntimeError(f"no checkpoint at or before revision {number}")
    document = json.loads(zlib.decompress(bytes(base.checkpoint)))
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for policy in document.get("breaker_policies", []):
        objects[(BREAKER_POLICY, policy["name"])] = policy
    for endpoint in document.get("endpoints", []):
        objects[(ENDPOINT, endpoint_key(endpoint["name"], endpoint["version"]))] = endpoint
    for consumer in document.get("consumers", []):
        objects[(CONSUMER, consumer["username"])] = consumer
    health = document.get("health_check")
    plugins = document.get("plugins")
    later = ConfigRevision.objects.filter(number__gt=base.number, number__lte=number).order_by("number")
    for step in later.only("changes").iterator():
        for change in step.changes:
            if change["kind"] == HEALTH_CHECK:
                health = change["after"]
            elif change["kind"] == PLUGINS:
                plugins = change["after"]
            elif change["after"] is None:
                objects.pop((change["kind"], change["key"]), None)
            else:
                objects[(change["kind"], change["key"])] = change["after"]
    rebuilt = canonical_json(
        assemble_document(
            breaker_policies=[obj for (kind, _), obj in objects.items() if kind == BREAKER_POLICY],
            endpoints=[obj for (kind, _), obj in objects.items() if kind == ENDPOINT],
            health_check=health,
            plugins=plugins,
            consumers=[obj for (kind, _), obj in objects.items() if kind == CONSUMER],
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
