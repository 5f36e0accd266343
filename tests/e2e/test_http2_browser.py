"""Browsers get HTTP/2 over TLS (ARCHITECTURE §13), as a browser shows it: headless Chromium (the
helpers of test_cors_browser.py) loads a page through the data plane's TLS listener, the page served by
a real upstream behind an endpoint, and the page's own script reports what the browser negotiated.

Chromium trusts the listener's certificate by its SPKI pin (`--ignore-certificate-errors-spki-list`),
not by ignoring every certificate error. Asserted from the page's JavaScript: the navigation came over
`h2`; a same-origin `fetch()` of a key_auth endpoint with the key reads the upstream's answer, also over
`h2`; without the key it reads the gateway's 401 JSON. On the plain listener Chromium speaks http/1.1
(browsers never use h2c)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from configdoc.consumers import hash_key
from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.dataplane.tls_certs import Authority
from tests.e2e.servers import free_port, http_server
from tests.e2e.test_cors_browser import CHROMEDRIVER, CHROMIUM, require_browser

pytestmark = pytest.mark.e2e

KEY = "browser-h2-key-Q4m8"

# The page: says how it came (its navigation entry's nextHopProtocol), then fetches the keyed API
# with and without the key (same origin: no CORS) and writes all of it into #result as JSON.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>h2 probe</title></head>
<body><pre id="result">pending</pre>
<script>
const key = new URLSearchParams(location.search).get("key");
const protocolOf = (url) => {
  const entries = performance.getEntriesByType("resource").filter((e) => e.name === url);
  return entries.length ? entries[entries.length - 1].nextHopProtocol : null;
};
const call = async (path, headers) => {
  const url = new URL(path, location.href).href;
  try {
    const r = await fetch(url, {headers, cache: "no-store"});
    return {status: r.status, type: r.headers.get("content-type"), body: await r.text(), protocol: protocolOf(url)};
  } catch (error) {
    return {error: error.name + ": " + error.message};
  }
};
(async () => {
  const navigation = performance.getEntriesByType("navigation")[0].nextHopProtocol;
  const keyed = await call("/keyed/echo?with=key", {apikey: key});
  const missing = await call("/keyed/echo?with=none", {});
  document.getElementById("result").textContent = JSON.stringify({navigation, keyed, missing});
})();
</script></body></html>
"""


class PageHandler(BaseHTTPRequestHandler):
    """The site's own server (the upstream of the `site` endpoint): the page, at any path."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        pass


@dataclass
class Edge:
    node: DataPlane
    tls_port: int
    spki_pin: str  # base64 of the SHA-256 of the served certificate's SubjectPublicKeyInfo


def spki_pin(certificate: x509.Certificate) -> str:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    workdir = tmp_path_factory.mktemp("http2-browser")
    ca = Authority.create(workdir)
    certs = workdir / "certs"
    certs.mkdir()
    leaf = ca.issue(certs / "default.pem", "localhost")
    tls_port = free_port()

    def endpoint(name: str, url: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "version": "v1", "methods": ["GET"], "targets": [{"url": url}], **fields}

    with http_server(PageHandler) as page_port, upstream(workdir, "api") as api:
        document = {
            "format_version": 2,
            "consumers": [{"username": "browser", "key_auth": [{"key_sha256": hash_key(KEY), "label": "k"}]}],
            "endpoints": [
                endpoint("site", f"http://127.0.0.1:{page_port}"),
                endpoint("keyed", api.url, plugins={"key_auth": {"key_names": ["apikey"], "in": ["header"]}}),
            ],
        }
        with dataplane(
            workdir, document, DATAPLANE_TLS_LISTEN=f"127.0.0.1:{tls_port}", DATAPLANE_TLS_CERTS=str(certs)
        ) as node:
            yield Edge(node, tls_port, spki_pin(leaf))


@contextmanager
def chromium(tmp_path: Path, pin: str) -> Iterator[Any]:
    """test_cors_browser.py's Chromium, trusting only the certificate whose SPKI hashes to `pin`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--ignore-certificate-errors-spki-list={pin}",
    ):  # fmt: skip
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def page_outcome(driver: Any, url: str) -> dict[str, Any]:
    driver.get(str(httpx.URL(url, params={"key": KEY})))
    result = driver.find_element(By.ID, "result")
    WebDriverWait(driver, 30).until(lambda _: result.text != "pending")
    found: dict[str, Any] = json.loads(result.text)
    return found


def assert_api_answers(got: dict[str, Any], protocol: str) -> None:
    keyed, missing = got["keyed"], got["missing"]
    assert keyed.get("status") == 200, got
    echo = json.loads(keyed["body"])
    assert echo["name"] == "api" and echo["raw_path"] == "/echo" and echo["query"] == "with=key"
    assert keyed["protocol"] == protocol, got
    assert missing.get("status") == 401, got
    assert missing["type"].startswith("application/json"), got
    assert json.loads(missing["body"])["error"] == "unauthorized", got
    assert missing["protocol"] == protocol, got


def test_chromium_loads_a_page_and_calls_the_api_over_http2_on_the_tls_listener(tmp_path: Path, edge: Edge) -> None:
    require_browser()
    with chromium(tmp_path, edge.spki_pin) as driver:
        got = page_outcome(driver, f"https://localhost:{edge.tls_port}/site/index.html")
    assert got["navigation"] == "h2", got
    assert_api_answers(got, "h2")


def test_chromium_speaks_http_1_1_on_the_plain_listener(tmp_path: Path, edge: Edge) -> None:
    require_browser()
    with chromium(tmp_path, edge.spki_pin) as driver:
        got = page_outcome(driver, f"http://localhost:{edge.node.port}/site/index.html")
    assert got["navigation"] == "http/1.1", got
    assert_api_answers(got, "http/1.1")


def test_chromium_refuses_the_listener_without_the_pin(tmp_path: Path, edge: Edge) -> None:
    """The pin is what makes Chromium trust the test certificate: without it the page never loads."""
    require_browser()
    with chromium(tmp_path, base64.b64encode(b"\0" * 32).decode()) as driver:
        driver.get(f"https://localhost:{edge.tls_port}/site/index.html")
        assert "pending" not in driver.page_source and "h2 probe" not in driver.page_source
