from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import filters, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from configdoc.consumers import USERNAME_RE
from controlplane.core.api.views import DocumentObjectViewSet, service_context

from .. import selectors, services
from ..models import Consumer
from .serializers import ConsumerSerializer, IssuedKeySerializer, KeyCreateSerializer, KeyLabelSerializer

USERNAME_PATTERN = USERNAME_RE.pattern.removeprefix("^").removesuffix("$")
LABEL_PATTERN = r"[A-Za-z0-9_.:@+-]{1,64}"


class ConsumerViewSet(DocumentObjectViewSet):
    """Consumers (§11), addressed by username. Writes go through consumers.services; reads never show
    credential material. `keys/` generates an API key (shown once) and deletes one by label."""

    serializer_class = ConsumerSerializer
    lookup_field = "username"
    lookup_value_regex = USERNAME_PATTERN
    filter_backends = [DjangoFilterBackend, filters.SearchFilter, filters.OrderingFilter]
    search_fields = ["username", "custom_id"]
    ordering_fields = ["username", "created_at", "updated_at"]
    ordering = ["username"]
    write_services = {
        "create": services.consumer_create,
        "update": services.consumer_update,
        "delete": services.consumer_delete,
    }
    service_object = "consumer"
    action_errors = {
        "create": {409: "`conflict`: a consumer with this username exists."},
        "destroy": {409: "`conflict`: the consumer is an endpoint's anonymous consumer."},
        "keys": {409: "`conflict`: the consumer already has a key with this label."},
        "delete_key": {404: "`not_found`: no such consumer or key label."},
    }

    def get_queryset(self) -> Any:
        return selectors.consumer_list()

    def get_object(self) -> Consumer:
        consumer = get_object_or_404(self.get_queryset(), username=self.kwargs["username"])
        self.check_object_permissions(self.request, consumer)
        return consumer

    @extend_schema(
        methods=["GET"],
        request=None,
        responses={200: KeyLabelSerializer(many=True)},
        description="The consumer's API keys by label (never the keys or their hashes).",
    )
    @extend_schema(
        methods=["POST"],
        request=KeyCreateSerializer,
        responses={201: OpenApiResponse(IssuedKeySerializer, description="the key, shown only in this answer")},
        description="Generate an API key for the consumer. The answer is the only time the key is shown: "
        "the control plane stores its sha256.",
    )
    @action(detail=True, methods=["get", "post"], url_path="keys", pagination_class=None)
    def keys(self, request: Request, username: str) -> Response:
        consumer = self.get_object()
        if request.method == "GET":
            labels = [{"label": c["label"]} for c in consumer.document.get("key_auth", [])]
            return Response(labels)
        body = KeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        consumer, label, key = services.consumer_key_create(
            consumer=consumer, label=body.validated_data.get("label"), **service_context(request)
        )
        return Response(
            {"consumer": consumer.username, "label": label, "key": key},
            status=status.HTTP_201_CREATED,
            # The key must not be kept by a cache between here and the person who asked for it.
            headers={"Cache-Control": "no-store", "Location": f"{request.path.rstrip('/')}/{label}/"},
        )

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=rf"keys/(?P<label>{LABEL_PATTERN})")
    def delete_key(self, request: Request, username: str, label: str) -> Response:
        services.consumer_key_delete(consumer=self.get_object(), label=label, **service_context(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
