"""The Redis databases the test suite and the benches use, all from one variable.

`GATEWAY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/12`) names a Redis server and the first of
four consecutive databases, one per user, so that nothing flushes or consumes another's queue:

    N + 0   the Celery broker of the test settings (config/settings/test.py)
    N + 1   tests/e2e/test_health_celery.py (its own worker and beat)
    N + 2   tests/e2e/test_health_routing.py (flushes its database first)
    N + 3   bench/health_scale.py (flushes its database first)

Two runs on one machine (two checkouts, two CI jobs) each set their own, e.g. `.../0` and `.../4`, or
point at different Redis servers. Dependency-free, so settings, tests and benches can all import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

VARIABLE = "GATEWAY_TEST_REDIS_URL"
DEFAULT = "redis://127.0.0.1:6379/12"
USERS = ("settings", "health_celery", "health_routing", "health_bench")


def redis_url_for(user: str, environ: Mapping[str, str] = os.environ) -> str:
    """The Redis URL (database included) of one of USERS, from GATEWAY_TEST_REDIS_URL."""
    base = environ.get(VARIABLE) or DEFAULT
    parts = urlsplit(base)
    if parts.scheme not in ("redis", "rediss") or parts.query or parts.fragment:
        raise ValueError(f"{VARIABLE} must be redis://HOST:PORT[/FIRST-DB], not {base!r}")
    first = parts.path.strip("/") or "0"
    if not first.isdigit():
        raise ValueError(f"{VARIABLE}: the database number must be a whole number, not {first!r}")
    return urlunsplit((parts.scheme, parts.netloc, f"/{int(first) + USERS.index(user)}", "", ""))
