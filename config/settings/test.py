"""Tests: real PostgreSQL (DATABASE_URL, default the local server), fast hashing, fixed keys."""

import os

from tests.redis_databases import redis_url_for

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway")
# Tests use a real Redis broker, on a database of its own: the first of GATEWAY_TEST_REDIS_URL's
# (tests/redis_databases.py), so two runs on one machine can each have their own.
os.environ.setdefault("CELERY_BROKER_URL", redis_url_for("settings"))

from .base import *  # noqa: E402, F403
from .base import SIMPLE_JWT  # noqa: E402

SECRET_KEY = "test-secret-key-not-for-production-0123456789-abcdefghijklmnop"
SIMPLE_JWT["SIGNING_KEY"] = "test-jwt-signing-key-not-for-production-0123456789"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The fewest rounds configdoc accepts: consumers' basic-auth hashes made by the tests stay cheap.
GATEWAY_BASIC_AUTH_ITERATIONS = 100_000
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

# Static files straight from the apps (no collectstatic before a test run).
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_AUTOREFRESH = True
