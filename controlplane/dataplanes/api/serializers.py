"""A data-plane node as the API shows it: its last report plus what the control plane derives from it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import DataPlaneNode
from ..selectors import GONE, LIVE, NODE_STATES, STALE, NodeClock

__all__ = ["GONE", "LIVE", "NODE_STATES", "STALE", "DataPlaneNodeSerializer", "node_lag", "open_breakers"]

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


class DataPlaneNodeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    state = serializers.SerializerMethodField(
        help_text="live (reported within GATEWAY_NODE_STALE_SECONDS) | stale (counts as degradation) | "
        "gone (silent over GATEWAY_NODE_GONE_SECONDS; listed, not counted)"
    )
    lag = serializers.SerializerMethodField(help_text="the latest revision minus the node's; null without one")
    open_breakers = serializers.SerializerMethodField(help_text="endpoints with an open or half-open breaker here")

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
