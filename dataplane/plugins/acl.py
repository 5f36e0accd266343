"""`acl` (ARCHITECTURE §11): let through or refuse callers by their consumer's groups (phase LATE,
priority 300: after the authentication gate, before `rate_limit`).

The caller is who the authentication phase named (authentication.identity): a consumer of the
document with its `groups`, the `anonymous` consumer with its own, or a caller without a consumer
(forward_auth's, or nobody when authentication only reports), who has no groups. With `allow`, a
caller passes only if one of its groups is listed; with `deny`, it is refused if one is (validation
makes sure exactly one of the two is set). Refused: 403 `forbidden`; in `mode: report` the request
goes on and the access log's `detail` and the metric say it would have been refused.
`gateway_policy_decisions_total{plugin="acl"}` counts `allow`, `deny` and `would_deny`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import Forbidden
from ..exchange import Exchange
from . import Answer, Phase, Plugin, PluginContext, register

NO_GROUPS: frozenset[str] = frozenset()


class Acl(Plugin):
    name: ClassVar[str] = "acl"
    phase: ClassVar[Phase] = Phase.LATE
    priority: ClassVar[int] = 300

    def __init__(self, allow: frozenset[str], deny: frozenset[str], *, report: bool) -> None:
        self.allow = allow
        self.deny = deny
        self.report = report

    def refuses(self, groups: frozenset[str]) -> bool:
        if self.deny and not groups.isdisjoint(self.deny):
            return True
        return bool(self.allow) and groups.isdisjoint(self.allow)

    def access(self, exchange: Exchange) -> Answer | None:
        who = exchange.caller
        consumer = who.consumer if who is not None else None
        groups = consumer.groups if consumer is not None else NO_GROUPS
        if not self.refuses(groups):
            exchange.decide(self.name, "allow")
            return None
        shown = f"consumer {consumer.username}" if consumer is not None else "a caller without a consumer"
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"acl (report mode) would refuse {shown}"
            return None
        exchange.decide(self.name, "deny")
        raise Forbidden("you may not call this endpoint", detail=f"acl refused {shown}")


@register("acl")
def compile_acl(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (allow, deny, mode, enabled) → the plugin."""
    return Acl(frozenset(config["allow"]), frozenset(config["deny"]), report=config["mode"] == "report")
