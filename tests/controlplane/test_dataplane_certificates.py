"""A node's TLS certificates (ARCHITECTURE §13) in its status report: validated and bounded on the way
in, shown per node in the fleet view (API and admin) with their expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_framework.test import APIClient

from configdoc.reports import MAX_CERTIFICATE_NAMES, MAX_CERTIFICATES, validate_certificates
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.sync import DataPlaneSyncApp
from dataplane.app import build
from dataplane.settings import Settings
from dataplane.sync import Sync
from dataplane.tls import Certificates
from tests.controlplane.test_dataplane_sync import post_status, report, secret, with_app  # noqa: F401 - the fixture
from tests.controlplane.test_dataplanes_api import admin_browser
from tests.dataplane.tls_certs import Authority

pytestmark = pytest.mark.django_db

DAY = 86400


def certificate(name: str = "api", names: list[str] | None = None, days: float = 20) -> dict[str, Any]:
    return {"name": name, "names": names or ["api.example.com"], "not_after": time.time() + days * DAY}


def test_a_report_with_certificates_is_stored_and_the_api_shows_them_soonest_first(
    secret: str,  # noqa: F811 - the fixture
    readonly_client: APIClient,
) -> None:
    certificates = [certificate("api", days=20), certificate("old", ["old.example.com"], days=-2)]
    assert post_status(secret, report(certificates=certificates)).status_code == 204
    shown = readonly_client.get("/api/v1/dataplanes/edge-1-w0/").json()["certificates"]
    assert [entry["name"] for entry in shown] == ["old", "api"]
    assert shown[0]["expires_in"] < 0 < shown[1]["expires_in"] <= 20 * DAY
    assert shown[1]["names"] == ["api.example.com"]


def test_a_report_without_certificates_leaves_the_list_empty(secret: str, readonly_client: APIClient) -> None:  # noqa: F811
    assert post_status(secret, report()).status_code == 204
    assert readonly_client.get("/api/v1/dataplanes/edge-1-w0/").json()["certificates"] == []


def test_the_fleet_view_shows_each_nodes_soonest_expiry(secret: str, make_user: Callable[..., Any]) -> None:  # noqa: F811
    certificates = [certificate("api", days=20), certificate("wild", ["*.apps.example.com"], days=3)]
    assert post_status(secret, report(certificates=certificates)).status_code == 204
    browser = admin_browser(make_user, "readonly")
    page = browser.get("/admin/dataplanes/dataplanenode/").content.decode()
    assert "TLS expiry" in page and "wild: expires in 3 d" in page
    node = DataPlaneNode.objects.get()
    detail = browser.get(f"/admin/dataplanes/dataplanenode/{node.pk}/change/").content.decode()
    assert "api: expires in 20 d (api.example.com)" in detail and "*.apps.example.com" in detail


def test_an_expired_certificate_says_so_in_the_fleet_view(secret: str, make_user: Callable[..., Any]) -> None:  # noqa: F811
    assert post_status(secret, report(certificates=[certificate("old", days=-2)])).status_code == 204
    page = admin_browser(make_user, "readonly").get("/admin/dataplanes/dataplanenode/").content.decode()
    assert "old: EXPIRED 2 d ago" in page


@pytest.mark.parametrize(
    ("certificates", "field"),
    [
        ({"api": 1}, "certificates"),
        ([certificate()] * (MAX_CERTIFICATES + 1), "certificates"),
        (["api"], "certificates[0]"),
        ([{**certificate(), "key": "-----BEGIN PRIVATE KEY-----"}], "certificates[0].key"),
        ([{"name": "api", "names": []}], "certificates[0].not_after"),
        ([certificate(name="a b")], "certificates[0].name"),
        ([certificate(name="x\u0000y")], "certificates[0].name"),
        ([certificate(name="é" * 3)], "certificates[0].name"),
        ([certificate(name="n" * 201)], "certificates[0].name"),
        ([certificate(names=["API.example.com"])], "certificates[0].names"),
        ([certificate(names=["a..b"])], "certificates[0].names"),
        ([certificate(names=["*.*.example.com"])], "certificates[0].names"),
        ([certificate(names=["x" * 64 + ".com"])], "certificates[0].names"),
        ([certificate(names=[f"h{i}.example.com" for i in range(MAX_CERTIFICATE_NAMES + 1)])], "certificates[0].names"),
        ([certificate(names=[["nested"]])], "certificates[0].names"),  # type: ignore[list-item]
        ([{**certificate(), "not_after": float("inf")}], "certificates[0].not_after"),
        ([{**certificate(), "not_after": True}], "certificates[0].not_after"),
        ([{**certificate(), "not_after": -5}], "certificates[0].not_after"),
    ],
)
def test_a_malformed_certificates_list_is_refused_naming_the_field(
    secret: str,  # noqa: F811
    certificates: Any,
    field: str,
) -> None:
    assert field in validate_certificates(certificates)
    if field == "certificates[0].not_after" and certificates[0].get("not_after") == float("inf"):
        return  # not JSON: the report could not carry it
    response = post_status(secret, report(certificates=certificates))
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert not DataPlaneNode.objects.exists()


def test_a_data_planes_own_report_of_its_certificates_is_stored_and_shown(
    secret: str,  # noqa: F811
    tmp_path: Path,
    readonly_client: APIClient,
) -> None:
    """The real report (dataplane.sync.Sync.report) of a node with a TLS listener, to the real sync app."""
    ca = Authority.create(tmp_path)
    certs = tmp_path / "certs"
    certs.mkdir()
    ca.issue(certs / "default.pem", "api.example.com", "*.apps.example.com", days=30)
    ca.issue(certs / "old.pem", "old.example.com", days=-1)
    settings = Settings(control_plane_url="http://testserver", token=secret, node_id="edge-tls", tls_certs=certs)
    runtime, _, _ = build(settings)
    runtime.certificates = Certificates(certs)

    async def node(client: httpx.AsyncClient, app: DataPlaneSyncApp) -> bool:
        sync = Sync(runtime, transport=httpx.ASGITransport(app=app))
        async with sync._client() as sync_client:
            sync.client = sync_client
            return await sync.report()

    assert with_app(node)
    shown = readonly_client.get("/api/v1/dataplanes/edge-tls/").json()["certificates"]
    assert [(entry["name"], entry["names"]) for entry in shown] == [
        ("old", ["old.example.com"]),
        ("default", ["api.example.com", "*.apps.example.com"]),
    ]
    assert shown[0]["expires_in"] < 0 < 29 * DAY < shown[1]["expires_in"]
