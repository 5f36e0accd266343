"""Writes to accounts. Each records an audit event; none makes a config revision.

The escalation rules of ARCHITECTURE §8 live here, so the API and the admin enforce the same ones:
a role is granted or taken away only by someone who holds every permission it carries; nobody edits
their own roles; `dataplane` is assigned only by the token command and is never staff; the last
active admin cannot be removed, demoted or deactivated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from configdoc import Problem
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, ConflictError, ForbiddenError, NotFoundError
from controlplane.core.models import AuditEvent

from .roles import ADMIN, DATAPLANE, ROLES, has_gateway_perm

# Roles of people: they may use the Django admin (readonly users see it read-only).
STAFF_ROLES = frozenset(ROLES) - {DATAPLANE}


class UserView(TypedDict):
    username: str
    email: str
    is_active: bool
    roles: list[str]


def user_view(user: User) -> UserView:
    """What the audit log records of a user: never the password hash."""
    return {
        "username": user.username,
        "email": user.email,
        "is_active": user.is_active,
        "roles": sorted(user.groups.values_list("name", flat=True)),
    }


def _audit(actor: Actor, action: str, username: str, before: Any, after: Any, request_id: str = "") -> None:
    AuditEvent.objects.create(
        actor_id=actor.user_id,
        actor_label=actor.label,
        action=action,
        object_type="user",
        object_key=username,
        before=before,
        after=after,
        request_id=request_id,
    )


def _check_password(password: str, user: User) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ConfigValidationError(
            [Problem("password", message) for message in exc.messages], "the password does not meet the password policy"
        ) from None


def _groups(names: Iterable[str]) -> list[Group]:
    names = sorted(set(names))
    groups = {group.name: group for group in Group.objects.filter(name__in=names)}
    unknown = [name for name in names if name not in groups]
    if unknown:
        raise ConfigValidationError(
            [Problem("roles", f"unknown role {name!r} (roles: {', '.join(sorted(ROLES))})") for name in unknown]
        )
    return [groups[name] for name in names]


def _role_permissions(group: Group) -> list[str]:
    return [codename.replace("_", ":", 1) for codename in group.permissions.values_list("codename", flat=True)]


def _check_role_change(*, by: User | AnonymousUser | None, user: User | None, old: set[str], new: set[str]) -> None:
    changed = old ^ new
    if not changed:
        return
    if DATAPLANE in changed:
        raise ForbiddenError("the dataplane role is assigned only by `manage.py issue_dataplane_token`")
    if by is not None and user is not None and by.pk == user.pk:
        raise ForbiddenError("nobody edits their own roles; ask another admin")
    if by is None:
        return
    for group in Group.objects.filter(name__in=changed):
        missing = [p for p in _role_permissions(group) if not has_gateway_perm(by, p)]
        if missing:
            raise ForbiddenError(
                f"you cannot grant or remove the role {group.name}: you lack {', '.join(sorted(missing))}"
            )


def _lock(user: User) -> User:
    """Lock `user`'s row and every active admin's, and return `user` fresh; NotFoundError when a write
    that committed since the caller read it deleted the user.

    The last-admin rule reads other rows than the one it writes: two admins removing each other at
    once would each see the other still an admin and both go through. Every write that can take an
    admin away locks the admins' rows first, so such writes run one after the other and the later one
    sees the earlier one's result (it reads again, after the lock, in its own statement). All the rows
    are locked in one statement in primary-key order, so two writers never hold them in opposite orders.
    """
    UserModel = get_user_model()
    admins = UserModel.objects.filter(is_active=True, groups__name=ADMIN).values("pk")
    rows = UserModel.objects.select_for_update(of=("self",)).filter(Q(pk=user.pk) | Q(pk__in=admins)).order_by("pk")
    locked = next((row for row in rows if row.pk == user.pk), None)
    if locked is None:
        raise NotFoundError(f"user {user.username} does not exist")
    return locked


def _other_active_admins(user: User) -> bool:
    UserModel = get_user_model()
    return UserModel.objects.filter(is_active=True, groups__name=ADMIN).exclude(pk=user.pk).exists()


def _check_last_admin(user: User, *, keeps_admin: bool, stays_active: bool) -> None:
    is_admin = user.is_active and user.groups.filter(name=ADMIN).exists()
    if is_admin and not (keeps_admin and stays_active) and not _other_active_admins(user):
        raise ConflictError(f"{user.username} is the last active admin: make another admin first")


def _apply_roles(user: User, groups: list[Group]) -> None:
    user.groups.set(groups)
    names = {group.name for group in groups}
    staff = bool(names & STAFF_ROLES)
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])


def _revoke_tokens(user: User) -> None:
    """Blacklist every refresh token the user holds (access tokens die with the password hash claim)."""
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    outstanding = OutstandingToken.objects.filter(user=user).exclude(blacklistedtoken__isnull=False)
    # A refresh the user makes meanwhile blacklists its old token too; that one is revoked either way.
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    email: str = "",
    is_active: bool = True,
    roles: Iterable[str] = (),
    by: User | AnonymousUser | None,
    actor: Actor,
    request_id: str = "",
) -> User:
    """A person's account with `roles`. `by` is the user acting (None for commands, which are trusted)."""
    UserModel = get_user_model()
    if not username:
        raise ConfigValidationError([Problem("username", "is required")])
    if UserModel.objects.filter(username=username).exists():
        raise ConflictError(f"user {username} already exists")
    groups = _groups(roles)
    _check_role_change(by=by, user=None, old=set(), new={g.name for g in groups})
    user = UserModel(username=username, email=email, is_active=is_active)
    _check_password(password, user)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        # Another create of this username committed after the check above: the unique index decides.
        raise ConflictError(f"user {username} already exists") from None
    _apply_roles(user, groups)
    _audit(actor, "user.create", username, None, user_view(user), request_id)
    return user


@transaction.atomic
def user_update(
    *, user: User, data: Mapping[str, Any], by: User | AnonymousUser | None, actor: Actor, request_id: str = ""
) -> User:
    """Change `email`, `is_active`, `roles` and/or `password` (a new password revokes every token)."""
    user = _lock(user)
    before = user_view(user)
    old_roles = set(before["roles"])
    if DATAPLANE in old_roles and by is not None:
        raise ForbiddenError("data-plane service users are managed with `manage.py issue_dataplane_token`")
    groups = _groups(data["roles"]) if "roles" in data else None
    new_roles = {g.name for g in groups} if groups is not None else old_roles
    _check_role_change(by=by, user=user, old=old_roles, new=new_roles)
    is_active = data.get("is_active", user.is_active)
    if by is not None and by.pk == user.pk and not is_active:
        raise ForbiddenError("you cannot deactivate yourself")
    _check_last_admin(user, keeps_admin=ADMIN in new_roles, stays_active=bool(is_active))
    user.email = data.get("email", user.email)
    user.is_active = bool(is_active)
    new_password = data.get("password")
    if new_password:
        _check_password(new_password, user)
        user.set_password(new_password)
        _revoke_tokens(user)
    user.save()
    if groups is not None:
        _apply_roles(user, groups)
    after = user_view(user)
    if after != before:
        _audit(actor, "user.update", user.username, before, after, request_id)
    if new_password:
        # Its own event, whatever else changed with it: a new password revokes every token the user
        # holds, and whoever reads the log for that must find it. The view never holds the password.
        _audit(actor, "user.password_change", user.username, after, after, request_id)
    return user


@transaction.atomic
def user_delete(*, user: User, by: User | AnonymousUser | None, actor: Actor, request_id: str = "") -> None:
    if by is not None and by.pk == user.pk:
        raise ForbiddenError("you cannot delete yourself")
    user = _lock(user)
    roles = set(user.groups.values_list("name", flat=True))
    if DATAPLANE in roles and by is not None:
        raise ForbiddenError("data-plane service users are removed by revoking their token")
    _check_role_change(by=by, user=user, old=roles, new=set())
    _check_last_admin(user, keeps_admin=False, stays_active=False)
    before = user_view(user)
    user.delete()
    _audit(actor, "user.delete", before["username"], before, None, request_id)


def admin_create(*, username: str, password: str, email: str = "", actor: Actor) -> User:
    """The first (or another) admin, from `createadmin` or `rungateway`.

    Raises ConflictError when the username is taken, ConfigValidationError when the password is weak.
    """
    return user_create(username=username, password=password, email=email, roles=[ADMIN], by=None, actor=actor)
