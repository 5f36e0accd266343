"""CORS as a browser enforces it (ARCHITECTURE §11): headless Chromium (Debian `chromium` and
`chromium-driver`, driven by Selenium) loads a page from one loopback origin, and the page's script
calls a real data plane on another port with `fetch(..., {credentials: 'include'})`, in front of a
real upstream that echoes what it received. The script writes what it got into the page, and the
test reads it from there: what a page's script can see, not what the wire says.

Asserted: a page on the allowed origin reads the upstream's answer (and the cookie its own server set
reaches the upstream, so the call really was credentialed), reads an exposed header, and gets through
a preflight (PUT with a custom header); a page on another origin gets "Failed to fetch", and so does
an allowed page asking for a header the gateway does not allow, whose request never reaches the
upstream. Without Chromium or ChromeDriver the test fails and says what to install (.ci/run installs both).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import http_server

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# The page: calls `url` with the method and the X-Custom header its query names, and writes the
# outcome into #result as JSON (the answer's status, body and exposed X-Request-ID, or the error).
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>cors probe</title></head>
<body><pre id="result">pending</pre>
<script>
const query = new URLSearchParams(location.search);
const init = {credentials: "include", method: query.get("method") || "GET"};
if (query.get("header")) init.headers = {[query.get("header")]: "from-the-page"};
if (init.method === "PUT") init.body = "page body";
const show = (outcome) => { document.getElementById("result").textContent = JSON.stringify(outcome); };
fetch(query.get("url"), init)
  .then(async (r) => show({status: r.status, body: await r.text(), requestId: r.headers.get("X-Request-ID")}))
  .catch((error) => show({error: error.name + ": " + error.message}));
</script></body></html>
"""


class PageHandler(BaseHTTPRequestHandler):
    """Serves the page (any path) and sets a cookie on its host, as a site's own server would."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Set-Cookie", "session=page-cookie; Path=/; SameSite=Lax")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        pass


def require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run does this)",
            pytrace=False,
        )


@contextmanager
def chromium(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def outcome(driver: Any, page: str, url: str, *, method: str = "GET", header: str = "") -> dict[str, Any]:
    """Load `page` with the call to make, wait for its script to write the outcome, and read it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(str(httpx.URL(page, params={"url": url, "method": method, "header": header})))
    result = driver.find_element(By.ID, "result")
    WebDriverWait(driver, 30).until(lambda _: result.text != "pending")
    found: dict[str, Any] = json.loads(result.text)
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cors-browser")


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[str, str]]:
    """Two page servers: two origins (their ports differ), the first one allowed."""
    with ExitStack() as stack:
        allowed, other = (stack.enter_context(http_server(PageHandler)) for _ in range(2))
        yield f"http://127.0.0.1:{allowed}", f"http://127.0.0.1:{other}"


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream, pages: tuple[str, str]) -> Iterator[DataPlane]:
    cors = {
        "origins": [pages[0]],
        "methods": ["GET", "POST", "PUT"],
        "headers": ["Content-Type", "X-Custom"],
        "expose_headers": ["X-Request-ID"],
        "credentials": True,
    }
    document = {
        "format_version": 2,
        "endpoints": [
            {
                "name": "users",
                "version": "v1",
                "methods": ["GET", "POST", "PUT"],
                "targets": [{"url": origin.url}],
                "plugins": {"cors": cors},
            }
        ],
    }
    with dataplane(workdir, document) as node:
        yield node


def test_a_page_on_an_allowed_origin_reads_a_credentialed_cross_origin_answer(
    tmp_path: Path, gateway: DataPlane, origin: Upstream, pages: tuple[str, str]
) -> None:
    require_browser()
    allowed, other = pages
    with chromium(tmp_path) as driver:
        got = outcome(driver, f"{allowed}/page", f"{gateway.url}/users/echo")
        assert got.get("status") == 200, got
        echo = json.loads(got["body"])
        assert echo["name"] == "echo" and echo["method"] == "GET"
        sent = {name: value for name, value in echo["headers"]}
        assert sent["origin"] == allowed
        assert sent.get("cookie") == "session=page-cookie", sent  # credentials: include, really
        assert got["requestId"], got  # exposed by expose_headers

        preflighted = outcome(driver, f"{allowed}/page", f"{gateway.url}/users/echo", method="PUT", header="X-Custom")
        assert preflighted.get("status") == 200, preflighted
        echo = json.loads(preflighted["body"])
        assert echo["method"] == "PUT" and echo["body"] == "page body"
        assert ["x-custom", "from-the-page"] in echo["headers"]

        refused = outcome(driver, f"{other}/page", f"{gateway.url}/users/echo")
        assert refused == {"error": "TypeError: Failed to fetch"}, refused

        not_allowed_header = outcome(
            driver, f"{allowed}/page", f"{gateway.url}/users/never-sent", method="PUT", header="X-Other"
        )
        assert not_allowed_header == {"error": "TypeError: Failed to fetch"}, not_allowed_header
    seen = httpx.get(f"{origin.url}/_seen").json()
    assert "/users/echo" not in seen and "/echo" in seen  # the endpoint strips its name
    assert not [path for path in seen if "never-sent" in path], seen  # the preflight stopped it
