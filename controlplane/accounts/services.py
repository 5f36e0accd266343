"""Writes to accounts. Each records an audit event; none makes a config revision."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent

from .roles import ADMIN


def _user_view(user: AbstractUser) -> dict[str, object]:
    return {
        "username": user.username,
        "email": user.email,
        "is_active": user.is_active,
        "roles": sorted(user.groups.values_list("name", flat=True)),
    }


@transaction.atomic
def admin_create(*, username: str, password: str, email: str = "", actor: Actor) -> AbstractUser:
    """Create a user with the admin role (staff, so the Django admin is theirs too).

    Raises django.core.exceptions.ValidationError when the password is too weak, ValueError when
    the username is taken.
    """
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise ValueError(f"user {username!r} already exists")
    user = User(username=username, email=email, is_staff=True, is_superuser=True)
    validate_password(password, user)
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name=ADMIN))
    AuditEvent.objects.create(
        actor_id=actor.user_id,
        actor_label=actor.label,
        action="user.create",
        object_type="user",
        object_key=username,
        before=None,
        after=_user_view(user),
    )
    return user
