"""The admin's dashboards in a real browser: headless Chromium (Debian `chromium` and
`chromium-driver`, driven by Selenium) logs in through the admin's login form on a real control plane
(uvicorn on the test database), with endpoints imported over the API and traffic and an open breaker
reported by two data-plane nodes over `POST /api/v1/dataplane/status`, as real nodes report.

Asserted: the landing page shows both nodes, the open breaker (on one node of two) and the traffic
charts with drawn lines; the endpoint's dashboard shows request-rate, error-rate and latency charts
with drawn lines and the breaker state per node. Without Chromium or ChromeDriver the test fails and
says what to install: CI installs both (.ci/run).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from controlplane.core.actors import Actor
from controlplane.dataplanes.services import dataplane_token_issue
from tests.controlplane.test_dashboards import OPEN, counters, report
from tests.e2e.test_sync_longpoll import control_plane

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct-horse-battery-staple-42"
DOCUMENT = """
format_version: 1
endpoints:
  - name: users
    version: v1
    targets: [{url: "http://127.0.0.1:9/users"}]
  - name: orders
    version: v1
    targets: [{url: "http://127.0.0.1:9/orders"}]
"""


def create_admin() -> None:
    # Hashed with a hasher the server's settings know (the test settings use a fast one it does not).
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "e2e-salt", iterations=1000)
    user = get_user_model().objects.create(username="admin", password=hashed, is_staff=True)
    user.groups.add(Group.objects.get(name="admin"))


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
        "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def import_endpoints(base: str) -> None:
    """The operator's way: a JWT from auth/token/, then the document to config/import/."""
    with httpx.Client(base_url=base, timeout=30) as client:
        tokens = client.post("/api/v1/auth/token/", json={"username": "admin", "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        answer = client.post(
            "/api/v1/config/import/",
            content=DOCUMENT,
            headers={"Authorization": f"Bearer {tokens.json()['access']}", "Content-Type": "application/yaml"},
        )
        assert answer.status_code in (200, 201), answer.text
        assert answer.json()["revision"] is not None, answer.text


def send_reports(base: str, secret: str) -> None:
    """Two nodes report twice, their cumulative counters growing between reports; edge-a's users:v1
    breaker opens by the second report. Both run the latest revision."""
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {secret}"}) as client:
        revision = client.get("/api/v1/dataplane/config").json()["revision"]
        reports = [
            report("edge-a", revision=revision, **{"users:v1": counters(20, 0), "orders:v1": counters(4, 0)}),
            report("edge-b", revision=revision, **{"users:v1": counters(10, 0)}),
            report(
                "edge-a", revision=revision, breakers={"users:v1": OPEN},
                **{"users:v1": counters(60, 20, errors={"circuit_open": 5}), "orders:v1": counters(9, 0)},
            ),
            report("edge-b", revision=revision, **{"users:v1": counters(30, 1)}),
        ]  # fmt: skip
        for body in reports:
            answer = client.post("/api/v1/dataplane/status", json=body)
            assert answer.status_code == 204, answer.text


def drawn_charts(driver: Any) -> dict[str, list[str]]:
    """data-chart name → the path data of each series drawn in it, as the browser parsed the page."""
    from selenium.webdriver.common.by import By

    charts: dict[str, list[str]] = {}
    for svg in driver.find_elements(By.CSS_SELECTOR, "svg.gw-chart"):
        paths = svg.find_elements(By.CSS_SELECTOR, "path.gw-series")
        charts[svg.get_attribute("data-chart")] = [path.get_attribute("d") or "" for path in paths]
    return charts


def click_through(driver: Any, element: Any, expect_id: str) -> None:
    """Click a link or button and wait until the next page has loaded and shows `expect_id` (a click,
    unlike `driver.get`, returns before the navigation it starts has finished)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old_page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, 30)
    wait.until(expected_conditions.staleness_of(old_page))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    wait.until(expected_conditions.presence_of_element_located((By.ID, expect_id)))


def test_an_admin_sees_the_fleet_and_an_endpoints_charts_in_chromium(tmp_path: Path) -> None:
    require_browser()
    from selenium.webdriver.common.by import By

    create_admin()
    _, secret = dataplane_token_issue(name="edge", actor=Actor.command("test"))
    with control_plane(tmp_path) as (base, _), chromium(tmp_path) as driver:
        import_endpoints(base)
        send_reports(base, secret)

        driver.get(f"{base}/admin/login/?next=/admin/")
        driver.find_element(By.NAME, "username").send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        click_through(driver, driver.find_element(By.CSS_SELECTOR, "input[type=submit]"), "fleet-dashboard")

        # The landing page: both nodes live, the open breaker on one of two nodes, traffic drawn.
        charts = drawn_charts(driver)
        assert {"request-rate", "error-rate"} <= set(charts), charts
        for name in ("request-rate", "error-rate"):
            assert charts[name] and all(d.startswith("M") for d in charts[name]), (name, charts[name])
        nodes = driver.find_element(By.ID, "fleet-nodes").text
        assert "edge-a" in nodes and "edge-b" in nodes and "up to date" in nodes, nodes
        assert driver.find_element(By.ID, "card-nodes").text.startswith("2\nlive nodes")
        breakers = driver.find_element(By.ID, "fleet-breakers").text
        assert "users:v1" in breakers and "1 of 2 nodes" in breakers and "edge-a: open" in breakers, breakers
        traffic = driver.find_element(By.ID, "card-traffic").text
        assert traffic.startswith("120\n"), traffic  # 60+20 and 9 from edge-a, 30+1 from edge-b
        assert driver.find_element(By.ID, "system-status").text == "degraded"

        # Follow the breaker's link to the endpoint's dashboard.
        click_through(
            driver, driver.find_element(By.CSS_SELECTOR, "#fleet-breakers td.breaker-endpoint a"), "card-requests"
        )
        assert "/dashboard/" in driver.current_url
        charts = drawn_charts(driver)
        assert set(charts) == {"request-rate", "error-rate", "latency"}, charts
        assert len(charts["latency"]) == 3, charts["latency"]  # p50, p95, p99
        assert all(d.startswith("M") for series in charts.values() for d in series), charts
        titles = [svg.find_element(By.TAG_NAME, "title").get_attribute("textContent") for svg in
                  driver.find_elements(By.CSS_SELECTOR, "svg.gw-chart")]  # fmt: skip
        assert any(title.startswith("Latency") for title in titles), titles
        per_node = driver.find_element(By.ID, "endpoint-breakers").text
        assert "edge-a open" in per_node and "edge-b closed" in per_node, per_node
        assert driver.find_element(By.ID, "card-requests").text.startswith("111\n"), "60+20 and 30+1 requests"

        # The window switch.
        click_through(driver, driver.find_element(By.LINK_TEXT, "24h"), "card-requests")
        assert driver.current_url.endswith("?window=24h")
        assert set(drawn_charts(driver)) == {"request-rate", "error-rate", "latency"}
