from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ..models import TargetHealth
from ..selectors import target_health_summary


class TargetHealthSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """One target's observed health (§7), with uptime and p50/p95 over the last 100 checks and 24 h / 7 d / 30 d."""

    endpoint = serializers.CharField(source="target.endpoint.key", read_only=True)
    url = serializers.CharField(source="target.url", read_only=True)
    target_enabled = serializers.BooleanField(source="target.enabled", read_only=True)
    uptime = serializers.SerializerMethodField()

    class Meta:
        model = TargetHealth
        fields = [
            "endpoint",
            "url",
            "target_enabled",
            "status",
            "consecutive_successes",
            "consecutive_failures",
            "last_checked_at",
            "last_error",
            "last_latency_ms",
            "changed_at",
            "next_check_at",
            "uptime",
        ]
        read_only_fields = fields

    def get_uptime(self, health: TargetHealth) -> dict[str, Any]:
        return target_health_summary(target_id=health.target_id)
