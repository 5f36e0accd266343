"""The data-plane nodes (config:read): what each node runs and when it last reported; retiring a
node an operator stopped on purpose (config:write)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.api.views import service_context
from controlplane.core.models import ConfigRevision

from .. import services
from ..models import DataPlaneNode
from ..selectors import NODE_STATES, NodeClock
from .serializers import DataPlaneNodeSerializer


def _clock(request: Any) -> NodeClock:
    return getattr(request, "node_clock", None) or NodeClock.at()


class DataPlaneNodeFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=[(state, state) for state in NODE_STATES], method="filter_state", label="live, stale or gone"
    )

    class Meta:
        model = DataPlaneNode
        fields = ["state", "result", "token_name"]

    def filter_state(self, queryset: Any, name: str, value: str) -> Any:
        return _clock(self.request).filter(queryset, value)


class DataPlaneNodeViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Every node that reported and was neither purged nor retired, by `node_id`;
    `?state=live|stale|gone`, `?result=`, `?token_name=`. `POST {node_id}/retire/` forgets a node."""

    queryset = DataPlaneNode.objects.defer("counters").order_by("node_id")
    serializer_class = DataPlaneNodeSerializer
    filterset_class = DataPlaneNodeFilter
    lookup_field = "node_id"
    lookup_value_regex = r"[^/]+"

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # One "now" per request: the filter and each row's `state` agree on who is stale or gone.
        request.node_clock = NodeClock.at(timezone.now())

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if not getattr(self, "swagger_fake_view", False):
            latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
            context["latest_revision"] = latest
            context["clock"] = _clock(self.request)
        return context

    @extend_schema(
        request=None,
        responses={204: OpenApiResponse(description="retired: the node is no longer listed or counted")},
    )
    @action(detail=True, methods=["post"])
    def retire(self, request: Request, node_id: str) -> Response:
        """Forget a node stopped on purpose (audited as `dataplane_node.retire`); it reappears if it reports
        again. Needs config:write."""
        try:
            services.node_retire(node_id=node_id, **service_context(request))
        except DataPlaneNode.DoesNotExist:
            raise NotFound(f"no data-plane node {node_id}") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
