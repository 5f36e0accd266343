"""JWT consumers from the control plane to a running data plane (ARCHITECTURE §11): a real uvicorn control
plane on the test database, a real `python -m dataplane` following it, a real upstream and a real
OIDC-style provider publishing its JWKS, all on 127.0.0.1.

An operator creates one consumer through the API (an RS256 public key) and one on the admin's add page as
a browser posts it (an HS256 credential whose secret is `{env: NAME}`, set only in the data plane's
environment), then endpoints through the API: `jwt`, `jwt` with an `acl`, `jwt` on the provider's
`jwks_url` with `consumer_claim: sub`, and `key_auth` in report mode. The node applies the document:
good tokens pass and the upstream sees who called, no token is a 401 with a Bearer challenge, a tampered
or expired token a 401, the acl a 403, and report mode lets the unauthenticated request through while
counting it as would_deny. The secret's value, the tokens and the private keys appear in neither
export (`manage.py export_config`, `config/export/`), the audit log, the revisions, nor either process's
log. No timing assertions: we poll until a condition holds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group
from django.db import connection

from controlplane.consumers.models import Consumer
from controlplane.core.actors import Actor
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, endpoint_body
from tests.controlplane.admin_forms import form_data_from
from tests.dataplane.jwt_keys import HS_ENV, HS_SECRET, OTHER_RSA_KEY, RSA_KEY, jwk, public_pem, tampered, token
from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.e2e.servers import ROOT, clean_env, eventually, http_server
from tests.e2e.test_plugins_reach_dataplane import _node_took, _sign_in
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.command("test")
PROVIDER_KEY = OTHER_RSA_KEY  # the OIDC provider's signing key, published as a JWK
PROVIDER_ISSUER = "https://idp.e2e.example"


@contextmanager
def oidc_provider() -> Iterator[str]:
    """A loopback provider: its discovery document and its JWKS; yields the JWKS URL."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with lock:
                if self.path.startswith("/jwks"):
                    document: dict[str, Any] = {"keys": [jwk(PROVIDER_KEY, "idp-2026")]}
                else:
                    document = {"issuer": PROVIDER_ISSUER, "jwks_uri": "/jwks"}
                body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield f"http://127.0.0.1:{port}/jwks"


def _private_pem(key: Any) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return str(pem)


def _seen(answer: httpx.Response) -> dict[str, str]:
    body: dict[str, Any] = answer.json()
    return {name.lower(): value for name, value in body["headers"]}


def _decisions(node: DataPlane, endpoint: str, plugin: str, decision: str) -> float:
    text = httpx.get(f"{node.admin}/-/metrics", timeout=10).text
    labels = f'decision="{decision}",endpoint="{re.escape(endpoint)}",plugin="{plugin}"'
    found = re.search(r"^gateway_policy_decisions_total\{" + labels + r"\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _operator() -> None:
    operator = get_user_model().objects.create_user(username="olga", is_staff=True)
    # Hashed the way the control plane process checks it (the tests' own settings use a fast hasher).
    hasher = PBKDF2PasswordHasher()
    operator.password = hasher.encode(PASSWORD, hasher.salt())
    operator.save(update_fields=["password"])
    operator.groups.set(Group.objects.filter(name="operator"))


def _manage_export(tmp_path: Path) -> str:
    """`manage.py export_config` as an operator runs it, on the test database."""
    database = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        GATEWAY_VAR_DIR=str(tmp_path / "var"),
    )
    done = subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", "export_config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_jwt_consumers_made_by_an_operator_open_jwt_endpoints_on_a_running_data_plane(tmp_path: Path) -> None:
    _, node_secret = dataplane_token_issue(name="edge-1", actor=ACTOR)
    _operator()
    with ExitStack() as stack:
        origin = stack.enter_context(upstream(tmp_path, "origin"))
        jwks_url = stack.enter_context(oidc_provider())
        target = [{"url": f"{origin.url}/api"}]
        endpoint_create(data=endpoint_body("plain", targets=target), actor=ACTOR)
        base, _ = stack.enter_context(control_plane(tmp_path))
        env = {
            "DATAPLANE_CONTROL_PLANE_URL": base,
            "DATAPLANE_TOKEN": node_secret,
            "DATAPLANE_CACHE_DIR": str(tmp_path),
            "DATAPLANE_LOG_LEVEL": "debug",
            "DATAPLANE_REPORT_INTERVAL": "0.5",
            HS_ENV: HS_SECRET,  # only the data plane knows the secret's value
        }
        node = stack.enter_context(dataplane(tmp_path, None, **env))
        eventually(lambda: httpx.get(f"{node.url}/plain/echo").status_code == 200, "plain:v1 routed by the node")

        login = httpx.post(f"{base}/api/v1/auth/token/", json={"username": "olga", "password": PASSWORD})
        assert login.status_code == 200, login.text
        api = {"Authorization": f"Bearer {login.json()['access']}"}

        # A consumer with an RS256 public key, through the API.
        partner = {
            "username": "partner",
            "groups": ["partners"],
            "jwt": [{"issuer": "partner-idp", "algorithm": "RS256", "public_key": public_pem(RSA_KEY)}],
        }
        created = httpx.post(f"{base}/api/v1/consumers/", json=partner, headers=api)
        assert created.status_code == 201, created.text

        # The secret's value pasted where its reference belongs: refused, naming the field, not echoed.
        pasted = {"username": "careless", "jwt": [{"issuer": "c", "algorithm": "HS256", "secret": HS_SECRET}]}
        refused = httpx.post(f"{base}/api/v1/consumers/", json=pasted, headers=api)
        assert refused.status_code == 400 and "jwt[0].secret" in refused.text, refused.text
        assert HS_SECRET not in refused.text

        # A consumer with an HS256 credential, on the admin's add page as a browser posts it.
        with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as browser:
            _sign_in(browser, base, "olga")
            add = "/admin/consumers/consumer/add/"
            page = browser.get(add)
            assert page.status_code == 200 and 'name="jwt"' in page.text
            data = form_data_from(page.text)
            credential = [{"issuer": "mobile", "algorithm": "HS256", "secret": {"env": HS_ENV}}]
            # Pasting the value instead of {"env": NAME} is refused on the page too, without showing it back.
            careless = [{"issuer": "c", "algorithm": "HS256", "secret": HS_SECRET}]
            data.update(username=["careless"], jwt=[json.dumps(careless)], _save=["Save"])
            again = browser.post(add, data=data, headers={"Referer": f"{base}{add}"})
            assert again.status_code == 200 and "Not saved: jwt[0].secret" in again.text, again.text[:2000]
            assert HS_SECRET not in again.text
            assert not Consumer.objects.filter(username="careless").exists()
            data = form_data_from(page.text)
            data.update(username=["mobile-app"], groups=["mobile"], jwt=[json.dumps(credential)], _save=["Save"])
            saved = browser.post(add, data=data, headers={"Referer": f"{base}{add}"})
            assert saved.status_code == 200 and saved.url.path == "/admin/consumers/consumer/", saved.url
            assert "errorlist" not in saved.text and "Not saved" not in saved.text
            # Its page shows the credential back by issuer, with the secret still a reference.
            mobile = Consumer.objects.get(username="mobile-app")
            change = browser.get(f"/admin/consumers/consumer/{mobile.pk}/change/").text
            assert HS_ENV in change and HS_SECRET not in change
            # Each consumer's page, posted back as rendered, saves and changes nothing (the PEM survives).
            for consumer in Consumer.objects.order_by("username"):
                before = consumer.document
                url = f"/admin/consumers/consumer/{consumer.pk}/change/"
                data = form_data_from(browser.get(url).text)
                data["_save"] = ["Save"]
                again = browser.post(url, data=data, headers={"Referer": f"{base}{url}"})
                assert again.status_code == 200 and again.url.path == "/admin/consumers/consumer/", again.text[:2000]
                assert "errorlist" not in again.text and "Not saved" not in again.text
                consumer.refresh_from_db()
                assert consumer.document == before, consumer.username
        assert mobile.document["jwt"] == credential

        # The endpoints, through the API.
        plugins: dict[str, dict[str, Any]] = {
            "users": {"jwt": {}},
            "orders": {"jwt": {}, "acl": {"allow": ["partners"]}},
            "sso": {"jwt": {"jwks_url": jwks_url, "consumer_claim": "sub"}},
            "watched": {"key_auth": {"mode": "report"}},
        }
        for name, chain in plugins.items():
            made = httpx.post(
                f"{base}/api/v1/endpoints/", json=endpoint_body(name, targets=target, plugins=chain), headers=api
            )
            assert made.status_code == 201, made.text
        revision = latest_revision()
        assert revision is not None
        eventually(lambda: _node_took(revision.config_sha256), "the node applying the consumers and endpoints")

        def call(path: str, bearer: str | None = None, **headers: str) -> httpx.Response:
            if bearer is not None:
                headers["Authorization"] = f"Bearer {bearer}"
            return httpx.get(f"{node.url}{path}", headers=headers, timeout=30)

        rs_token = token("partner-idp")
        hs_token = token("mobile", key=HS_SECRET, algorithm="HS256")
        sso_token = token(PROVIDER_ISSUER, key=PROVIDER_KEY, headers={"kid": "idp-2026"}, sub="partner")
        tokens = [rs_token, hs_token, sso_token]

        # Good tokens pass; the upstream sees who called, never what the client claimed.
        answer = call("/users/echo", rs_token, **{"X-Consumer-Username": "forged"})
        assert answer.status_code == 200, answer.text
        seen = _seen(answer)
        assert seen["x-consumer-username"] == "partner" and seen["x-credential-identifier"] == "partner-idp"
        answer = call("/users/echo", hs_token)
        assert answer.status_code == 200, answer.text
        seen = _seen(answer)
        assert seen["x-consumer-username"] == "mobile-app" and seen["x-credential-identifier"] == "mobile"
        answer = call("/sso/echo", sso_token)
        assert answer.status_code == 200, answer.text
        seen = _seen(answer)
        assert seen["x-consumer-username"] == "partner" and seen["x-credential-identifier"] == PROVIDER_ISSUER

        # No token: 401 with a Bearer challenge; tampered or expired: 401.
        refused = call("/users/echo")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        for bad in (
            tampered(rs_token, sub="admin"),
            tampered(hs_token, iss="partner-idp"),
            token("partner-idp", exp=int(time.time()) - 3600),
            token("mobile", key=HS_SECRET, algorithm="HS256", exp=int(time.time()) - 3600),
        ):
            refused = call("/users/echo", bad)
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_credentials", refused.text
            tokens.append(bad)
        refused = call("/sso/echo", tampered(sso_token, sub="mobile-app"))
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_credentials"

        # The acl: partners pass, the mobile app is refused.
        assert call("/orders/echo", rs_token).status_code == 200
        denied = call("/orders/echo", hs_token)
        assert denied.status_code == 403 and denied.json()["error"] == "forbidden", denied.text

        # Report mode: no key or a wrong one, let through, counted as would_deny (no credential at all is
        # the authentication gate's decision, a wrong key key_auth's).
        missing = _decisions(node, "watched:v1", "authentication", "would_deny")
        wrong = _decisions(node, "watched:v1", "key_auth", "would_deny")
        watched = call("/watched/echo")
        assert watched.status_code == 200 and "x-consumer-username" not in _seen(watched)
        assert _decisions(node, "watched:v1", "authentication", "would_deny") == missing + 1
        watched = call("/watched/echo", apikey="not-a-key-anyone-has")
        assert watched.status_code == 200 and "x-consumer-username" not in _seen(watched)
        assert _decisions(node, "watched:v1", "key_auth", "would_deny") == wrong + 1

        # The traffic, by consumer, in the stats API: the JWT callers are named there as the upstream saw them.
        def by_consumer(endpoint: str) -> dict[str, Any]:
            answer = httpx.get(f"{base}/api/v1/stats/endpoints/{endpoint}/consumers/?window=5m", headers=api)
            if answer.status_code == 404:
                return {}  # no report has reached the control plane yet
            assert answer.status_code == 200, answer.text
            return {row["consumer"]: row["by_class"] for row in answer.json()["consumers"]}

        ok, refused_by_acl = {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 0}, {"2xx": 0, "3xx": 0, "4xx": 1, "5xx": 0}
        eventually(lambda: by_consumer("users:v1") == {"partner": ok, "mobile-app": ok}, "users:v1 by consumer")
        eventually(
            lambda: by_consumer("orders:v1") == {"partner": ok, "mobile-app": refused_by_acl}, "orders:v1 by consumer"
        )
        eventually(lambda: by_consumer("sso:v1") == {"partner": ok}, "sso:v1 by consumer")

        # Nothing secret on the control plane's side: the exports, the audit log, the revisions.
        published: dict[str, str] = {
            "manage.py export_config": _manage_export(tmp_path),
            "config/export/": httpx.get(f"{base}/api/v1/config/export/", headers=api).text,
            "audit/": httpx.get(f"{base}/api/v1/audit/?limit=1000", headers=api).text,
            "revisions/": httpx.get(f"{base}/api/v1/revisions/?limit=1000", headers=api).text,
            "revisions/{n}/": httpx.get(f"{base}/api/v1/revisions/{revision.number}/", headers=api).text,
            "consumers/": httpx.get(f"{base}/api/v1/consumers/", headers=api).text,
        }
        assert HS_ENV in published["config/export/"] and "mobile-app" in published["audit/"]
        assert "mobile-app" in published["manage.py export_config"]
        secrets = [HS_SECRET, *tokens, *(_private_pem(key).splitlines()[3] for key in (RSA_KEY, PROVIDER_KEY))]
        for where, text in published.items():
            for secret in secrets:
                assert secret not in text, f"{where} holds a secret"

    logs = list(tmp_path.glob("*.log"))
    assert {"uvicorn.log", "dataplane.log"} <= {log.name for log in logs}
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{log.name} holds a secret"
