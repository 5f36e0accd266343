"""Read-only history: config revisions (config:read) and the audit log (audit:read).

Each revision carries `nodes`: how many live data-plane nodes applied and rejected it (the rules are in
controlplane/dataplanes/rollout.py). `revisions/{n}/wait/` is answered before Django, by
`controlplane.dataplanes.rollout.RolloutWaitApp` (config/asgi.py), because it waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from configdoc import Problem
from controlplane.accounts.roles import AUDIT_READ
from controlplane.core.api.views import service_context
from controlplane.core.errors import ConfigValidationError
from controlplane.core.revisions import shown_changes

from ..models import AuditEvent, ConfigRevision


class ConfigRevisionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    actor = serializers.CharField(source="actor_label", read_only=True)
    changes = serializers.SerializerMethodField()
    nodes = serializers.SerializerMethodField()

    class Meta:
        model = ConfigRevision
        # traceparent: the write's span when it was traced, else "" (docs/tracing.md).
        fields = [
            "number",
            "config_sha256",
            "actor",
            "summary",
            "request_id",
            "traceparent",
            "created_at",
            "changes",
            "nodes",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "properties": {k: {"type": "integer"} for k in ("applied", "rejected", "live")},
            "description": "live data-plane nodes that applied / rejected this revision (docs/api.md)",
        }
    )
    def get_nodes(self, revision: ConfigRevision) -> dict[str, int]:
        from controlplane.dataplanes.rollout import rollout_counts

        # The live nodes are read once per request (the view puts them in the context), not per revision.
        nodes = self.context.get("live_nodes")
        if nodes is None:
            from controlplane.dataplanes.rollout import live_node_rows

            nodes = live_node_rows()
        return rollout_counts(number=revision.number, created_at=revision.created_at, nodes=nodes).as_dict()

    def get_changes(self, revision: ConfigRevision) -> list[dict[str, Any]]:
        return [
            {"kind": c["kind"], "key": c["key"], "action": _action(c["before"], c["after"])} for c in revision.changes
        ]


class ConfigRevisionDetailSerializer(ConfigRevisionSerializer):
    def get_changes(self, revision: ConfigRevision) -> list[dict[str, Any]]:
        return [{**c, "action": _action(c["before"], c["after"])} for c in shown_changes(revision.changes)]


def _action(before: Any, after: Any) -> str:
    return "create" if before is None else "delete" if after is None else "update"


class ConfigRevisionViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Config revisions by number, newest first. The detail shows every changed object before and after."""

    queryset = ConfigRevision.objects.defer("checkpoint").order_by("-number")
    lookup_field = "number"
    lookup_value_regex = r"[0-9]+"
    action_errors = {"diff": {404: "`not_found`: no such revision."}}

    def get_serializer_class(self) -> type[serializers.Serializer]:  # type: ignore[type-arg]
        return ConfigRevisionDetailSerializer if self.action == "retrieve" else ConfigRevisionSerializer

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if self.action in ("list", "retrieve") and not getattr(self, "swagger_fake_view", False):
            from controlplane.dataplanes.rollout import live_node_rows

            context["live_nodes"] = live_node_rows()
        return context

    @extend_schema(
        parameters=[
            OpenApiParameter("from", int, required=True, description="a revision number"),
            OpenApiParameter("to", int, required=True, description="a revision number"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"], url_path="diff")
    def diff(self, request: Request) -> Response:
        """`?from=&to=`: every object that differs between two revisions' documents, field by field."""
        from controlplane.snapshots.services import revision_diff

        numbers = {}
        for param in ("from", "to"):
            value = request.query_params.get(param, "")
            # ASCII digits only: isdigit() and int() also take "٣"; past 18 digits no revision exists.
            if not (value.isascii() and value.isdigit() and len(value) <= 18):
                raise ConfigValidationError([Problem(param, "must be a revision number")])
            numbers[param] = int(value)
        found = set(ConfigRevision.objects.filter(number__in=numbers.values()).values_list("number", flat=True))
        missing = sorted(set(numbers.values()) - found)
        if missing:
            raise NotFound(f"no revision {missing[0]}")
        changes = revision_diff(from_number=numbers["from"], to_number=numbers["to"])
        return Response({"from": numbers["from"], "to": numbers["to"], "changes": [c.as_dict() for c in changes]})

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="rollback")
    def rollback(self, request: Request, number: str) -> Response:
        """Apply this revision's document as a new revision (config:write), audited as a rollback."""
        from controlplane.snapshots.services import revision_rollback

        revision = self.get_object()
        plan = revision_rollback(number=revision.number, **service_context(request))
        return Response({"rolled_back_to": revision.number, **plan.as_dict()})


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
            "trace_id",
            "revision",
        ]
        read_only_fields = fields


MAX_UTC_OFFSET = timedelta(hours=14)


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 time, sent to the database in UTC. Python accepts UTC offsets up to ±23:59 and
    PostgreSQL refuses those past ±15:59 (a DataError, so a 500); no time zone is more than 14 hours
    from UTC, so a larger offset is the parameter's error. So is a time at either end of the calendar
    that does not exist in UTC (9999-12-31T23:00:00-05:00)."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        offset = parsed.utcoffset()
        if offset is not None and abs(offset) > MAX_UTC_OFFSET:
            raise forms.ValidationError("has a UTC offset past ±14:00, which no time zone uses", code="invalid")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("is out of range (years 1 to 9999 in UTC)", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_label")
    object = django_filters.CharFilter(field_name="object_key")
    object_type = django_filters.CharFilter()
    action = django_filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["actor", "object", "object_type", "action", "since", "until"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The audit log, newest first; filter by actor (`user:alice`), object, action and time."""

    queryset = AuditEvent.objects.order_by("-created_at", "-id")
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    read_permission = AUDIT_READ
