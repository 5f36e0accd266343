"""The DEBUG error page (the local profile's) never shows a password: not in a setting's name, and not
inside a connection URL's value (DATABASE_URL, CELERY_BROKER_URL), a request header or a frame variable."""

from __future__ import annotations

import secrets

from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

from config.error_reports import mask_url_passwords

# Made at run time: the page quotes this file's source lines around the failing frame.
DB_PASSWORD, BROKER_PASSWORD, HEADER_PASSWORD, LOCAL_PASSWORD = (secrets.token_hex(8) for _ in range(4))
JWT_KEY = secrets.token_hex(24)


def failing_view(request: HttpRequest) -> HttpResponse:
    upstream = f"postgres://replica:{LOCAL_PASSWORD}@replica.internal:5432/gw"  # shown as a frame variable
    raise RuntimeError(f"cannot reach the replica ({len(upstream)})")


urlpatterns = [path("boom/", failing_view)]


@override_settings(
    DEBUG=True,
    ROOT_URLCONF=__name__,
    DATABASE_URL=f"postgres://gateway:{DB_PASSWORD}@db.internal:5432/gateway",
    CELERY_BROKER_URL=f"redis://:{BROKER_PASSWORD}@redis.internal:6379/0",
    JWT_SIGNING_KEY=JWT_KEY,
)
def test_the_debug_500_page_masks_passwords_in_connection_urls_headers_and_keys() -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/boom/", HTTP_X_UPSTREAM=f"amqp://guest:{HEADER_PASSWORD}@mq.internal:5672/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "RuntimeError" in page and "cannot reach the replica" in page  # the technical page, not a bare 500
    for secret in (DB_PASSWORD, BROKER_PASSWORD, HEADER_PASSWORD, LOCAL_PASSWORD, JWT_KEY):
        assert secret not in page, secret
    # What is not secret stays there to debug with.
    assert "postgres://gateway:********************@db.internal:5432/gateway" in page
    assert "redis://:********************@redis.internal:6379/0" in page
    assert "DATABASE_URL" in page and "CELERY_BROKER_URL" in page


def test_a_url_password_is_masked_up_to_the_last_at_sign_and_nothing_else_is_touched() -> None:
    assert mask_url_passwords("redis://u:p@ss@h:1/0 and http://h:8080/x@y", "*") == (
        "redis://u:*@h:1/0 and http://h:8080/x@y"
    )
    assert mask_url_passwords("postgres://user@host/db", "*") == "postgres://user@host/db"
