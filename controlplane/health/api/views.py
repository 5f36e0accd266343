"""Health in the API: the per-target list (config:read) and a probe-now action (config:write)."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.core.actors import Actor
from controlplane.core.errors import ConflictError
from controlplane.routing.api.views import EndpointViewSet

from .. import selectors, services
from ..models import HealthStatus, TargetHealth
from .serializers import TargetHealthSerializer


class TargetHealthFilter(django_filters.FilterSet):
    endpoint = django_filters.CharFilter(method="filter_endpoint", label="endpoint key, name:version")
    status = django_filters.ChoiceFilter(choices=HealthStatus.choices)

    class Meta:
        model = TargetHealth
        fields = ["endpoint", "status"]

    def filter_endpoint(self, queryset: Any, name: str, value: str) -> Any:
        endpoint_name, _, version = value.partition(":")
        return queryset.filter(target__endpoint__name=endpoint_name, target__endpoint__version=version)


class TargetHealthViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Observed health per target. Health is written only by probes (§7), never through the API."""

    serializer_class = TargetHealthSerializer
    filterset_class = TargetHealthFilter

    def get_queryset(self) -> Any:
        services.health_rows_ensure()
        return selectors.target_health_list()


class EndpointCheckApi(APIView):
    """Probe an endpoint's targets now; the results count like any scheduled probe and are answered."""

    write_permission = "config:write"

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, key: str) -> Response:
        view = EndpointViewSet(request=request, kwargs={"key": key}, format_kwarg=None)
        endpoint = view.get_object()
        try:
            checked = services.endpoint_check_now(endpoint=endpoint, actor=Actor.from_user(request.user))
        except ValueError as exc:
            raise ConflictError(str(exc)) from None
        health = {h.target_id: h for h in selectors.target_health_list().filter(target__endpoint=endpoint)}
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
                        "health": TargetHealthSerializer(health[plan.target_id]).data,
                    }
                    for plan, result in checked
                ],
            }
        )
