"""Traffic statistics in the API (config:read): overall and per endpoint, and the system summary."""

from __future__ import annotations

from datetime import timedelta

from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.routing.models import Endpoint

from .. import selectors
from ..models import TrafficHour

WINDOWS = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
WINDOW_PARAMETER = OpenApiParameter(
    "window", str, enum=list(WINDOWS), default="1h", description="how far back: 5m, 1h, 24h, 7d or 30d"
)


class WindowQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    window = serializers.ChoiceField(choices=list(WINDOWS), default="1h")


def _window(request: Request) -> tuple[str, timedelta]:
    query = WindowQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    name = query.validated_data["window"]
    return name, WINDOWS[name]


class StatsApi(APIView):
    """Traffic over a window, all endpoints together and per endpoint (from the nodes' reports)."""

    read_permission = "config:read"

    @extend_schema(parameters=[WINDOW_PARAMETER], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        name, span = _window(request)
        since = timezone.now() - span
        return Response(
            {
                "window": name,
                "since": since,
                "totals": selectors.traffic_totals(since=since),
                "endpoints": selectors.traffic_totals_by_endpoint(since=since),
            }
        )


class EndpointStatsApi(APIView):
    """One endpoint's traffic over a window: totals and a series (per minute up to 24 h, per hour beyond)."""

    read_permission = "config:read"

    @extend_schema(
        parameters=[WINDOW_PARAMETER, OpenApiParameter("key", str, OpenApiParameter.PATH, description="name:version")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, key: str) -> Response:
        name, span = _window(request)
        endpoint_name, _, version = key.partition(":")
        known = Endpoint.objects.filter(name=endpoint_name, version=version).exists()
        if not known and not TrafficHour.objects.filter(endpoint_key=key).exists():
            raise Http404(f"no endpoint {key!r} and no traffic recorded for it")
        since = timezone.now() - span
        step = selectors.step_for(since)
        return Response(
            {
                "endpoint": key,
                "window": name,
                "since": since,
                "step": step,
                "totals": selectors.traffic_totals(since=since, endpoint_key=key),
                "series": selectors.traffic_series(since=since, endpoint_key=key, step=step),
            }
        )


class StatsSummaryApi(APIView):
    """The fleet at a glance: registry, target health, open breakers, unhealthy endpoints, nodes and a
    status healthy / degraded / unhealthy (rule in docs/api.md)."""

    read_permission = "config:read"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(selectors.system_summary())
