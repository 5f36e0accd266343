"""Revisions of the config document, the operational-state counter and the audit log."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class RevisionCounter(models.Model):
    """The single row holding the last revision number.

    Every config write locks this row first (SELECT ... FOR UPDATE) and keeps it locked until its
    transaction ends, so revision numbers are handed out in commit order with no gaps: a write that
    rolls back releases the lock without having consumed a number.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_number = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="core_revisioncounter_single_row")]

    def __str__(self) -> str:
        return f"revision counter at {self.last_number}"


class StateCounter(models.Model):
    """The single row holding `state_seq`, the version of the operational state (health, breaker overrides).

    Like RevisionCounter: every change to operational state calls `state.bump_state_seq()` in the
    transaction that makes the change, which locks this row, so the number grows in commit order and a
    waiting data plane sees the change exactly when it is committed. Health, breakers and the data-plane
    sync all use it, so it lives here, below them.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    state_seq = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="core_statecounter_single_row")]

    def __str__(self) -> str:
        return f"state counter at {self.state_seq}"


class ConfigRevision(models.Model):
    """One committed change of the config document.

    `changes` holds the canonical form of every object the write touched (before and after), so a
    write costs O(changed objects). Every GATEWAY_REVISION_CHECKPOINT_EVERY revisions (and the first)
    also store the whole canonical document, zlib-compressed, in `checkpoint`; any revision's
    document is rebuilt byte for byte from the nearest checkpoint at or before it plus the changes
    after it, and checked against `config_sha256`.
    """

    number = models.PositiveBigIntegerField(unique=True)
    config_sha256 = models.CharField(max_length=64)
    changes = models.JSONField(default=list)
    checkpoint = models.BinaryField(null=True, blank=True, editable=False)
    actor_id = models.BigIntegerField(null=True, blank=True, help_text="id of the user who made the change, if any")
    actor_label = models.CharField(
        max_length=200, help_text="user:<name>, command:<name>, task:<name> or system:<what>"
    )
    summary = models.CharField(max_length=500)
    request_id = models.CharField(max_length=128, blank=True)
    # The span of the write that made it (docs/tracing.md): the sync API's answers for this revision link to it
    # and hand it to the nodes (X-Config-Traceparent). Empty when tracing is off.
    traceparent = models.CharField(
        max_length=55, blank=True, help_text="W3C traceparent of the write's span, when the write was traced"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.CheckConstraint(condition=models.Q(number__gte=1), name="core_configrevision_number_positive"),
        ]

    def __str__(self) -> str:
        return f"revision {self.number}"


class AuditEvent(models.Model):
    """Something someone did, append-only (a PostgreSQL trigger refuses UPDATE and DELETE).

    The actor is kept by id and label rather than by foreign key, so deleting a user neither
    rewrites nor loses their history.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_label = models.CharField(max_length=200, db_index=True)
    action = models.CharField(max_length=64, db_index=True, help_text="e.g. endpoint.create, breaker_policy.delete")
    object_type = models.CharField(max_length=32)
    object_key = models.CharField(max_length=255)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    # The trace it was recorded in (docs/tracing.md), so an audit entry leads to the request's trace; empty
    # when tracing is off.
    trace_id = models.CharField(max_length=32, blank=True, help_text="OpenTelemetry trace id, when traced")
    revision_number = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_key"], name="core_audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_key}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("audit events are append-only")
        if not self.trace_id:
            from .tracing import current_trace_id

            self.trace_id = current_trace_id()
        super().save(*args, **kwargs)  # type: ignore[arg-type]
