from __future__ import annotations

from typing import Any

import django_filters
from django.db import connection
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import filters

from controlplane.core.api.params import FlagFilter
from controlplane.core.api.views import DocumentObjectViewSet

from .. import selectors, services
from ..models import Endpoint
from .serializers import EndpointSerializer

KEY_PATTERN = r"[A-Za-z0-9_-]+:v?[0-9]+(?:\.[0-9]+)*"


class EndpointFilter(django_filters.FilterSet):
    name = django_filters.CharFilter()
    version = django_filters.CharFilter()
    enabled = FlagFilter()
    default = FlagFilter(field_name="is_default")
    tag = django_filters.CharFilter(method="filter_tag", label="endpoints carrying this tag")
    breaker_policy = django_filters.CharFilter(field_name="breaker_policy__name")

    class Meta:
        model = Endpoint
        fields = ["name", "version", "enabled", "default", "tag", "breaker_policy"]

    def filter_tag(self, queryset: QuerySet[Endpoint], name: str, value: str) -> QuerySet[Endpoint]:
        if connection.vendor == "postgresql":
            return queryset.filter(tags__contains=[value])
        # SQLite (the embedded default) has no JSON containment: match the stored list's text.
        return queryset.filter(pk__in=[e.pk for e in queryset.only("pk", "tags") if value in e.tags])


class EndpointViewSet(DocumentObjectViewSet):
    """Endpoints, addressed as `name:version`. Writes go through routing.services."""

    serializer_class = EndpointSerializer
    lookup_field = "key"
    lookup_value_regex = KEY_PATTERN
    filterset_class = EndpointFilter
    filter_backends = [DjangoFilterBackend, filters.SearchFilter, filters.OrderingFilter]
    search_fields = ["name", "version", "description"]
    ordering_fields = ["name", "version", "created_at", "updated_at"]
    ordering = ["name", "version"]
    write_services = {
        "create": services.endpoint_create,
        "update": services.endpoint_update,
        "delete": services.endpoint_delete,
    }
    service_object = "endpoint"
    action_errors = {
        "create": {409: "`conflict`: an endpoint with this name:version exists."},
        "update": {409: "`conflict`: another endpoint has the new name:version."},
        "partial_update": {409: "`conflict`: another endpoint has the new name:version."},
    }

    def get_queryset(self) -> Any:
        return selectors.endpoint_list()

    def get_object(self) -> Endpoint:
        name, _, version = self.kwargs["key"].partition(":")
        endpoint = get_object_or_404(self.get_queryset(), name=name, version=version)
        self.check_object_permissions(self.request, endpoint)
        return endpoint
