"""Fixtures shared by the end-to-end suites."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["native", "aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    """The data plane's upstream client (DATAPLANE_TRANSPORT): the wire, fault and TLS suites that ask
    for it run against each."""
    return str(request.param)
