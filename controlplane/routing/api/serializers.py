from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from configdoc import effective_endpoint
from configdoc.matchers import HOSTS, MATCH_HEADERS
from configdoc.plugins import HTTPS_REDIRECT, PRESERVE_HOST, PROTOCOL, WEBSOCKET
from configdoc.splits import TRAFFIC_SPLIT
from controlplane.core.api.schema_fields import plugins_field, serializer_field
from controlplane.core.api.serializers import DocumentObjectSerializer
from controlplane.health.selectors import UNKNOWN_REASONS, endpoint_targets_health, unknown_health

from ..models import Endpoint


class TargetUptimeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    last_100 = serializers.FloatField(allow_null=True, help_text="0..1 over the last 100 probes")
    _24h = serializers.FloatField(allow_null=True, help_text="0..1 over the last 24 h")

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["24h"] = fields.pop("_24h")
        return fields


class TargetHealthBriefSerializer(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.ChoiceField(choices=["unknown", "healthy", "unhealthy"])
    reason = serializers.ChoiceField(
        choices=list(UNKNOWN_REASONS),
        allow_null=True,
        help_text="why the status is unknown (null otherwise): no_health_check (no path, or checks disabled), "
        "not_checked_yet (checks configured, no verdict yet), disabled (target or endpoint disabled)",
    )
    consecutive_successes = serializers.IntegerField()
    consecutive_failures = serializers.IntegerField()
    last_checked_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    uptime = TargetUptimeSerializer()


class TargetSerializer(serializers.Serializer):  # type: ignore[type-arg]
    url = serializers.URLField()
    weight = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    enabled = serializers.BooleanField(required=False)
    health = TargetHealthBriefSerializer(read_only=True, help_text="observed health (read-only, §7)")


# Read-only keys of a target in the representation, dropped from input so a GET body can be PUT back.
TARGET_READ_ONLY_KEYS = frozenset({"health"})


def _health_representation(health: dict[str, Any]) -> dict[str, Any]:
    checked = health["last_checked_at"]
    return {
        **health,
        "last_checked_at": serializers.DateTimeField().to_representation(checked) if checked else None,
        "uptime": dict(health["uptime"]),
    }


class EndpointListSerializer(serializers.ListSerializer):  # type: ignore[type-arg]
    """A page of endpoints: their targets' health read in one query for the whole page."""

    def to_representation(self, data: Any) -> list[Any]:
        endpoints = list(data.all() if hasattr(data, "all") else data)
        ids = [endpoint.pk for endpoint in endpoints]
        self.child.health_page = (set(ids), endpoint_targets_health(ids))  # type: ignore[union-attr]
        return [self.child.to_representation(endpoint) for endpoint in endpoints]  # type: ignore[union-attr]


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
    # §11, derived from configdoc's schema (one typed serializer per plugin, so OpenAPI shows each field).
    preserve_host = serializer_field(PRESERVE_HOST)
    https_redirect = serializer_field(HTTPS_REDIRECT)  # §13
    websocket = serializer_field(WEBSOCKET)  # §13
    protocol = serializer_field(PROTOCOL)  # §13
    hosts = serializer_field(HOSTS)  # §12
    match_headers = serializer_field(MATCH_HEADERS)  # §12
    traffic_split = serializer_field(TRAFFIC_SPLIT, name="TrafficSplit")  # §12's canary
    plugins = plugins_field(
        required=False,
        help_text="this endpoint's plugins, name -> config (each shown with every default); an entry "
        "replaces the document's global entry of that name wholly; {enabled: false} turns a global one off",
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        list_serializer_class = EndpointListSerializer

    # Set by EndpointListSerializer: (the page's endpoint ids, their targets' health by (id, url)).
    health_page: tuple[set[int], dict[tuple[int, str], Any]] | None = None

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        document = super().to_internal_value(data)
        targets = document.get("targets")
        if isinstance(targets, list):
            document["targets"] = [
                {k: v for k, v in target.items() if k not in TARGET_READ_ONLY_KEYS}
                if isinstance(target, dict)
                else target
                for target in targets
            ]
        return document

    def to_representation(self, instance: Endpoint) -> dict[str, Any]:
        document = instance.document
        if self.health_page is not None and instance.pk in self.health_page[0]:
            health = self.health_page[1]
        else:
            health = endpoint_targets_health([instance.pk])
        effective = effective_endpoint(document)
        effective["targets"] = [
            {**target, "health": _health_representation(health.get((instance.pk, target["url"])) or unknown_health())}
            for target in effective["targets"]
        ]
        return {
            "id": instance.pk,
            "key": instance.key,
            **effective,
            "preserve_host": effective.get("preserve_host", False),
            "https_redirect": effective.get("https_redirect", False),
            "websocket": effective.get("websocket", True),
            "protocol": effective.get("protocol", "http"),
            "hosts": effective.get("hosts", []),
            "match_headers": effective.get("match_headers", {}),
            "traffic_split": effective.get("traffic_split"),
            "plugins": effective.get("plugins", {}),
            "health_check": document.get("health_check", {}),
            "created_at": serializers.DateTimeField().to_representation(instance.created_at),
            "updated_at": serializers.DateTimeField().to_representation(instance.updated_at),
        }
