"""Shared view plumbing: the actor and request id every service call carries, and the one ViewSet
shape every config-document object (endpoints, breaker policies) is served with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.actors import Actor
from controlplane.core.middleware import request_id_of
from controlplane.core.revisions import object_etag


def service_context(request: Request) -> dict[str, Any]:
    """Keyword arguments every write service takes: who, and under which request id."""
    return {"actor": Actor.from_user(request.user), "request_id": request_id_of(request)}


class DocumentObjectViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """CRUD where every write is one service call: `write_services` maps create/update/delete to the
    service functions, and `service_object` names the keyword under which they take the object."""

    write_services: ClassVar[dict[str, Callable[..., Any]]]
    service_object: ClassVar[str]

    def object_key(self, instance: Any) -> str:
        return str(getattr(instance, self.lookup_field))

    def if_match(self, request: Request) -> dict[str, Any]:
        """`If-Match` for the service, which checks it under the row lock (412 when stale)."""
        header = request.headers.get("If-Match")
        return {"if_match": header} if header else {}

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        return Response(self.get_serializer(instance).data, headers={"ETag": object_etag(instance.canonical)})

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = self.write_services["create"](data=serializer.validated_data, **service_context(request))
        return Response(
            self.get_serializer(instance).data,
            status=status.HTTP_201_CREATED,
            headers={
                "Location": f"{request.path.rstrip('/')}/{self.object_key(instance)}/",
                "ETag": object_etag(instance.canonical),
            },
        )

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        partial = kwargs.pop("partial", False)
        instance = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = self.write_services["update"](
            **{self.service_object: instance},
            data=serializer.validated_data,
            partial=partial,
            **self.if_match(request),
            **service_context(request),
        )
        return Response(self.get_serializer(instance).data, headers={"ETag": object_etag(instance.canonical)})

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.write_services["delete"](
            **{self.service_object: self.get_object()}, **self.if_match(request), **service_context(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
