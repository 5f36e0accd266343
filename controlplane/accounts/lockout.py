"""Login lockout: django-axes, counting failed password checks per (username, address) and per address.

Every password check goes through `django.contrib.auth.authenticate(request=...)`: the admin's login
form, simplejwt's token view and the password-change API. Axes' backend (first in
AUTHENTICATION_BACKENDS) refuses a locked-out client before any password is hashed, and its signal
handlers (`LoginAttemptHandler` below, in the database, so SQLite and PostgreSQL alike) count failures.

Within AXES_COOLOFF_TIME of each other:

- AXES_FAILURE_LIMIT failures for one username from one client address lock that pair;
- GATEWAY_LOGIN_ADDRESS_FAILURE_LIMIT failures for any usernames from one address lock the address.

Never per username alone: whoever knows the admin's username could then keep the admin out from
anywhere. A failure while locked starts the cool-off again (for that pair or address only). A successful
login clears that (username, address) pair's failures only: clearing the whole address would let
someone who holds any account reset the count between guesses at another one.

The API answers a locked-out login 429 `too_many_attempts` with `Retry-After` (core.api.errors); the
admin shows a page with 429 (`lockout_response`, called by axes' middleware).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from rest_framework import exceptions, status

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# AccessAttempt.username is 255 characters; a longer one (never a real user's) must not fail the insert.
USERNAME_COLUMN = 255


class TooManyLoginAttempts(exceptions.Throttled):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_attempts"

    def __init__(self) -> None:
        seconds = cooloff_seconds()
        super().__init__(
            detail=f"too many failed logins for this user or from this address: try again in {seconds} seconds"
        )
        # Set after: given to Throttled, `wait` would also append its own "Expected available in …" to
        # the message. DRF's handler still reads it for Retry-After.
        self.wait = seconds


def cooloff_seconds() -> int:
    """How long a lock lasts after the failure just refused (each refused attempt starts the cool-off again)."""
    cool_off = get_cool_off()
    return int(cool_off.total_seconds()) if cool_off is not None else 0


def locked_out(request: Any) -> bool:
    """Did axes refuse or lock this request's login (set on the request `authenticate` was given)?"""
    return bool(getattr(request, "axes_locked_out", False))


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _address(value: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """The address failures are counted against (AXES_CLIENT_IP_CALLABLE).

    The connection's peer, REMOTE_ADDR. Only when the peer is in GATEWAY_TRUSTED_PROXIES is
    X-Forwarded-For read, from the right (the entry the nearest proxy appended), skipping further trusted
    proxies: the first address not trusted is the client. Entries left of it were written by the client
    and are never read; an entry that is not an address stops the walk at the last proxy seen.
    """
    peer = _address(request.META.get("REMOTE_ADDR"))
    if peer is None:
        return None
    trusted = _networks(tuple(settings.GATEWAY_TRUSTED_PROXIES))

    def is_trusted(address: IPAddress) -> bool:
        return any(address in network for network in trusted)

    client = peer
    if is_trusted(peer):
        for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
            address = _address(hop)
            if address is None:
                break
            client = address
            if not is_trusted(address):
                break
    return str(client)


def attempted_username(request: Any, credentials: dict[str, Any] | None = None) -> str | None:
    """The username tried (AXES_USERNAME_CALLABLE), cut to what the attempt table holds."""
    if credentials:
        value = credentials.get("username")
    else:
        data = getattr(request, "data", None) or request.POST
        value = data.get("username") if hasattr(data, "get") else None
    if value is None:
        return None
    return str(value).replace("\x00", "")[:USERNAME_COLUMN]


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The admin login's answer when locked out (AXES_LOCKOUT_CALLABLE): a page, 429, Retry-After.

    Axes calls this with (request, response, credentials) or, from its async middleware,
    (request, credentials); neither is needed here.
    """
    seconds = cooloff_seconds()
    response = TemplateResponse(
        request,
        "admin/login_locked.html",
        {"title": "Too many failed logins", "retry_after": seconds, "retry_minutes": -(-seconds // 60)},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(seconds)
    return response.render()


class LoginAttemptHandler(AxesDatabaseHandler):
    """Axes' database handler with the gateway's two limits and its narrower reset (module docstring)."""

    @staticmethod
    def _recent_failures(request: Any, **match: Any) -> int:
        attempts = AccessAttempt.objects.filter(attempt_time__gte=get_cool_off_threshold(request), **match)
        return int(attempts.aggregate(failures=Sum("failures_since_start"))["failures"] or 0)

    def get_failures(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        """The (username, address) pair's recent failures: what axes compares with AXES_FAILURE_LIMIT."""
        username = get_client_username(request, credentials)
        return self._recent_failures(request, username=username, ip_address=request.axes_ip_address)

    def is_locked(self, request: Any, credentials: dict[str, Any] | None = None) -> bool:
        if self.get_failures(request, credentials) >= get_failure_limit(request, credentials):
            return True
        address_failures = self._recent_failures(request, ip_address=request.axes_ip_address)
        return address_failures >= settings.GATEWAY_LOGIN_ADDRESS_FAILURE_LIMIT

    def user_login_failed(self, sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
        super().user_login_failed(sender, credentials, request, **kwargs)
        # The base class locks on the pair's count only; the address's limit is checked here.
        if request is not None and not request.axes_locked_out and self.is_locked(request, credentials):
            request.axes_locked_out = True
            request.axes_credentials = credentials

    def reset_user_attempts(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).delete()
        return int(count)
