"""JWT authentication and role permissions on the API."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from controlplane.core.models import ConfigRevision
from tests.conftest import PASSWORD, client_for, endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_user_obtains_a_token_pair_and_uses_the_access_token(make_user: Callable[..., Any]) -> None:
    make_user("oscar", "operator")
    response = APIClient().post(f"{API}/auth/token/", {"username": "oscar", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}
    assert bearer(tokens["access"]).get(f"{API}/endpoints/").status_code == 200


def test_a_wrong_password_gets_401_in_the_error_envelope(make_user: Callable[..., Any]) -> None:
    make_user("oscar", "operator")
    response = APIClient().post(f"{API}/auth/token/", {"username": "oscar", "password": "nope"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_no_token_gets_401(db: Any) -> None:
    response = APIClient().get(f"{API}/endpoints/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_readonly_user_reads_but_a_write_gets_403(readonly_client: APIClient) -> None:
    assert readonly_client.get(f"{API}/endpoints/").status_code == 200
    assert readonly_client.get(f"{API}/revisions/").status_code == 200
    response = readonly_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert readonly_client.delete(f"{API}/breaker-policies/default/").status_code == 403
    assert ConfigRevision.objects.count() == 1


def test_a_readonly_user_cannot_read_the_audit_log(readonly_client: APIClient, operator_client: APIClient) -> None:
    assert readonly_client.get(f"{API}/audit/").status_code == 403
    assert operator_client.get(f"{API}/audit/").status_code == 200


def test_a_dataplane_user_cannot_use_the_management_api(make_user: Callable[..., Any]) -> None:
    client = client_for(make_user("node-1", "dataplane"))
    assert client.get(f"{API}/endpoints/").status_code == 403


def test_a_user_without_a_role_can_do_nothing(make_user: Callable[..., Any]) -> None:
    client = client_for(make_user("nobody"))
    assert client.get(f"{API}/endpoints/").status_code == 403


def test_roles_are_read_per_request_not_from_the_token(make_user: Callable[..., Any]) -> None:
    user = make_user("oscar", "operator")
    client = client_for(user)
    assert client.post(f"{API}/endpoints/", endpoint_body(), format="json").status_code == 201
    user.groups.clear()
    assert client.post(f"{API}/endpoints/", endpoint_body("orders"), format="json").status_code == 403


def test_a_token_with_alg_none_gets_401(make_user: Callable[..., Any]) -> None:
    user = make_user("oscar", "operator")
    claims = dict(AccessToken.for_user(user).payload)
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    response = bearer(forged).post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_a_token_signed_with_another_key_gets_401(make_user: Callable[..., Any]) -> None:
    user = make_user("oscar", "operator")
    claims = dict(AccessToken.for_user(user).payload)
    forged = jwt.encode(claims, "some-other-signing-key-that-is-long-enough-0123", algorithm="HS256")
    assert bearer(forged).get(f"{API}/endpoints/").status_code == 401


def test_a_token_with_another_hs_algorithm_gets_401(make_user: Callable[..., Any]) -> None:
    user = make_user("oscar", "operator")
    claims = dict(AccessToken.for_user(user).payload)
    forged = jwt.encode(claims, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS512")
    assert bearer(forged).get(f"{API}/endpoints/").status_code == 401


def test_an_expired_token_gets_401(make_user: Callable[..., Any]) -> None:
    token = AccessToken.for_user(make_user("oscar", "operator"))
    token.set_exp(lifetime=-timedelta(seconds=1))
    assert bearer(str(token)).get(f"{API}/endpoints/").status_code == 401


def test_a_refresh_token_is_not_an_access_token(make_user: Callable[..., Any]) -> None:
    refresh = RefreshToken.for_user(make_user("oscar", "operator"))
    assert bearer(str(refresh)).get(f"{API}/endpoints/").status_code == 401


def test_refresh_rotates_and_the_old_refresh_token_is_then_refused(make_user: Callable[..., Any]) -> None:
    make_user("oscar", "operator")
    tokens = APIClient().post(f"{API}/auth/token/", {"username": "oscar", "password": PASSWORD}, format="json").json()
    rotated = APIClient().post(f"{API}/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != tokens["refresh"]
    again = APIClient().post(f"{API}/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401


def test_a_deactivated_user_token_gets_401(make_user: Callable[..., Any]) -> None:
    user = make_user("oscar", "operator")
    client = client_for(user)
    user.is_active = False
    user.save()
    assert client.get(f"{API}/endpoints/").status_code == 401


def test_a_password_change_revokes_tokens_issued_before_it(make_user: Callable[..., Any]) -> None:
    user = make_user("oscar", "operator")
    client = client_for(user)
    user.set_password("another-long-password-9876")
    user.save()
    assert client.get(f"{API}/endpoints/").status_code == 401


def test_an_rs256_token_is_refused_whatever_key_signed_it(make_user: Callable[..., Any]) -> None:
    """HS/RS confusion: the algorithm is pinned, so a token naming RS256 is refused outright."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = dict(AccessToken.for_user(make_user("oscar", "operator")).payload)
    forged = jwt.encode(claims, key, algorithm="RS256")
    assert bearer(forged).get(f"{API}/endpoints/").status_code == 401


def test_a_logged_out_refresh_token_is_refused(make_user: Callable[..., Any]) -> None:
    make_user("oscar", "operator")
    tokens = APIClient().post(f"{API}/auth/token/", {"username": "oscar", "password": PASSWORD}, format="json").json()
    assert APIClient().post(f"{API}/auth/logout/", {"refresh": tokens["refresh"]}, format="json").status_code == 200
    again = APIClient().post(f"{API}/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401


def test_verify_accepts_a_good_token_and_refuses_a_forged_one(make_user: Callable[..., Any]) -> None:
    token = AccessToken.for_user(make_user("oscar", "operator"))
    assert APIClient().post(f"{API}/auth/token/verify/", {"token": str(token)}, format="json").status_code == 200
    forged = jwt.encode(dict(token.payload), "not-the-signing-key-but-long-enough-012345", algorithm="HS256")
    assert APIClient().post(f"{API}/auth/token/verify/", {"token": forged}, format="json").status_code == 401


def test_changing_your_password_through_the_api_revokes_your_refresh_tokens(make_user: Callable[..., Any]) -> None:
    make_user("oscar", "operator")
    tokens = APIClient().post(f"{API}/auth/token/", {"username": "oscar", "password": PASSWORD}, format="json").json()
    client = bearer(tokens["access"])
    body = {"old_password": PASSWORD, "new_password": "a-brand-new-long-password-77"}
    assert client.post(f"{API}/auth/password/", body, format="json").status_code == 204
    assert client.get(f"{API}/endpoints/").status_code == 401
    refreshed = APIClient().post(f"{API}/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 401
    fresh = APIClient().post(
        f"{API}/auth/token/", {"username": "oscar", "password": "a-brand-new-long-password-77"}, format="json"
    )
    assert fresh.status_code == 200
