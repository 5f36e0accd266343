"""Health in the API: the per-target list (config:read) and a probe-now action (config:write)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.core.actors import Actor
from controlplane.core.errors import ConflictError
from controlplane.routing.api.views import EndpointViewSet
from controlplane.routing.models import Target

from .. import selectors, services
from ..models import HealthStatus
from .serializers import TargetHealthSerializer


class TargetHealthFilter(django_filters.FilterSet):
    endpoint = django_filters.CharFilter(method="filter_endpoint", label="endpoint key, name:version")
    status = django_filters.ChoiceFilter(choices=HealthStatus.choices, method="filter_status")

    class Meta:
        model = Target
        fields = ["endpoint", "status"]

    def filter_endpoint(self, queryset: Any, name: str, value: str) -> Any:
        endpoint_name, _, version = value.partition(":")
        return queryset.filter(endpoint__name=endpoint_name, endpoint__version=version)

    def filter_status(self, queryset: Any, name: str, value: str) -> Any:
        if value == HealthStatus.UNKNOWN:
            # A target never checked has no health row yet, and is unknown.
            return queryset.filter(Q(health__status=value) | Q(health__isnull=True))
        return queryset.filter(health__status=value)


class TargetHealthViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Observed health per target. Health is written only by probes (§7), never through the API."""

    serializer_class = TargetHealthSerializer
    filterset_class = TargetHealthFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            # Schema generation (also run by `check --deploy`) must not need a database.
            return Target.objects.none()
        return selectors.target_health_list()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A page in a fixed number of queries: the targets with their health rows, then the uptime of
        the whole page at once (selectors.target_health_summaries), never per row."""
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        targets = list(page if page is not None else queryset)
        summaries = selectors.target_health_summaries([target.pk for target in targets])
        context = {
            **self.get_serializer_context(),
            "health_summaries": summaries,
            "unknown_reasons": selectors.unknown_reasons(targets),
        }
        serializer = self.get_serializer(targets, many=True, context=context)
        if page is not None:
            return self.get_paginated_response(serializer.data)
        return Response(serializer.data)


class EndpointCheckApi(APIView):
    """Probe an endpoint's targets now; the results count like any scheduled probe and are answered."""

    write_permission = "config:write"
    action_errors = {
        "post": {409: "`conflict`: the endpoint has no active health check (disabled, no enabled target, or no path)."}
    }

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, key: str) -> Response:
        view = EndpointViewSet(request=request, kwargs={"key": key}, format_kwarg=None)
        endpoint = view.get_object()
        try:
            checked = services.endpoint_check_now(endpoint=endpoint, actor=Actor.from_user(request.user))
        except ValueError as exc:
            raise ConflictError(str(exc)) from None
        targets = {t.pk: t for t in selectors.target_health_list().filter(endpoint=endpoint)}
        context = {"health_summaries": selectors.target_health_summaries(list(targets))}
        return Response(
            {
                "endpoint": endpoint.key,
                "results": [
                    {
                        "url": plan.url,
                        "ok": result.ok,
                        "status_code": result.status_code,
                        "latency_ms": result.latency_ms,
                        "reason": result.reason,
                        "checked_at": result.checked_at,
                        "health": TargetHealthSerializer(targets[plan.target_id], context=context).data,
                    }
                    for plan, result in checked
                ],
            }
        )
