"""Settings shared by every environment.

Everything an operator may change comes from an environment variable with a documented default
(docs/settings.md). local.py, test.py and production.py change only what differs.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_ratio(name: str, default: float) -> float:
    value = env(name)
    if value is None:
        return default
    try:
        ratio = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number from 0 to 1, not {value!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ImproperlyConfigured(f"{name} must be a number from 0 to 1, not {value!r}")
    return ratio


def env_url(name: str) -> str:
    """An http(s) URL with a host, or "" when unset; checked at start-up."""
    value = env(name, "") or ""
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL, not {value!r}")
    return value


def env_positive_int(name: str, default: int) -> int:
    value = env_int(name, default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be at least 1, not {value}")
    return value


def env_networks(name: str) -> list[str]:
    """Comma-separated addresses or networks (`10.0.0.5`, `10.0.0.0/8`, `::1`), checked at start-up."""
    networks = env_list(name, [])
    for item in networks:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network") from None
    return networks


# --- Paths -------------------------------------------------------------------------------------
# GATEWAY_VAR_DIR holds the embedded defaults' state: SQLite database, filesystem broker, static files.
VAR_DIR = Path(env("GATEWAY_VAR_DIR", str(BASE_DIR / "var")))  # type: ignore[arg-type]

# --- Core --------------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
SECRET_KEY = env("DJANGO_SECRET_KEY", "")
DEBUG = False
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# The DEBUG error page and error reports hide secrets by setting name; this filter also masks the
# password inside connection URLs (DATABASE_URL, CELERY_BROKER_URL) in settings, META and frame variables.
# https://docs.djangoproject.com/en/5.2/howto/error-reporting/#custom-error-reports
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.error_reports.GatewayExceptionReporterFilter"

INSTALLED_APPS = [
    "controlplane.core.admin_site.GatewayAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "axes",
    "controlplane.core",
    "controlplane.accounts",
    "controlplane.breakers",
    "controlplane.routing",
    "controlplane.consumers",
    "controlplane.dataplanes",
    "controlplane.snapshots",
    "controlplane.health",
    "controlplane.stats",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "controlplane.core.middleware.RequestIdMiddleware",
    # Inside the request id (its errors carry it), outside everything that can fail or answer 404.
    "controlplane.core.api.errors.ApiErrorMiddleware",
    "controlplane.core.middleware.UrlKeyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns an admin login refused for too many failures into the 429 page (controlplane/accounts/lockout.py).
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ----------------------------------------------------------------------------------
# DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/gateway. Unset: the embedded default,
# SQLite under GATEWAY_VAR_DIR in WAL mode with immediate transactions and a busy timeout, so the
# web process and the worker can share it. PostgreSQL (psycopg 3) is what production and tests use.
# https://docs.djangoproject.com/en/5.2/ref/databases/
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "gateway.sqlite3"),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

# --- Auth --------------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/topics/auth/passwords/#password-validation
# Every place a password is set (users API, admin, createadmin, rungateway, password change) calls
# accounts.services, which runs these.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_positive_int("GATEWAY_PASSWORD_MIN_LENGTH", 12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # `aaaaaaaaaaaa`, `abcabcabcabc`, `abcdefghijkl`: long enough, yet guessed at once.
    {"NAME": "controlplane.accounts.validators.PatternPasswordValidator"},
]

# Axes first: it refuses a locked-out client before the password is hashed (no PBKDF2 CPU spent).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- Login lockout (django-axes) ---------------------------------------------------------------
# https://django-axes.readthedocs.io/en/latest/4_configuration.html ; the policy is described in
# docs/api.md#login-lockout and implemented in controlplane/accounts/lockout.py. Attempts are counted in
# the database (no cache or Redis needed), per (username, client address) and per client address, never
# per username alone: that would let anyone lock the real admin out from anywhere.
AXES_HANDLER = "controlplane.accounts.lockout.LoginAttemptHandler"
# Failures for one username from one address, within the cool-off, that lock that pair.
AXES_FAILURE_LIMIT = env_positive_int("GATEWAY_LOGIN_FAILURE_LIMIT", 5)
# Failures for any usernames from one address that lock the address (password spraying).
GATEWAY_LOGIN_ADDRESS_FAILURE_LIMIT = env_positive_int("GATEWAY_LOGIN_ADDRESS_FAILURE_LIMIT", 20)
# A lock lifts this long after the last failure; a failure while locked starts it again.
AXES_COOLOFF_TIME = timedelta(seconds=env_positive_int("GATEWAY_LOGIN_COOLOFF_SECONDS", 900))
# What axes' own checks and reset commands see; the two limits above are applied by the handler.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
# A successful login clears the failures of that (username, address) pair only.
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "controlplane.accounts.lockout.client_address"
AXES_USERNAME_CALLABLE = "controlplane.accounts.lockout.attempted_username"
AXES_LOCKOUT_CALLABLE = "controlplane.accounts.lockout.lockout_response"
# No row per successful login (it would grow forever and make a session per token login).
AXES_DISABLE_ACCESS_LOG = True
# The gateway's admin grants access by role; unlocking is `manage.py axes_reset_username NAME` / `axes_reset_ip IP`.
AXES_ENABLE_ADMIN = False
# Masked in the attempt records and axes' log lines (the password always is).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]
# The client address is the connection's peer (REMOTE_ADDR). Only when the peer is one of these proxies
# is X-Forwarded-For read, right to left, skipping these proxies: anyone else can write that header.
GATEWAY_TRUSTED_PROXIES = env_networks("GATEWAY_TRUSTED_PROXIES")

# --- Static files ------------------------------------------------------------------------------
# Served by ServeStatic (ASGI-aware), so nothing sync-only sits in front of the async sync API.
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"

# --- REST framework ----------------------------------------------------------------------------
# https://www.django-rest-framework.org/api-guide/settings/
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.core.permissions.RolePermission"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # DRF's JSONParser under a nesting limit and the text rules (controlplane/core/api/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["controlplane.core.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.core.api.pagination.LimitOffsetPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "controlplane.core.openapi.GatewayAutoSchema",
    "EXCEPTION_HANDLER": "controlplane.core.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# --- JWT (djangorestframework-simplejwt) ------------------------------------------------------
# The algorithm is pinned: tokens with any other "alg" (none, RS256, ...) are refused. The signing
# key is separate from SECRET_KEY so either can be rotated alone.
# https://django-rest-framework-simplejwt.readthedocs.io/en/latest/settings.html
JWT_SIGNING_KEY = env("JWT_SIGNING_KEY", "")
SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "VERIFYING_KEY": "",
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_TOKEN_SECONDS", 300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_TOKEN_SECONDS", 86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "LEEWAY": 0,
    # A password change invalidates every token issued before it.
    "CHECK_REVOKE_TOKEN": True,
    "REVOKE_TOKEN_CLAIM": "hash_password",
}

# --- OpenAPI (drf-spectacular) -----------------------------------------------------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "Gateway control plane API",
    "DESCRIPTION": "Endpoints, breaker policies, revisions and audit of the API gateway.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs UI's assets are served from this process, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Public on local setups; production.py requires config:read.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # The routes config/asgi.py answers before Django (sync long-poll, status, rollout wait).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.core.openapi.add_asgi_routes",
    ],
}

# --- Gateway -----------------------------------------------------------------------------------
# GATEWAY_ALLOW_LINK_LOCAL_TARGETS: allow target URLs on link-local / cloud-metadata addresses.
GATEWAY_ALLOW_LINK_LOCAL_TARGETS = env_bool("GATEWAY_ALLOW_LINK_LOCAL_TARGETS", False)
# A full copy of the document is stored every this many revisions; the others store only changes.
GATEWAY_REVISION_CHECKPOINT_EVERY = env_int("GATEWAY_REVISION_CHECKPOINT_EVERY", 50)
# GATEWAY_BASIC_AUTH_ITERATIONS: PBKDF2 rounds of the basic-auth password hashes the control plane makes from
# a password given in clear (docs/consumers.md); Django's own count by default. Each data plane pays them
# once per credential per minute (§11); configdoc accepts 100,000 to 5,000,000.
GATEWAY_BASIC_AUTH_ITERATIONS = env_int("GATEWAY_BASIC_AUTH_ITERATIONS", 1_000_000)
# A data-plane node that has not reported for this long is "stale" (not counted as live, and the system
# is degraded); after GATEWAY_NODE_GONE_SECONDS it is "gone": still listed, but no longer counted as
# degradation (a node stopped on purpose must not keep the fleet degraded until the purge; operators can
# also retire it at once). After GATEWAY_NODE_PURGE_SECONDS without a report it is deleted
# (ARCHITECTURE §4; nodes report every 10 s).
GATEWAY_NODE_STALE_SECONDS = env_int("GATEWAY_NODE_STALE_SECONDS", 60)
GATEWAY_NODE_GONE_SECONDS = max(GATEWAY_NODE_STALE_SECONDS, env_int("GATEWAY_NODE_GONE_SECONDS", 600))
GATEWAY_NODE_PURGE_SECONDS = env_int("GATEWAY_NODE_PURGE_SECONDS", 7 * 24 * 3600)

# --- Tracing (OpenTelemetry) -------------------------------------------------------------------
# docs/tracing.md, ARCHITECTURE §13. GATEWAY_OTLP_ENDPOINT: an OTLP/HTTP collector, e.g. http://127.0.0.1:4318
# (`/v1/traces` is added to a URL without a path). Unset: no tracing, and OpenTelemetry is not even imported
# (controlplane/core/tracing.py); the standard OTEL_EXPORTER_OTLP_*ENDPOINT variables alone do not turn it on.
GATEWAY_OTLP_ENDPOINT = env_url("GATEWAY_OTLP_ENDPOINT")
# The share of new traces kept (0-1); a request that arrives with a sampled traceparent is always kept.
GATEWAY_TRACE_SAMPLE = env_ratio("GATEWAY_TRACE_SAMPLE", 1.0)

# --- Celery ------------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html (the app: config/celery.py).
# CELERY_BROKER_URL, e.g. redis://127.0.0.1:6379/0. Unset: kombu's filesystem transport under
# GATEWAY_VAR_DIR/celery, so the embedded run needs nothing installed. Results are never stored:
# tasks write what they learn to the database.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "filesystem://")
CELERY_DIR = VAR_DIR / "celery"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(CELERY_DIR / "queue"),
        "data_folder_out": str(CELERY_DIR / "queue"),
        "processed_folder": str(CELERY_DIR / "processed"),
        "control_folder": str(CELERY_DIR / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL == "filesystem://"
    else {}
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(CELERY_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"
# A task lost with a worker crash is simply claimed again once its lease runs out (§7), so late acks
# are not needed; prefetch one so a busy worker does not sit on ticks another could run.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A broker restart must not need a worker or beat restart: retry the broker connection at
# start-up and after a loss, forever (None; Celery's default gives up after 100 tries, ~50 min).
# tests/e2e/test_health_broker_restart.py kills and restarts Redis under a running worker and beat.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# No task uses late acks, so this changes nothing but Celery 6's default, and silences the pending
# deprecation warning a worker logs at each broker connection loss.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# --- Logging -----------------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every request (each health probe) at INFO: too loud for an operator's log.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
