"""The one permission class of the API.

Each view declares which permission string (ARCHITECTURE §8) a read and a write need; the class
looks the user's roles up on every request (Django Groups → Django Permissions), never from token
claims. Views without a declaration need config:read to read and config:write to write.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from controlplane.accounts.roles import has_gateway_perm

DEFAULT_READ = "config:read"
DEFAULT_WRITE = "config:write"


def required_permission(request: Request, view: Any) -> str | None:
    if request.method in SAFE_METHODS:
        return getattr(view, "read_permission", DEFAULT_READ)
    return getattr(view, "write_permission", DEFAULT_WRITE)


class RolePermission(BasePermission):
    message = "your role does not allow this"

    def has_permission(self, request: Request, view: Any) -> bool:
        needed = required_permission(request, view)
        if needed is None:
            return True
        user = request.user
        if not user or not user.is_authenticated:
            return False
        return has_gateway_perm(user, needed)
