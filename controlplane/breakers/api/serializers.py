from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from configdoc import effective_breaker_policy
from controlplane.core.api.serializers import DocumentObjectSerializer

from ..models import BreakerPolicy


class FallbackSerializer(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.IntegerField(min_value=100, max_value=599)
    content_type = serializers.CharField()
    body = serializers.CharField(allow_blank=True)


class CacheSerializer(serializers.Serializer):  # type: ignore[type-arg]
    max_entries = serializers.IntegerField()
    max_bytes = serializers.IntegerField()
    max_age = serializers.IntegerField()


@extend_schema_serializer(component_name="BreakerPolicy")
class BreakerPolicySerializer(DocumentObjectSerializer):
    """A breaker policy as in the config document (§3), every default shown."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.RegexField(r"^[A-Za-z0-9_-]+$")
    failure_threshold = serializers.IntegerField(required=False)
    failure_rate_threshold = serializers.FloatField(required=False, allow_null=True)
    window_seconds = serializers.IntegerField(required=False)
    minimum_calls = serializers.IntegerField(required=False)
    reset_timeout = serializers.IntegerField(required=False)
    half_open_max_calls = serializers.IntegerField(required=False)
    success_threshold = serializers.IntegerField(required=False)
    failure_statuses = serializers.ListField(child=serializers.JSONField(), required=False)
    fallback_strategy = serializers.ChoiceField(
        choices=["error_response", "cached_response", "default_response"], required=False
    )
    fallback = FallbackSerializer(required=False)
    cache = CacheSerializer(required=False)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: BreakerPolicy) -> dict[str, Any]:
        return {
            "id": instance.pk,
            **effective_breaker_policy(instance.document),
            "created_at": serializers.DateTimeField().to_representation(instance.created_at),
            "updated_at": serializers.DateTimeField().to_representation(instance.updated_at),
        }
