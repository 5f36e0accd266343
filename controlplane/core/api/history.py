"""Read-only history: config revisions (config:read) and the audit log (audit:read)."""

from __future__ import annotations

from typing import Any

import django_filters
from rest_framework import serializers, viewsets

from controlplane.accounts.roles import AUDIT_READ

from ..models import AuditEvent, ConfigRevision


class ConfigRevisionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    actor = serializers.CharField(source="actor_label", read_only=True)
    changes = serializers.SerializerMethodField()

    class Meta:
        model = ConfigRevision
        fields = ["number", "config_sha256", "actor", "summary", "request_id", "created_at", "changes"]
        read_only_fields = fields

    def get_changes(self, revision: ConfigRevision) -> list[dict[str, Any]]:
        return [
            {"kind": c["kind"], "key": c["key"], "action": _action(c["before"], c["after"])} for c in revision.changes
        ]


class ConfigRevisionDetailSerializer(ConfigRevisionSerializer):
    def get_changes(self, revision: ConfigRevision) -> list[dict[str, Any]]:
        return [{**c, "action": _action(c["before"], c["after"])} for c in revision.changes]


def _action(before: Any, after: Any) -> str:
    return "create" if before is None else "delete" if after is None else "update"


class ConfigRevisionViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Config revisions by number, newest first. The detail shows every changed object before and after."""

    queryset = ConfigRevision.objects.defer("checkpoint").order_by("-number")
    lookup_field = "number"
    lookup_value_regex = r"[0-9]+"

    def get_serializer_class(self) -> type[serializers.Serializer]:  # type: ignore[type-arg]
        return ConfigRevisionDetailSerializer if self.action == "retrieve" else ConfigRevisionSerializer


class AuditEventSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    actor = serializers.CharField(source="actor_label", read_only=True)
    object = serializers.CharField(source="object_key", read_only=True)
    revision = serializers.IntegerField(source="revision_number", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object",
            "before",
            "after",
            "request_id",
            "revision",
        ]
        read_only_fields = fields


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_label")
    object = django_filters.CharFilter(field_name="object_key")
    object_type = django_filters.CharFilter()
    action = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["actor", "object", "object_type", "action", "since", "until"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The audit log, newest first; filter by actor (`user:alice`), object, action and time."""

    queryset = AuditEvent.objects.order_by("-created_at", "-id")
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    read_permission = AUDIT_READ
