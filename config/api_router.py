"""Every API route under /api/v1/, in one place."""

from django.urls import path
from rest_framework.routers import DefaultRouter
from rest_framework_simplejwt.views import TokenBlacklistView, TokenRefreshView, TokenVerifyView

from controlplane.accounts.api.views import PasswordChangeApi, RoleViewSet, TokenObtainApi, UserViewSet
from controlplane.breakers.api.views import BreakerPolicyViewSet, BreakerViewSet
from controlplane.consumers.api.views import ConsumerViewSet
from controlplane.core.api.history import AuditEventViewSet, ConfigRevisionViewSet
from controlplane.dataplanes.api.views import DataPlaneNodeViewSet
from controlplane.health.api.views import EndpointCheckApi, TargetHealthViewSet
from controlplane.routing.api.resolve import RouteResolveApi
from controlplane.routing.api.views import EndpointViewSet
from controlplane.snapshots.api.plugins import PluginsApi
from controlplane.snapshots.api.views import ConfigExportApi, ConfigImportApi
from controlplane.stats.api.views import EndpointConsumersApi, EndpointStatsApi, StatsApi, StatsSummaryApi

router = DefaultRouter()

# --- config -------------------------------------------------------------------------------------
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("breaker-policies", BreakerPolicyViewSet, basename="breaker-policy")
# consumers/{username}/keys/ (POST: a key, shown once) and keys/{label}/ (DELETE) are actions of the ViewSet.
router.register("consumers", ConsumerViewSet, basename="consumer")

# --- accounts -----------------------------------------------------------------------------------
router.register("users", UserViewSet, basename="user")
router.register("roles", RoleViewSet, basename="role")

# --- history ------------------------------------------------------------------------------------
router.register("revisions", ConfigRevisionViewSet, basename="revision")
router.register("audit", AuditEventViewSet, basename="audit")

# --- health -------------------------------------------------------------------------------------
router.register("health", TargetHealthViewSet, basename="target-health")

# --- breakers: the fleet's states, force / reset overrides (operational state, §6) -----------------
router.register("breakers", BreakerViewSet, basename="breaker")

# --- data-plane nodes: what each runs, when it last reported (revisions/{n}/wait/ is in config/asgi.py) ---
router.register("dataplanes", DataPlaneNodeViewSet, basename="dataplane-node")

urlpatterns = [
    # --- JWT (simplejwt): obtain, rotating refresh, verify, logout (blacklists the refresh token) -----
    # Obtain checks a password, so it is behind the login lockout (controlplane/accounts/lockout.py).
    path("auth/token/", TokenObtainApi.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("auth/token/verify/", TokenVerifyView.as_view(), name="token-verify"),
    path("auth/logout/", TokenBlacklistView.as_view(), name="token-logout"),
    path("auth/password/", PasswordChangeApi.as_view(), name="password-change"),
    # --- the config document (snapshots): export and import as a whole ------------------------------
    path("config/export/", ConfigExportApi.as_view(), name="config-export"),
    path("config/import/", ConfigImportApi.as_view(), name="config-import"),
    # --- the document's global plugins (§11): every endpoint runs them unless it sets the same name --
    path("plugins/", PluginsApi.as_view(), name="plugins"),
    # --- operator tools: where would the data plane send this path (configdoc's matcher) -------------
    path("routes/resolve/", RouteResolveApi.as_view(), name="routes-resolve"),
    # --- health: probe an endpoint's targets now ----------------------------------------------------
    path("endpoints/<str:key>/check/", EndpointCheckApi.as_view(), name="endpoint-check"),
    # --- traffic statistics from the data planes' reports ---------------------------------------------
    path("stats/", StatsApi.as_view(), name="stats"),
    path("stats/summary/", StatsSummaryApi.as_view(), name="stats-summary"),
    path("stats/endpoints/<str:key>/", EndpointStatsApi.as_view(), name="stats-endpoint"),
    path("stats/endpoints/<str:key>/consumers/", EndpointConsumersApi.as_view(), name="stats-endpoint-consumers"),
    *router.urls,
]
