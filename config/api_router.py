"""Every API route under /api/v1/, in one place."""

from django.urls import path
from rest_framework.routers import DefaultRouter
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenRefreshView, TokenVerifyView

from controlplane.breakers.api.views import BreakerPolicyViewSet
from controlplane.core.api.history import AuditEventViewSet, ConfigRevisionViewSet
from controlplane.routing.api.views import EndpointViewSet

router = DefaultRouter()

# --- config -------------------------------------------------------------------------------------
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("breaker-policies", BreakerPolicyViewSet, basename="breaker-policy")

# --- history ------------------------------------------------------------------------------------
router.register("revisions", ConfigRevisionViewSet, basename="revision")
router.register("audit", AuditEventViewSet, basename="audit")

urlpatterns = [
    # --- JWT (simplejwt): obtain, rotating refresh, verify, logout (blacklists the refresh token) -----
    path("auth/token/", TokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("auth/token/verify/", TokenVerifyView.as_view(), name="token-verify"),
    path("auth/logout/", TokenBlacklistView.as_view(), name="token-logout"),
    *router.urls,
]
