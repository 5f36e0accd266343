from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, Group
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..roles import PERMISSIONS


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "format": "email"}, {"type": "string", "maxLength": 0}],
        "description": "may be empty",
    }
)
class BlankableEmailField(serializers.EmailField):
    """An email address or "" (a user need not have one); the schema's `format: email` alone refuses ""."""


class UserSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A person's account. `password` is write-only; `roles` are role (group) names."""

    username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
    email = BlankableEmailField(required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)
    roles = serializers.ListField(child=serializers.CharField(), required=False)
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})
    is_staff = serializers.BooleanField(read_only=True)
    date_joined = serializers.DateTimeField(read_only=True)
    last_login = serializers.DateTimeField(read_only=True, allow_null=True, help_text="null until the first login")

    def to_representation(self, user: AbstractUser) -> dict[str, Any]:
        return {
            "username": user.username,
            "email": user.email,
            "is_active": user.is_active,
            "is_staff": user.is_staff,
            "roles": sorted(group.name for group in user.groups.all()),
            "date_joined": serializers.DateTimeField().to_representation(user.date_joined),
            "last_login": serializers.DateTimeField().to_representation(user.last_login) if user.last_login else None,
        }


class UserReplaceSerializer(UserSerializer):
    """A PUT carries the whole representation: every writable field but `password` (write-only, so
    never part of what a client read back); PATCH changes only what it names."""

    email = BlankableEmailField(allow_blank=True)
    is_active = serializers.BooleanField()
    roles = serializers.ListField(child=serializers.CharField())


class PermissionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(read_only=True, help_text="the permission string, e.g. config:read")
    description = serializers.CharField(read_only=True)


class RoleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(read_only=True)
    permissions = PermissionSerializer(many=True, read_only=True)

    def to_representation(self, group: Group) -> dict[str, Any]:
        strings = sorted(p.codename.replace("_", ":", 1) for p in group.permissions.all())
        return {
            "name": group.name,
            "permissions": [{"name": s, "description": PERMISSIONS.get(s, "")} for s in strings],
        }


class PasswordChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    old_password = serializers.CharField(style={"input_type": "password"})
    new_password = serializers.CharField(style={"input_type": "password"})
