"""Traffic statistics in the API (config:read): overall and per endpoint, and the system summary."""

from __future__ import annotations

from datetime import timedelta

from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.routing.models import Endpoint

from .. import selectors
from ..models import ConsumerTrafficMinute, TrafficHour

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
                # §12's canary: how the name's requests divide among its versions in the window.
                "versions": selectors.version_shares(name=endpoint_name, since=since),
            }
        )


# Traffic by consumer is kept per minute only (24 h), so its windows stop at a day.
CONSUMER_WINDOWS = ("5m", "1h", "24h")


class ConsumersQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    window = serializers.ChoiceField(choices=list(CONSUMER_WINDOWS), default="1h")
    limit = serializers.IntegerField(min_value=1, max_value=selectors.TOP_CONSUMERS, default=selectors.TOP_CONSUMERS)


def _class_counts(name: str) -> serializers.Serializer:  # type: ignore[type-arg]
    return inline_serializer(
        name, {status_class: serializers.IntegerField(min_value=0) for status_class in ("2xx", "3xx", "4xx", "5xx")}
    )


CONSUMERS_RESPONSE = inline_serializer(
    "EndpointConsumers",
    {
        "endpoint": serializers.CharField(help_text="name:version"),
        "window": serializers.ChoiceField(choices=list(CONSUMER_WINDOWS)),
        "since": serializers.DateTimeField(),
        "consumers": inline_serializer(
            "ConsumerTraffic",
            {
                "consumer": serializers.CharField(help_text="the consumer's username"),
                "requests": serializers.IntegerField(min_value=0),
                "by_class": _class_counts("ConsumerTrafficByClass"),
                "rate_limited": serializers.IntegerField(
                    min_value=0, help_text="how many of the 4xx were 429 rate_limited (the rate_limit plugin)"
                ),
            },
            many=True,
            help_text="the top consumers by requests, most first (at most `limit`)",
        ),
        "other": inline_serializer(
            "OtherConsumersTraffic",
            {
                "requests": serializers.IntegerField(min_value=0),
                "by_class": _class_counts("OtherConsumersByClass"),
                "rate_limited": serializers.IntegerField(
                    min_value=0, help_text="how many of the 4xx were 429 rate_limited"
                ),
            },
            help_text="every other consumer's requests together (past the top 100 of a node or a minute, or `limit`)",
        ),
    },
)


class EndpointConsumersApi(APIView):
    """One endpoint's top consumers over a window (ARCHITECTURE §11: traffic by consumer, bounded).

    Requests an authentication plugin named a consumer for, per consumer username (the `anonymous`
    consumer under its own); requests without a consumer are not counted here. `rate_limited` is how
    many of a consumer's 4xx were the rate_limit plugin's 429 `rate_limited` (the endpoint's total is
    `errors.rate_limited` in stats/endpoints/{key}/). At most 100 consumers
    per endpoint per minute are kept by name, the rest are in `other`."""

    read_permission = "config:read"

    @extend_schema(
        parameters=[
            OpenApiParameter("key", str, OpenApiParameter.PATH, description="name:version"),
            OpenApiParameter(
                "window", str, enum=list(CONSUMER_WINDOWS), default="1h", description="how far back: 5m, 1h or 24h"
            ),
            OpenApiParameter(
                "limit", int, default=selectors.TOP_CONSUMERS, description="how many consumers to list by name, 1-100"
            ),
        ],
        responses={200: CONSUMERS_RESPONSE},
    )
    def get(self, request: Request, key: str) -> Response:
        query = ConsumersQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        name, limit = query.validated_data["window"], query.validated_data["limit"]
        endpoint_name, _, version = key.partition(":")
        known = Endpoint.objects.filter(name=endpoint_name, version=version).exists()
        if not known and not ConsumerTrafficMinute.objects.filter(endpoint_key=key).exists():
            raise Http404(f"no endpoint {key!r} and no traffic recorded for it")
        since = timezone.now() - WINDOWS[name]
        return Response(
            {
                "endpoint": key,
                "window": name,
                "since": since,
                **selectors.top_consumers(endpoint_key=key, since=since, limit=limit),
            }
        )


class StatsSummaryApi(APIView):
    """The fleet at a glance: registry, target health, open breakers, unhealthy endpoints, nodes and a
    status healthy / degraded / unhealthy (rule in docs/api.md)."""

    read_permission = "config:read"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(selectors.system_summary())
