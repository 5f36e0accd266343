"""Roles and permission strings (ARCHITECTURE §8).

Roles are Django Groups and permission strings are Django Permissions on the `accounts`
app (codename = the string with ':' → '_'), so the API and the admin read the same data.
"""

from __future__ import annotations

from typing import Any

CONFIG_READ = "config:read"
CONFIG_WRITE = "config:write"
USERS_MANAGE = "users:manage"
AUDIT_READ = "audit:read"
DATAPLANE_SYNC = "dataplane:sync"

PERMISSIONS: dict[str, str] = {
    CONFIG_READ: "read endpoints, policies, revisions, health, stats and nodes",
    CONFIG_WRITE: "create, update and delete config; import; rollback; force breakers; check now",
    USERS_MANAGE: "manage users and their roles",
    AUDIT_READ: "read the audit log",
    DATAPLANE_SYNC: "pull the config snapshot and report status (data planes only)",
}

ADMIN = "admin"
OPERATOR = "operator"
READONLY = "readonly"
DATAPLANE = "dataplane"

ROLES: dict[str, tuple[str, ...]] = {
    ADMIN: (CONFIG_READ, CONFIG_WRITE, USERS_MANAGE, AUDIT_READ),
    OPERATOR: (CONFIG_READ, CONFIG_WRITE, AUDIT_READ),
    READONLY: (CONFIG_READ,),
    DATAPLANE: (DATAPLANE_SYNC,),
}

APP_LABEL = "accounts"


def codename(permission: str) -> str:
    return permission.replace(":", "_")


def has_gateway_perm(user: Any, permission: str) -> bool:
    """True when the user's roles (looked up now, not from a token) grant `permission`."""
    if not user.is_active:
        return False
    if permission == DATAPLANE_SYNC:
        # Only the dataplane role syncs; not even a superuser pulls snapshots with a person's login.
        return user.groups.filter(name=DATAPLANE).exists()
    return bool(user.has_perm(f"{APP_LABEL}.{codename(permission)}"))
