"""The sync snapshot of ARCHITECTURE §4: building it (pure) and reading its parts from the database.

    {"config": <document>, "config_sha256", "format_version": 1, "generated_at", "revision",
     "state": {"breakers": {}, "targets": {}}, "state_seq"}

`format_version` is the document's own (1, or 2 when it uses §11's keys); the sync API answers 409
`format_unsupported` to a node whose `X-Gateway-Format` is lower, so no node runs a document whose
policies it cannot apply.

The bytes are canonical JSON (sorted keys, no whitespace). The document is already stored in
canonical form, so it is spliced in as bytes rather than parsed and re-serialised; a test holds the
result equal to `canonical_json` of the same dict.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from configdoc import FORMAT_VERSION, LATEST_FORMAT_VERSION, canonical_json
from configdoc.plugins import FORMAT_2_DOCUMENT_KEYS, FORMAT_2_ENDPOINT_KEYS

# The snapshot formats this control plane serves: a snapshot's format is its document's.
SNAPSHOT_FORMAT_VERSION = FORMAT_VERSION
LATEST_SNAPSHOT_FORMAT_VERSION = LATEST_FORMAT_VERSION
# In canonical JSON (no whitespace, quotes inside strings escaped) these byte strings occur only as keys.
_FORMAT_2_MARKERS = tuple(f'"{key}":'.encode() for key in {*FORMAT_2_DOCUMENT_KEYS, *FORMAT_2_ENDPOINT_KEYS})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def make_etag(config_sha256: str, state_seq: int) -> str:
    """The snapshot's entity tag, unquoted: `<config_sha256>.<state_seq>`; generated_at is not part of it."""
    return f"{config_sha256}.{state_seq}"


def document_format_version(document: bytes) -> int:
    """The `format_version` of a canonical document. A document can be format 2 only when it holds a
    format-2 key, so a document without one is format 1 without being parsed (the common case, and
    parsing 10,000 endpoints holds the GIL for tens of milliseconds); otherwise it is read."""
    if not any(marker in document for marker in _FORMAT_2_MARKERS):
        return SNAPSHOT_FORMAT_VERSION
    version = json.loads(document).get("format_version", SNAPSHOT_FORMAT_VERSION)
    return int(version)


def format_generated_at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_snapshot_bytes(
    *,
    document: bytes,
    revision: int,
    config_sha256: str,
    state_seq: int,
    generated_at: str,
    state: dict[str, Any] | None = None,
    format_version: int | None = None,
) -> bytes:
    """The snapshot as canonical JSON bytes. `document` must be the canonical document whose hash is
    `config_sha256`; `format_version` is its format (read from it when not given)."""
    if not _SHA256.match(config_sha256) or sha256(document).hexdigest() != config_sha256:
        raise ValueError("document does not match config_sha256")
    state = state if state is not None else {"breakers": {}, "targets": {}}
    if format_version is None:
        format_version = document_format_version(document)
    head = {"config_sha256": config_sha256, "format_version": format_version, "generated_at": generated_at}
    tail = {"revision": revision, "state": state, "state_seq": state_seq}
    # Keys in sorted order: config, config_sha256, format_version, generated_at, revision, state, state_seq.
    return b"".join([b'{"config":', document, b",", canonical_json(head)[1:-1], b",", canonical_json(tail)[1:-1], b"}"])


@dataclass(frozen=True)
class Snapshot:
    """One built snapshot: its ETag, its bytes and their gzip, made once per ETag per process, and its
    format (a node reading a lower one is refused it); its revision and the traceparent of the write that
    made that revision ("" when it was not traced), for the answer's span and `X-Config-Traceparent`."""

    etag: str
    body: bytes
    gzipped: bytes
    format_version: int = SNAPSHOT_FORMAT_VERSION
    revision: int | None = None
    traceparent: str = ""

    @classmethod
    def of(
        cls,
        etag: str,
        body: bytes,
        format_version: int = SNAPSHOT_FORMAT_VERSION,
        *,
        revision: int | None = None,
        traceparent: str = "",
    ) -> Snapshot:
        gzipped = gzip.compress(body, compresslevel=6, mtime=0)
        return cls(
            etag=etag,
            body=body,
            gzipped=gzipped,
            format_version=format_version,
            revision=revision,
            traceparent=traceparent,
        )


def read_current_etag() -> str:
    """One query: the latest revision's sha256 and `state_seq`, as the current ETag (sync; call via sync_to_async)."""
    from django.db import connection

    from controlplane.core.models import ConfigRevision, StateCounter

    revisions = ConfigRevision._meta.db_table
    counter = StateCounter._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT config_sha256 FROM {revisions} ORDER BY number DESC LIMIT 1),"  # noqa: S608 - table names
            f" (SELECT state_seq FROM {counter} WHERE id = 1)"
        )
        sha, seq = cursor.fetchone()
    return make_etag(sha or "", seq or 0)


def load_snapshot(now: datetime | None = None) -> Snapshot:
    """Read the live document, its revision and `state_seq`, consistently, and build the snapshot (sync).

    The document and the revision row are read by separate statements, so a write may commit in
    between (a transaction would not help: PostgreSQL's READ COMMITTED gives each statement its own
    view, and on SQLite our transactions are IMMEDIATE, i.e. they would take the write lock). So the
    document's hash must equal the revision's, or we read again.
    """
    from controlplane.core.models import StateCounter
    from controlplane.core.revisions import current_document_bytes, latest_revision, remembered_document

    for _ in range(5):
        # `state_seq` before the state it numbers: a change committed in between then shows up as a
        # newer state under the older number, and the watcher's next look (newer number) sends it
        # again. The other order could label an old state with the new number, and nodes would keep it.
        counter = StateCounter.objects.filter(pk=1).values_list("state_seq", flat=True).first()
        state = read_state()
        revision = latest_revision()
        # The document this process last wrote or read, when it is that revision's: no re-read of every row.
        remembered = remembered_document(revision.config_sha256) if revision is not None else None
        document = remembered if remembered is not None else current_document_bytes()
        sha = sha256(document).hexdigest()
        if revision is not None and revision.config_sha256 == sha:
            break
    else:
        raise RuntimeError("the live document does not match the latest revision")
    state_seq = counter or 0
    format_version = document_format_version(document)
    body = build_snapshot_bytes(
        document=document,
        revision=revision.number,
        config_sha256=sha,
        state_seq=state_seq,
        generated_at=format_generated_at(now or datetime.now(UTC)),
        state=state,
        format_version=format_version,
    )
    return Snapshot.of(
        make_etag(sha, state_seq), body, format_version, revision=revision.number, traceparent=revision.traceparent
    )


def read_state() -> dict[str, Any]:
    """The snapshot's operational state: target health from the health app, breaker overrides (§6)."""
    from controlplane.breakers.services import override_state
    from controlplane.health.selectors import target_health_state

    return {"breakers": override_state(), "targets": target_health_state()}
