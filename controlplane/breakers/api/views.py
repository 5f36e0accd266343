from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.api.views import DocumentObjectViewSet, service_context
from controlplane.routing.models import Endpoint

from .. import fleet, services
from ..fleet import AGGREGATES
from ..models import BreakerOverride, BreakerPolicy
from .serializers import BreakerDetailSerializer, BreakerForceSerializer, BreakerPolicySerializer, BreakerSerializer


class BreakerPolicyViewSet(DocumentObjectViewSet):
    """Breaker policies, addressed by name. `default` always exists. Writes go through breakers.services."""

    serializer_class = BreakerPolicySerializer
    queryset = BreakerPolicy.objects.order_by("name")
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_-]+"
    filterset_fields = ["name"]
    write_services = {
        "create": services.breaker_policy_create,
        "update": services.breaker_policy_update,
        "delete": services.breaker_policy_delete,
    }
    service_object = "policy"
    action_errors = {
        "create": {409: "`conflict`: a policy with this name exists."},
        "destroy": {409: "`conflict`: the `default` policy, or a policy endpoints use, cannot be deleted."},
    }


class BreakerViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """The fleet's breakers by endpoint key (§6): each live node's state, an aggregate, the override.

    Reads need config:read; force and reset need config:write (the one permission class's defaults).
    """

    serializer_class = BreakerSerializer
    lookup_field = "key"
    lookup_value_regex = r"[^/]+"
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        return fleet.endpoints()

    def _endpoint(self, key: str) -> Endpoint:
        endpoint = fleet.endpoint_by_key(key)
        if endpoint is None:
            raise NotFound(f"no endpoint {key}")
        return endpoint

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "state",
                str,
                enum=list(AGGREGATES),
                description="only endpoints with this aggregate, or with a live node in this state",
            )
        ]
    )
    def list(self, request: Request) -> Response:
        state = request.query_params.get("state") or None
        if state is not None and state not in AGGREGATES:
            raise ValidationError({"state": [f"must be one of {', '.join(AGGREGATES)}"]})
        rows = fleet.fleet_breakers(state=state)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(BreakerSerializer(page, many=True).data)

    @extend_schema(responses=BreakerDetailSerializer)
    def retrieve(self, request: Request, key: str) -> Response:
        return Response(BreakerDetailSerializer(fleet.endpoint_breaker(self._endpoint(key))).data)

    @extend_schema(request=BreakerForceSerializer, responses=BreakerDetailSerializer)
    @action(detail=True, methods=["post"])
    def force(self, request: Request, key: str) -> Response:
        """Force the breaker open or closed on every node, optionally for `seconds`; `state: null` lifts it."""
        endpoint = self._endpoint(key)
        body = BreakerForceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        override = services.breaker_force(
            endpoint=endpoint,
            state=body.validated_data["state"],
            seconds=body.validated_data.get("seconds"),
            **service_context(request),
        )
        return self._answer(endpoint, override)

    @extend_schema(request=None, responses=BreakerDetailSerializer)
    @action(detail=True, methods=["post"])
    def reset(self, request: Request, key: str) -> Response:
        """Close the breaker once on every node (its reset generation grows); a force stays in effect."""
        endpoint = self._endpoint(key)
        return self._answer(endpoint, services.breaker_reset(endpoint=endpoint, **service_context(request)))

    def _answer(self, endpoint: Endpoint, override: BreakerOverride) -> Response:
        """The detail view after an override write, built from the endpoint this request wrote (looking
        it up again could answer 404 for a write that was done, when a delete commits in between)."""
        endpoint.breaker_override = override
        return Response(BreakerDetailSerializer(fleet.endpoint_breaker(endpoint)).data)
