"""TLS termination's pieces in-process (ARCHITECTURE §13): reading the certificate folder, choosing by
SNI, the report's certificates, and `https_redirect` (its Location, and when it does not apply).
The listener itself, on real processes: tests/e2e/test_dataplane_tls_termination.py."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from configdoc import validate_document
from configdoc.reports import validate_certificates
from dataplane.report import build_certificates
from dataplane.settings import Settings, SettingsError
from dataplane.tls import Certificates, NoCertificates, read_folder
from tests.dataplane.harness import Gateway, ok
from tests.dataplane.tls_certs import Authority


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    folder.mkdir()
    return folder


def test_names_are_chosen_exact_first_then_one_label_wildcard_then_default(ca: Authority, certs: Path) -> None:
    ca.issue(certs / "default.pem", "default.test")
    ca.issue(certs / "exact.pem", "a.example.com")
    ca.issue(certs / "wild.pem", "*.example.com")
    chosen = read_folder(certs)
    assert chosen.choose("a.example.com").file == "exact.pem"
    assert chosen.choose("A.Example.Com.").file == "exact.pem"  # case and a trailing dot do not matter
    assert chosen.choose("b.example.com").file == "wild.pem"
    assert chosen.choose("example.com").file == "default.pem"
    assert chosen.choose("x.b.example.com").file == "default.pem"
    assert chosen.choose(None).file == "default.pem"
    assert chosen.choose("").file == "default.pem"


def test_without_default_pem_the_first_file_by_name_is_the_default(ca: Authority, certs: Path) -> None:
    ca.issue(certs / "b.pem", "b.test")
    ca.issue(certs / "a.pem", "a.test")
    assert read_folder(certs).default.file == "a.pem"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x01\x02 binary garbage",
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        "\udcff lone surrogate".encode("utf-8", "surrogateescape"),
    ],
)
def test_a_bad_file_is_logged_and_skipped(
    ca: Authority, certs: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ca.issue(certs / "default.pem", "default.test")
    (certs / "bad.pem").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="dataplane"):
        loaded = read_folder(certs)
    assert [certificate.file for certificate in loaded.certificates] == ["default.pem"]
    assert f"TLS: skipped {certs / 'bad.pem'}" in caplog.text


def test_a_certificate_without_its_key_or_with_another_key_is_skipped(ca: Authority, certs: Path) -> None:
    ca.issue(certs / "default.pem", "default.test")
    ca.issue(certs / "other.pem", "other.test")
    pem = (certs / "other.pem").read_text()
    certificate_only = pem.split("-----BEGIN PRIVATE KEY-----")[0]
    (certs / "nokey.pem").write_text(certificate_only)
    ca.issue(certs / "third.pem", "third.test")
    key_of_third = (
        "-----BEGIN PRIVATE KEY-----" + (certs / "third.pem").read_text().split("-----BEGIN PRIVATE KEY-----")[1]
    )
    (certs / "mismatch.pem").write_text(certificate_only + key_of_third)
    loaded = {certificate.file for certificate in read_folder(certs).certificates}
    assert loaded == {"default.pem", "other.pem", "third.pem"}


def test_a_folder_without_a_usable_certificate_is_an_error_naming_it(certs: Path) -> None:
    (certs / "default.pem").write_bytes(b"nothing")
    with pytest.raises(NoCertificates, match=f"no usable certificate in {certs}"):
        read_folder(certs)
    with pytest.raises(NoCertificates, match="cannot read the folder"):
        read_folder(certs / "missing")


def test_files_not_ending_in_pem_and_hidden_ones_are_not_read(ca: Authority, certs: Path) -> None:
    ca.issue(certs / "default.pem", "default.test")
    ca.issue(certs / ".hidden.pem", "hidden.test")
    (certs / "notes.txt").write_text("hello")
    assert [c.file for c in read_folder(certs).certificates] == ["default.pem"]


def test_a_reload_that_finds_nothing_usable_keeps_the_certificates_it_had(ca: Authority, certs: Path) -> None:
    ca.issue(certs / "default.pem", "default.test")
    loaded = Certificates(certs)
    before = loaded.current
    (certs / "default.pem").write_bytes(b"broken during a renewal")
    assert asyncio.run(loaded.reload("test")) is False
    assert loaded.current is before


def test_the_report_lists_each_certificate_within_the_format_bounds(ca: Authority, certs: Path) -> None:
    ca.issue(certs / "default.pem", "default.test", "*.apps.example.com")
    ca.issue(certs / "odd name.pem", "odd.test")  # a space: not a name the report format allows
    ca.issue(certs / "old.pem", "old.test", days=-1)
    report = build_certificates(read_folder(certs))
    assert [entry["name"] for entry in report] == ["default", "old"]
    assert report[0]["names"] == ["default.test", "*.apps.example.com"]
    assert validate_certificates(report) == {}


# --- https_redirect ------------------------------------------------------------------------------------


def redirecting(**settings: Any) -> Gateway:
    data = {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            {"name": "shop", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010"}], "https_redirect": True},
            {"name": "open", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010"}]},
        ],
    }
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return Gateway(canonical, ok, **settings)


def get(gateway: Gateway, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.get(url, **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("tls_listen", "host", "url", "location"),
    [
        (
            ("127.0.0.1", 8443),
            "shop.example.com",
            "/v1/shop/cart?id=1",
            "https://shop.example.com:8443/v1/shop/cart?id=1",
        ),
        (("127.0.0.1", 443), "shop.example.com:8080", "/v1/shop/a%20b", "https://shop.example.com/v1/shop/a%20b"),
        (None, "shop.example.com", "/v1/shop/", "https://shop.example.com/v1/shop/"),
        (("127.0.0.1", 8443), "[2001:db8::1]:8080", "/v1/shop", "https://[2001:db8::1]:8443/v1/shop"),
        (("127.0.0.1", 8443), "10.0.0.5", "/v1/shop?q=%C3%A9", "https://10.0.0.5:8443/v1/shop?q=%C3%A9"),
    ],
)
def test_https_redirect_points_at_the_tls_listener(
    tls_listen: tuple[str, int] | None, host: str, url: str, location: str
) -> None:
    gateway = redirecting(tls_listen=tls_listen)
    response = get(gateway, url, headers={"Host": host})
    assert response.status_code == 308
    assert response.headers["location"] == location
    assert response.content == b"" and gateway.seen == []


def test_an_endpoint_without_https_redirect_is_served_over_plain_http() -> None:
    assert get(redirecting(), "/v1/open/x").status_code == 200


def test_a_client_saying_it_came_over_https_is_still_redirected() -> None:
    response = get(redirecting(), "/v1/shop/x", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 308


def test_a_trusted_proxy_that_terminated_tls_is_not_redirected() -> None:
    gateway = redirecting(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    assert get(gateway, "/v1/shop/x", headers={"X-Forwarded-Proto": "https"}).status_code == 200
    assert get(gateway, "/v1/shop/x", headers={"X-Forwarded-Proto": "http"}).status_code == 308


def test_https_redirect_needs_format_2_and_a_boolean() -> None:
    endpoint = {"name": "shop", "version": "v1", "targets": [{"url": "http://127.0.0.1:8010"}]}
    _, problems = validate_document({"format_version": 1, "endpoints": [{**endpoint, "https_redirect": True}]})
    assert any("https_redirect" in str(problem) and "format_version: 2" in str(problem) for problem in problems)
    _, problems = validate_document(
        {"format_version": 2, "endpoints": [{**endpoint, "https_redirect": "yes"}]}, max_format_version=2
    )
    assert any("https_redirect" in str(problem) for problem in problems)


# --- settings ------------------------------------------------------------------------------------------


def test_the_tls_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"DATAPLANE_TLS_LISTEN": "[::1]:8443", "DATAPLANE_TLS_CERTS": "/etc/gateway/certs", "DATAPLANE_TLS_POLL": "2"}
    )
    assert (settings.tls_listen, settings.tls_certs, settings.tls_poll) == (
        ("::1", 8443),
        Path("/etc/gateway/certs"),
        2,
    )
    assert Settings.from_env({}).tls_listen is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DATAPLANE_TLS_LISTEN": "127.0.0.1:8443"}, "DATAPLANE_TLS_CERTS"),
        ({"DATAPLANE_TLS_CERTS": "/certs"}, "DATAPLANE_TLS_LISTEN is required"),
        ({"DATAPLANE_TLS_LISTEN": "8443", "DATAPLANE_TLS_CERTS": "/certs"}, "DATAPLANE_TLS_LISTEN must be HOST:PORT"),
        ({"DATAPLANE_TLS_LISTEN": "h:0", "DATAPLANE_TLS_CERTS": "/c"}, "DATAPLANE_TLS_LISTEN must be HOST:PORT"),
        ({"DATAPLANE_TLS_LISTEN": "h:1", "DATAPLANE_TLS_CERTS": "/c", "DATAPLANE_TLS_POLL": "0"}, "DATAPLANE_TLS_POLL"),
        (
            {"DATAPLANE_TLS_LISTEN": "h:1", "DATAPLANE_TLS_CERTS": "/c", "DATAPLANE_TLS_POLL": "nan"},
            "DATAPLANE_TLS_POLL",
        ),
    ],
)
def test_a_bad_tls_setting_is_refused_naming_it(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)
