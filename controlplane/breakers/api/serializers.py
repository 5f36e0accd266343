from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from configdoc import effective_breaker_policy
from controlplane.core.api.serializers import DocumentObjectSerializer

from ..fleet import AGGREGATES
from ..models import BreakerPolicy, ForcedState
from ..services import MAX_FORCE_SECONDS


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


# --- the fleet's breakers (read-only shapes of breakers.fleet) and the override requests -----------------


class BreakerNodeStateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    node_id = serializers.CharField()
    state = serializers.CharField(help_text="closed, open or half_open on this node (absent from its report: closed)")
    forced = serializers.CharField(allow_null=True, help_text="open, closed or null: the force this node obeys")
    reset_generation = serializers.IntegerField(allow_null=True, help_text="the last reset this node acted on")
    last_seen = serializers.DateTimeField()


class BreakerOverrideSerializer(serializers.Serializer):  # type: ignore[type-arg]
    force = serializers.CharField(allow_null=True, help_text="open, closed or null: the force in effect")
    until = serializers.DateTimeField(allow_null=True, help_text="when the force ends (or ended, when expired)")
    expired = serializers.BooleanField(help_text="a force was set and its time is up")
    reset_generation = serializers.IntegerField()
    updated_by = serializers.CharField()
    updated_at = serializers.DateTimeField(allow_null=True)


class BreakerSerializer(serializers.Serializer):  # type: ignore[type-arg]
    key = serializers.CharField()
    aggregate = serializers.CharField(help_text=f"one of {', '.join(AGGREGATES)}")
    nodes = BreakerNodeStateSerializer(many=True)
    override = BreakerOverrideSerializer()


class BreakerTransitionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    node_id = serializers.CharField()
    boot_id = serializers.CharField()
    to = serializers.CharField(help_text="closed, open or half_open")
    at = serializers.DateTimeField()

    def get_fields(self) -> dict[str, Any]:
        # `from` is a Python keyword, so it cannot be declared as an attribute.
        fields = super().get_fields()
        fields["from"] = serializers.CharField(help_text="closed, open or half_open")
        return fields


class BreakerDetailSerializer(BreakerSerializer):
    transitions = BreakerTransitionSerializer(many=True)


class BreakerForceSerializer(serializers.Serializer):  # type: ignore[type-arg]
    # A CharField checked by hand rather than a ChoiceField: the schema's enum names would collide with
    # the other `state` fields of the API.
    state = serializers.CharField(allow_null=True, help_text="open, closed, or null to lift the force")
    seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_FORCE_SECONDS,
        help_text="how long the force holds; null or absent: until lifted",
    )

    def validate_state(self, value: str | None) -> str | None:
        if value is not None and value not in ForcedState.values:
            raise serializers.ValidationError("must be open, closed or null")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("seconds") is not None and attrs["state"] is None:
            raise serializers.ValidationError({"seconds": ["an expiry needs a forced state"]})
        return attrs
