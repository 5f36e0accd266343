"""The admin's "Change password" page, made like the API's `auth/password/`.

Django's form checks the old password with `check_password`, which the login lockout never sees: a
stolen session could guess the password without limit. Here it goes through
`authenticate(request=...)` (counted and refused by accounts.lockout, whose middleware answers the
429 page), and the new password is saved through accounts.services, so it is audited and revokes the
user's tokens as any other password change does.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminPasswordChangeForm
from django.contrib.auth import authenticate
from django.contrib.auth.views import PasswordChangeView
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from controlplane.core.actors import Actor
from controlplane.core.middleware import request_id_of

from . import services


class ThrottledPasswordChangeForm(AdminPasswordChangeForm):
    def __init__(self, user: Any, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        old_password: str = self.cleaned_data["old_password"]
        checked = authenticate(self.request, username=self.user.get_username(), password=old_password)
        if checked is None or checked.pk != self.user.pk:
            raise ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password

    def save(self, commit: bool = True) -> Any:
        saved = services.user_update(
            user=self.user,
            data={"password": self.cleaned_data["new_password1"]},
            by=self.user,
            actor=Actor.from_user(self.user),
            request_id=request_id_of(self.request),
        )
        # The view keeps this session signed in with the new password's hash.
        self.user.password = saved.password
        return self.user


class ThrottledPasswordChangeView(PasswordChangeView):
    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_form_kwargs()
        kwargs["request"] = self.request
        return kwargs
