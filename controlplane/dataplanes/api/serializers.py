"""A data-plane node as the API shows it: its last report plus what the control plane derives from it."""

from __future__ import annotations

import time
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import DataPlaneNode
from ..selectors import GONE, LIVE, NODE_STATES, STALE, NodeClock

__all__ = [
    "GONE",
    "LIVE",
    "NODE_STATES",
    "STALE",
    "DataPlaneNodeSerializer",
    "certificates",
    "node_lag",
    "open_breakers",
]

OPEN_STATES = frozenset({"open", "half_open"})


def node_lag(node: DataPlaneNode, latest: int | None) -> int | None:
    """Revisions behind the latest one; None when the node runs no revision (a seed, or nothing) or none exists."""
    if node.revision is None or latest is None:
        return None
    return max(0, latest - node.revision)


def open_breakers(node: DataPlaneNode) -> int:
    """Endpoints whose breaker this node reports open or half-open (an override included)."""
    breakers = node.breakers if isinstance(node.breakers, dict) else {}
    return sum(1 for entry in breakers.values() if isinstance(entry, dict) and entry.get("state") in OPEN_STATES)


def certificates(node: DataPlaneNode, now: float | None = None) -> list[dict[str, Any]]:
    """The node's TLS certificates as reported (§13), soonest expiry first, each with `expires_in`
    (seconds from now to its notAfter, negative once expired)."""
    now = time.time() if now is None else now
    reported = node.certificates if isinstance(node.certificates, list) else []
    shown = [
        {**entry, "expires_in": round(entry["not_after"] - now)}
        for entry in reported
        if isinstance(entry, dict) and isinstance(entry.get("not_after"), (int, float))
    ]
    return sorted(shown, key=lambda entry: entry["not_after"])


class CertificateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(help_text="the certificate file's name without .pem")
    names = serializers.ListField(child=serializers.CharField(), help_text="the DNS names it serves")
    not_after = serializers.FloatField(help_text="when it expires, unix seconds")
    expires_in = serializers.IntegerField(help_text="seconds until it expires; negative once expired")


class DataPlaneNodeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    state = serializers.SerializerMethodField(
        help_text="live (reported within GATEWAY_NODE_STALE_SECONDS) | stale (counts as degradation) | "
        "gone (silent over GATEWAY_NODE_GONE_SECONDS; listed, not counted)"
    )
    lag = serializers.SerializerMethodField(help_text="the latest revision minus the node's; null without one")
    open_breakers = serializers.SerializerMethodField(help_text="endpoints with an open or half-open breaker here")
    certificates = serializers.SerializerMethodField(
        help_text="the node's TLS listener certificates, soonest expiry first (empty without a TLS listener)"
    )

    class Meta:
        model = DataPlaneNode
        fields = [
            "node_id",
            "token_name",
            "boot_id",
            "hostname",
            "version",
            "revision",
            "config_sha256",
            "state_seq",
            "result",
            "error",
            "last_seen",
            "state",
            "lag",
            "open_breakers",
            "certificates",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=NODE_STATES))
    def get_state(self, node: DataPlaneNode) -> str:
        clock: NodeClock = self.context.get("clock") or NodeClock.at()
        return clock.state(node)

    def get_lag(self, node: DataPlaneNode) -> int | None:
        return node_lag(node, self.context["latest_revision"])

    def get_open_breakers(self, node: DataPlaneNode) -> int:
        return open_breakers(node)

    @extend_schema_field(CertificateSerializer(many=True))
    def get_certificates(self, node: DataPlaneNode) -> list[dict[str, Any]]:
        return certificates(node)
