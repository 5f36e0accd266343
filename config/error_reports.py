"""What the DEBUG error page and error e-mails may show (settings DEFAULT_EXCEPTION_REPORTER_FILTER).

Django's SafeExceptionReporterFilter hides settings and META entries whose *name* looks secret
(API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE), so JWT_SIGNING_KEY, SECRET_KEY and
DATABASES["default"]["PASSWORD"] are masked. A connection URL carries its password inside the *value*
of a setting named DATABASE_URL or CELERY_BROKER_URL, which no name rule catches: the local profile's
DEBUG page printed both in clear. This filter keeps the name rule and also masks the password of any
`scheme://user:password@host` URL found in a setting, a META entry or a traceback frame's string
variables, leaving the rest (scheme, user, host, database) readable for debugging.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@ — the password runs to the last "@" before the host, as urlsplit reads it.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^/?#\s]*)@")


def mask_url_passwords(text: str, substitute: str) -> str:
    """`text` with the password of every URL's userinfo replaced by `substitute`."""
    return _URL_PASSWORD.sub(lambda match: f"{match['head']}{substitute}@", text)


def _masked(value: Any, substitute: str) -> Any:
    """`value` with URL passwords masked if it is text; anything else as it is.

    A lazy object wrapping a string (the request's user, a lazy translation) passes isinstance(str)
    without being one the regex module accepts, so the text is taken with str() first, and the
    value is kept as it is when nothing in it needs masking.
    """
    if not isinstance(value, str):
        return value
    text = str(value)
    masked = mask_url_passwords(text, substitute)
    return value if masked == text else masked


class GatewayExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter plus URL passwords (DATABASE_URL, CELERY_BROKER_URL, any such value)."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|CREDENTIAL|DSN", flags=re.IGNORECASE
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        # The base class recurses into dicts, lists and tuples through this method, and
        # get_safe_request_meta calls it for every META entry, so both get the URL rule.
        return _masked(super().cleanse_setting(key, value), self.cleansed_substitute)

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, _masked(value, self.cleansed_substitute)) for name, value in variables]
