from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, Group
from rest_framework import serializers

from ..roles import PERMISSIONS


class UserSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A person's account. `password` is write-only; `roles` are role (group) names."""

    username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
    email = serializers.EmailField(required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)
    roles = serializers.ListField(child=serializers.CharField(), required=False)
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})
    is_staff = serializers.BooleanField(read_only=True)
    date_joined = serializers.DateTimeField(read_only=True)
    last_login = serializers.DateTimeField(read_only=True)

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


class RoleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(read_only=True)
    permissions = serializers.ListField(child=serializers.CharField(), read_only=True)

    def to_representation(self, group: Group) -> dict[str, Any]:
        strings = sorted(p.codename.replace("_", ":", 1) for p in group.permissions.all())
        return {
            "name": group.name,
            "permissions": [{"name": s, "description": PERMISSIONS.get(s, "")} for s in strings],
        }


class PasswordChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    old_password = serializers.CharField(style={"input_type": "password"})
    new_password = serializers.CharField(style={"input_type": "password"})
