from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from configdoc import effective_endpoint
from controlplane.core.api.serializers import DocumentObjectSerializer

from ..models import Endpoint


class TargetSerializer(serializers.Serializer):  # type: ignore[type-arg]
    url = serializers.URLField()
    weight = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    enabled = serializers.BooleanField(required=False)


class RetriesSerializer(serializers.Serializer):  # type: ignore[type-arg]
    attempts = serializers.IntegerField(required=False)
    on = serializers.ListField(child=serializers.JSONField(), required=False)
    per_try_timeout = serializers.FloatField(required=False, allow_null=True)
    retry_non_idempotent = serializers.BooleanField(required=False)


class OutlierSerializer(serializers.Serializer):  # type: ignore[type-arg]
    consecutive_failures = serializers.IntegerField(required=False)
    base_ejection_seconds = serializers.FloatField(required=False)
    max_ejection_percent = serializers.IntegerField(required=False)


class TlsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    verify = serializers.BooleanField(required=False)
    ca_file = serializers.CharField(required=False, allow_null=True)
    server_name = serializers.CharField(required=False, allow_null=True)


class HealthCheckSerializer(serializers.Serializer):  # type: ignore[type-arg]
    enabled = serializers.BooleanField(required=False)
    path = serializers.CharField(required=False, allow_null=True)
    interval = serializers.IntegerField(required=False)
    timeout = serializers.FloatField(required=False)
    unhealthy_threshold = serializers.IntegerField(required=False)
    healthy_threshold = serializers.IntegerField(required=False)
    expected_statuses = serializers.ListField(child=serializers.JSONField(), required=False)
    panic = serializers.BooleanField(required=False)


@extend_schema_serializer(component_name="Endpoint")
class EndpointSerializer(DocumentObjectSerializer):
    """An endpoint as in the config document (§3), every default shown.

    `health_check` shows only what this endpoint overrides; the document-level defaults fill the rest.
    """

    id = serializers.IntegerField(read_only=True)
    key = serializers.CharField(read_only=True, help_text="name:version")
    name = serializers.RegexField(r"^[A-Za-z0-9_-]+$")
    version = serializers.RegexField(r"^v?\d+(\.\d+)*$")
    default = serializers.BooleanField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    targets = TargetSerializer(many=True)
    methods = serializers.ListField(child=serializers.CharField(), required=False)
    enabled = serializers.BooleanField(required=False)
    paths = serializers.ListField(child=serializers.CharField(), required=False)
    strip_path = serializers.BooleanField(required=False)
    timeout = serializers.FloatField(required=False)
    connect_timeout = serializers.FloatField(required=False)
    read_idle_timeout = serializers.FloatField(required=False)
    max_body_bytes = serializers.IntegerField(required=False)
    retries = RetriesSerializer(required=False)
    outlier = OutlierSerializer(required=False)
    tls = TlsSerializer(required=False)
    auth_type = serializers.CharField(required=False)
    breaker_policy = serializers.CharField(required=False)
    health_check = HealthCheckSerializer(required=False)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: Endpoint) -> dict[str, Any]:
        document = instance.document
        return {
            "id": instance.pk,
            "key": instance.key,
            **effective_endpoint(document),
            "health_check": document.get("health_check", {}),
            "created_at": serializers.DateTimeField().to_representation(instance.created_at),
            "updated_at": serializers.DateTimeField().to_representation(instance.updated_at),
        }
