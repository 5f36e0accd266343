"""One variable, GATEWAY_TEST_REDIS_URL, moves every Redis database the suite and the benches use, so two
runs on one machine do not consume or flush each other's queues (tests/redis_databases.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_databases import DEFAULT, USERS, VARIABLE, redis_url_for

ROOT = Path(__file__).resolve().parent.parent

# What a run sees, read in a fresh interpreter the way pytest and the bench load them.
PROBE = """
import importlib.util, json, django
django.setup()
from django.conf import settings
import tests.e2e.test_health_celery as celery_test, tests.e2e.test_health_routing as routing_test
spec = importlib.util.spec_from_file_location("health_scale", "bench/health_scale.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
print(json.dumps([settings.CELERY_BROKER_URL, celery_test.BROKER, routing_test.BROKER, bench.BROKER]))
"""


def brokers_of_a_run(base: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", VARIABLE}}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    if base is not None:
        env[VARIABLE] = base
    finished = subprocess.run(  # noqa: S603 - our own interpreter and probe
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_one_variable_moves_every_redis_database_the_suite_and_the_bench_use() -> None:
    first = brokers_of_a_run("redis://127.0.0.1:6379/0")
    second = brokers_of_a_run("redis://127.0.0.1:6379/4")

    assert first == [f"redis://127.0.0.1:6379/{n}" for n in range(4)]
    assert second == [f"redis://127.0.0.1:6379/{n}" for n in range(4, 8)]
    assert not set(first) & set(second)  # two runs, nothing shared


def test_the_default_keeps_four_databases_of_their_own() -> None:
    assert brokers_of_a_run(None) == [f"{DEFAULT.rsplit('/', 1)[0]}/{n}" for n in range(12, 16)]


def test_the_scheme_keeps_the_server_and_counts_from_the_given_database() -> None:
    env = {VARIABLE: "redis://:pw@127.0.0.2:6380/8"}
    assert [redis_url_for(user, env) for user in USERS] == [f"redis://:pw@127.0.0.2:6380/{n}" for n in range(8, 12)]
    assert redis_url_for("settings", {VARIABLE: "redis://127.0.0.1:6379"}) == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("bad", ["http://127.0.0.1:6379/1", "redis://127.0.0.1:6379/x", "redis://h/1?db=2"])
def test_a_malformed_variable_is_refused_with_its_name(bad: str) -> None:
    with pytest.raises(ValueError, match=VARIABLE):
        redis_url_for("settings", {VARIABLE: bad})
