"""Upstream TLS is verified unless the endpoint says otherwise (ARCHITECTURE §5)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.dataplane.processes import DataPlane, dataplane, seed, self_signed_certificate, tls_upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, transport: str) -> Iterator[DataPlane]:
    workdir = tmp_path_factory.mktemp(f"tls-{transport}")
    cert, key = self_signed_certificate(workdir)
    with tls_upstream(workdir, cert, key) as secure:
        url = f"https://127.0.0.1:{secure.port}"
        document = seed(
            {"name": "verified", "version": "v1", "targets": [{"url": url}]},
            {"name": "pinned", "version": "v1", "targets": [{"url": url}], "tls": {"ca_file": str(cert)}},
            {"name": "unverified", "version": "v1", "targets": [{"url": url}], "tls": {"verify": False}},
            {"name": "kept", "version": "v1", "targets": [{"url": url}], "tls": {"ca_file": str(cert)}},
        )
        document["format_version"] = 2  # preserve_host (§11)
        document["endpoints"][-1]["preserve_host"] = True
        with dataplane(workdir, document, DATAPLANE_TRANSPORT=transport) as node:
            yield node


def test_an_upstream_with_an_untrusted_certificate_is_refused(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/v1/verified/x")
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unavailable"


def test_an_upstream_certificate_signed_by_the_endpoints_ca_file_is_trusted(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/v1/pinned/x")
    assert response.status_code == 200
    assert response.json()["name"] == "secure"


def test_an_endpoint_can_turn_verification_off(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/v1/unverified/x").status_code == 200


def test_preserve_host_sends_the_clients_host_but_verifies_the_targets_name(gateway: DataPlane) -> None:
    # The certificate names 127.0.0.1 only: SNI and verification stay the target's, the Host is the client's.
    response = httpx.get(f"{gateway.url}/v1/kept/echo", headers={"Host": "api.example.com"})
    assert response.status_code == 200, response.text
    assert ["host", "api.example.com"] in response.json()["headers"]
