"""The data-plane nodes (config:read, read-only): what each node runs and when it last reported (issue 7)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.utils import timezone
from rest_framework import viewsets

from controlplane.core.models import ConfigRevision

from ..models import DataPlaneNode
from ..selectors import stale_before
from .serializers import LIVE, STALE, DataPlaneNodeSerializer


class DataPlaneNodeFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=[(LIVE, LIVE), (STALE, STALE)], method="filter_state", label="live or stale"
    )

    class Meta:
        model = DataPlaneNode
        fields = ["state", "result"]

    def filter_state(self, queryset: Any, name: str, value: str) -> Any:
        threshold = getattr(self.request, "stale_before", None) or stale_before()
        return queryset.filter(last_seen__gte=threshold) if value == LIVE else queryset.filter(last_seen__lt=threshold)


class DataPlaneNodeViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Every node that reported and was not purged yet, by `node_id`; `?state=live|stale`, `?result=`."""

    queryset = DataPlaneNode.objects.defer("counters").order_by("node_id")
    serializer_class = DataPlaneNodeSerializer
    filterset_class = DataPlaneNodeFilter
    lookup_field = "node_id"
    lookup_value_regex = r"[^/]+"

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # One "now" per request: the filter and each row's `state` agree on who is stale.
        request.stale_before = stale_before(timezone.now())

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False):
            latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
            context["latest_revision"] = latest
            context["stale_before"] = getattr(self.request, "stale_before", None) or stale_before()
        return context
