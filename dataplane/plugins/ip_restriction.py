"""`ip_restriction` (ARCHITECTURE §11): allow or deny clients by address or CIDR, before anything else
of the endpoint is looked at (phase EARLY, priority 100: before `cors`).

The client's address is `Exchange.client_address()` (forwarding.Forwarding.client_address): the peer,
or behind a trusted proxy (`DATAPLANE_TRUSTED_PROXIES`) the first untrusted hop of `X-Forwarded-For`;
an IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`) is the IPv4 address it carries. `deny` wins over
`allow`; without `allow` every address not denied passes; an address that cannot be told is refused.
Refused: 403 `ip_forbidden`, or in `mode: report` the request goes on and only the access log
(`detail`) and the metric say it would have been refused. Every decision is counted:
`gateway_policy_decisions_total{endpoint, plugin="ip_restriction", decision=allow|deny|would_deny}`.

The networks are compiled once per snapshot into, per IP version, one set of network numbers per
prefix length: a check is one mask and one set lookup per distinct prefix length, whatever the number
of networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..errors import IpForbidden
from ..exchange import Exchange
from . import Answer, Phase, Plugin, PluginContext, register

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Networks:
    """A set of IPv4 and IPv6 networks, matched by address: `(mask, {network numbers})` per prefix
    length and version."""

    __slots__ = ("v4", "v6")

    def __init__(self, networks: Iterable[str]) -> None:
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for text in networks:
            network = ipaddress.ip_network(text, strict=False)
            tables[network.version].setdefault(int(network.netmask), set()).add(int(network.network_address))
        self.v4 = tuple((mask, frozenset(numbers)) for mask, numbers in tables[4].items())
        self.v6 = tuple((mask, frozenset(numbers)) for mask, numbers in tables[6].items())

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, address: Address) -> bool:
        number = int(address)
        for mask, numbers in self.v4 if address.version == 4 else self.v6:
            if number & mask in numbers:
                return True
        return False


class IpRestriction(Plugin):
    name: ClassVar[str] = "ip_restriction"
    phase: ClassVar[Phase] = Phase.EARLY
    priority: ClassVar[int] = 100

    def __init__(self, allow: Networks, deny: Networks, *, report: bool) -> None:
        self.allow = allow
        self.deny = deny
        self.any_allow = bool(allow)
        self.any_deny = bool(deny)
        self.report = report

    def refuses(self, address: Address | None) -> bool:
        if address is None:
            return True  # who is calling cannot be told: refuse rather than guess
        # Networks.__contains__ inlined: the address's number and version are read once, not per list.
        number = int(address)
        v4 = isinstance(address, ipaddress.IPv4Address)
        if self.any_deny:
            for mask, numbers in self.deny.v4 if v4 else self.deny.v6:
                if number & mask in numbers:
                    return True
        if not self.any_allow:
            return False
        for mask, numbers in self.allow.v4 if v4 else self.allow.v6:
            if number & mask in numbers:
                return False
        return True

    def access(self, exchange: Exchange) -> Answer | None:
        address = exchange.client if exchange.client_known else exchange.client_address()
        if not self.refuses(address):
            exchange.decide(self.name, "allow")
            return None
        shown = str(address) if address is not None else "an address that cannot be told"
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"ip_restriction (report mode) would refuse {shown}"
            return None
        exchange.decide(self.name, "deny")
        raise IpForbidden("your address may not call this endpoint", detail=f"ip_restriction refused {shown}")


@register("ip_restriction")
def compile_ip_restriction(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (allow, deny, mode, enabled) → the plugin."""
    return IpRestriction(Networks(config["allow"]), Networks(config["deny"]), report=config["mode"] == "report")
