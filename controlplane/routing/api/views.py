from __future__ import annotations

from typing import Any

import django_filters
from django.shortcuts import get_object_or_404

from controlplane.core.api.views import DocumentObjectViewSet

from .. import selectors, services
from ..models import Endpoint
from .serializers import EndpointSerializer

KEY_PATTERN = r"[A-Za-z0-9_-]+:v?[0-9]+(?:\.[0-9]+)*"


class EndpointFilter(django_filters.FilterSet):
    name = django_filters.CharFilter()
    version = django_filters.CharFilter()
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = Endpoint
        fields = ["name", "version", "enabled"]


class EndpointViewSet(DocumentObjectViewSet):
    """Endpoints, addressed as `name:version`. Writes go through routing.services."""

    serializer_class = EndpointSerializer
    lookup_field = "key"
    lookup_value_regex = KEY_PATTERN
    filterset_class = EndpointFilter
    write_services = {
        "create": services.endpoint_create,
        "update": services.endpoint_update,
        "delete": services.endpoint_delete,
    }
    service_object = "endpoint"

    def get_queryset(self) -> Any:
        return selectors.endpoint_list()

    def get_object(self) -> Endpoint:
        name, _, version = self.kwargs["key"].partition(":")
        endpoint = get_object_or_404(self.get_queryset(), name=name, version=version)
        self.check_object_permissions(self.request, endpoint)
        return endpoint
