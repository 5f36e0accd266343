"""Accounts: users (users:manage) and roles (read-only). Writes go through accounts.services."""

from __future__ import annotations

from typing import Any, cast

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema
from rest_framework import filters, mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainSerializer
from rest_framework_simplejwt.views import TokenObtainPairView

from controlplane.core.api.views import service_context
from controlplane.core.errors import ConfigValidationError

from .. import services
from ..roles import USERS_MANAGE
from .serializers import PasswordChangeSerializer, RoleSerializer, UserReplaceSerializer, UserSerializer


class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Users by username, with their roles. The escalation rules of §8 apply to every write."""

    serializer_class = UserSerializer
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    read_permission = USERS_MANAGE
    write_permission = USERS_MANAGE
    filter_backends = [filters.SearchFilter, filters.OrderingFilter]
    search_fields = ["username", "email"]
    ordering = ["username"]
    action_errors = {
        "create": {409: "`conflict`: a user with this username exists."},
        "update": {409: "`conflict`: the last active admin cannot be demoted, deactivated or deleted."},
        "partial_update": {409: "`conflict`: the last active admin cannot be demoted, deactivated or deleted."},
        "destroy": {409: "`conflict`: the last active admin cannot be demoted, deactivated or deleted."},
    }

    def get_queryset(self) -> Any:
        return get_user_model().objects.prefetch_related("groups").order_by("username")

    def get_serializer_class(self) -> type[UserSerializer]:
        return UserReplaceSerializer if self.action == "update" else UserSerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not data.get("password"):
            raise ValidationError({"password": ["is required"]})
        user = services.user_create(
            username=data["username"],
            password=data["password"],
            email=data.get("email", ""),
            is_active=data.get("is_active", True),
            roles=data.get("roles", []),
            by=request.user,
            **service_context(request),
        )
        return Response(
            self.get_serializer(user).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"{request.path.rstrip('/')}/{user.username}/"},
        )

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        user = self.get_object()
        serializer = self.get_serializer(data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if data.pop("username", user.username) != user.username:
            raise ValidationError({"username": ["cannot be changed"]})
        user = services.user_update(user=user, data=data, by=request.user, **service_context(request))
        return Response(self.get_serializer(user).data)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.user_delete(user=self.get_object(), by=request.user, **service_context(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoleViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The roles and the permission strings each grants (§8). Roles are data: Django groups."""

    serializer_class = RoleSerializer
    lookup_field = "name"
    queryset = Group.objects.prefetch_related("permissions").order_by("name")


class TokenObtainApi(TokenObtainPairView):
    """simplejwt's token view. Its serializer checks the password with `authenticate(request=...)`, so the
    login lockout counts and refuses it (accounts.lockout); a success clears the (username, address)
    pair's failures, as the admin's login does through Django's `user_logged_in` signal, which a token
    login does not send."""

    action_errors = {"post": {429: "`too_many_attempts`: this username or address is locked out (`Retry-After`)."}}

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # simplejwt types its serializer class as any serializer; the obtain view's is a TokenObtainSerializer.
        serializer = cast(TokenObtainSerializer, self.get_serializer(data=request.data))
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        AxesProxyHandler.user_logged_in(sender=type(self), request=request, user=serializer.user)
        return Response(serializer.validated_data, status=status.HTTP_200_OK)


class PasswordChangeApi(APIView):
    """Change your own password; every token you hold stops working."""

    permission_classes = [IsAuthenticated]
    action_errors = {"post": {429: "`too_many_attempts`: too many wrong old passwords (`Retry-After`)."}}

    @extend_schema(request=PasswordChangeSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        serializer = PasswordChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Through `authenticate`, not `check_password`: a stolen access token must not become an
        # unthrottled oracle for the password (the login lockout counts these checks too).
        checked = authenticate(
            request=request, username=request.user.get_username(), password=serializer.validated_data["old_password"]
        )
        if checked is None or checked.pk != request.user.pk:
            raise ValidationError({"old_password": ["is not your current password"]})
        try:
            services.user_update(
                user=request.user,
                data={"password": serializer.validated_data["new_password"]},
                by=request.user,
                **service_context(request),
            )
        except ConfigValidationError as exc:
            # The service names the user's `password`; here the client sent it as `new_password`.
            raise ValidationError({"new_password": exc.fields().get("password", [exc.message])}) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
