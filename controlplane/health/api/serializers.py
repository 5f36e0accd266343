from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.routing.models import Target

from ..models import HealthStatus, TargetHealth
from ..selectors import UNKNOWN_REASONS, target_health_summary, unknown_reasons

HEALTH_FIELDS = (
    "status",
    "consecutive_successes",
    "consecutive_failures",
    "last_checked_at",
    "last_error",
    "last_latency_ms",
    "changed_at",
    "next_check_at",
)


class TargetHealthSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """One target's observed health (§7), with uptime and p50/p95 over the last 100 checks and
    24 h / 7 d / 30 d. A target never checked is `unknown`. Context `health_summaries` ({target id:
    summary}) supplies the uptime of many targets at once."""

    endpoint = serializers.CharField(source="endpoint.key", read_only=True)
    url = serializers.CharField(read_only=True)
    target_enabled = serializers.BooleanField(source="enabled", read_only=True)
    status = serializers.ChoiceField(choices=HealthStatus.choices, read_only=True)
    reason = serializers.SerializerMethodField(
        help_text="why the status is unknown (null otherwise): no_health_check (no path, or checks disabled), "
        "not_checked_yet (checks configured, no verdict yet), disabled (target or endpoint disabled)"
    )
    consecutive_successes = serializers.IntegerField(read_only=True)
    consecutive_failures = serializers.IntegerField(read_only=True)
    last_checked_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_error = serializers.CharField(read_only=True)
    last_latency_ms = serializers.FloatField(read_only=True, allow_null=True)
    changed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    next_check_at = serializers.DateTimeField(read_only=True, allow_null=True)
    uptime = serializers.SerializerMethodField()

    def to_representation(self, target: Target) -> dict[str, Any]:
        data = super().to_representation(target)
        # Never saved: a target not checked yet shows no next check (null), not the model's default of now.
        health = getattr(target, "health", None) or TargetHealth(target=target, next_check_at=None)  # type: ignore[misc]
        for name in HEALTH_FIELDS:
            value = getattr(health, name)
            data[name] = self.fields[name].to_representation(value) if value is not None else None
        return data

    @extend_schema_field(serializers.ChoiceField(choices=list(UNKNOWN_REASONS), allow_null=True))
    def get_reason(self, target: Target) -> str | None:
        # A list passes the whole page's reasons (one query for the defaults at most).
        reasons = self.context.get("unknown_reasons")
        if reasons is None:
            reasons = unknown_reasons([target])
        return reasons.get(target.pk)

    def get_uptime(self, target: Target) -> dict[str, Any]:
        # A list passes the whole page's summaries, read in two queries (selectors.target_health_summaries).
        summaries = self.context.get("health_summaries") or {}
        if target.pk in summaries:
            return summaries[target.pk]  # type: ignore[no-any-return]
        return target_health_summary(target_id=target.pk)
