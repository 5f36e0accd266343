"""The per-endpoint plugin chain (ARCHITECTURE §11, STYLE 15a): the seam every policy plugs into.

A plugin is one module behind the `Plugin` interface below, registered by name with a compile
function (its valid config → an instance, built once per snapshot, holding typed config only).
For each endpoint the snapshot compiles the ordered `Chain` of the plugins it uses (its own
`plugins`, over the document's global ones; `{enabled: false}` turns a global one off); an endpoint
with none gets `None`, and the proxy's plain path asks nothing more (`if endpoint.chain is not None`).

Phases, in the order of §11 (the proxy calls them; a plugin overrides only the hooks it needs):

    framing → route → [access, EARLY] → method → enabled → body size → [access, LATE] → overload
    → breaker → [request] → upstream → [response] (every answer: upstream or gateway-made) → [log]

- `access(exchange)` → None to go on, or an `Answer` to send instead of going upstream (a CORS
  preflight), or raise a `GatewayError` (403 `ip_forbidden`): either way the answer still passes
  through the `response` hooks. EARLY is for what must come before the method check
  (`ip_restriction`, `cors`); LATE for authentication, `acl`, `rate_limit`.
  A plugin whose check must wait on the network (`forward_auth`, a JWKS fetch, a Redis counter) sets
  `awaits = True` and overrides `access_async` instead; the proxy awaits a phase only when one of its
  plugins awaits, so the others keep a plain function call.
- `request(exchange, headers)`: edit the upstream request's headers in place (a list of
  (name, value) byte pairs, lower-case names), after the gateway set its own.
- `response(exchange, headers)`: edit the answer's headers in place (`exchange.status` is the
  answer's), for upstream answers and gateway-made ones alike; a 404 `no_route` has no endpoint, so
  there the document's global plugins' response and log hooks run.
- `log(exchange)`: after the answer, once per request, with its status, error and timings.

Within a phase, plugins run by `priority` (lower first), then by name, so the order never depends
on the document's key order. A hook that raises anything but a `GatewayError` is a bug: the request
gets uvicorn's 500 and the traceback is logged (the log hook's errors are logged and swallowed: the
answer is out by then).
"""

from __future__ import annotations

import enum
import importlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from configdoc.plugins import effective_plugins

from ..consumers import NO_CONSUMERS, Consumers
from ..types import Headers

if TYPE_CHECKING:
    from ..exchange import Exchange


class Phase(enum.IntEnum):
    EARLY = 0  # right after the route: before the method, enabled and body size checks
    LATE = 1  # after the body size check: before overload, breaker and the upstream


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer a plugin makes itself (the gateway adds its own headers and the response hooks')."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    error: str | None = None  # the access log's `error` field, if this answer is a refusal


class Wait:
    """What a `tries_sync` plugin's access() returns when it must wait after all: the phase goes on
    with `awaitable` (the plugin's decision), then with the plugins after it (`rest`, set by the
    proxy)."""

    __slots__ = ("awaitable", "rest")

    def __init__(self, awaitable: Coroutine[Any, Any, Answer | None]) -> None:
        self.awaitable = awaitable
        self.rest: tuple[Plugin, ...] = ()


class Plugin:
    """The interface: every hook does nothing unless a plugin overrides it; the chain calls only the
    hooks a plugin overrides and, as compiled, `uses` (key_auth without hide_credentials has nothing
    to do in `request`)."""

    name: ClassVar[str] = ""
    phase: ClassVar[Phase] = Phase.LATE
    priority: ClassVar[int] = 1000
    awaits: ClassVar[bool] = False  # True: the access hook is `access_async` (LATE phase only)
    # With `awaits`: access() decides most requests without waiting and returns a `Wait` for the rest
    # (basic_auth: a password not verified in the last minute), so a chain whose awaiting plugins all
    # try first runs its LATE phase synchronously, with no coroutine per plugin and request.
    tries_sync: ClassVar[bool] = False

    def access(self, exchange: Exchange) -> Answer | Wait | None:
        return None

    async def access_async(self, exchange: Exchange) -> Answer | None:
        answer = self.access(exchange)
        return await answer.awaitable if isinstance(answer, Wait) else answer

    def request(self, exchange: Exchange, headers: Headers) -> None:
        return None

    def response(self, exchange: Exchange, headers: Headers) -> None:
        return None

    def log(self, exchange: Exchange) -> None:
        return None

    def uses(self, hook: str) -> bool:
        """Whether this instance's `request`, `response` or `log` hook has work to do (asked once, when
        the chain is made)."""
        return True


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook) and plugin.uses(hook)


@dataclass(frozen=True, slots=True)
class Chain:
    """An endpoint's compiled plugins, split per hook so each call site loops only over the plugins
    that have something to do there."""

    plugins: tuple[Plugin, ...] = ()
    early: tuple[Plugin, ...] = ()
    late: tuple[Plugin, ...] = ()
    request: tuple[Plugin, ...] = ()
    response: tuple[Plugin, ...] = ()
    log: tuple[Plugin, ...] = ()
    late_awaits: bool = False  # a LATE access hook must be awaited (Plugin.awaits, without tries_sync)

    @classmethod
    def of(cls, plugins: list[Plugin] | tuple[Plugin, ...]) -> Chain:
        ordered = tuple(sorted(plugins, key=lambda plugin: (plugin.phase, plugin.priority, plugin.name)))
        access = [plugin for plugin in ordered if _overrides(plugin, "access") or plugin.awaits]
        if any(plugin.awaits and plugin.phase is Phase.EARLY for plugin in access):
            raise TypeError("a plugin that awaits runs in the LATE phase")
        return cls(
            plugins=ordered,
            early=tuple(plugin for plugin in access if plugin.phase is Phase.EARLY),
            late=tuple(plugin for plugin in access if plugin.phase is Phase.LATE),
            request=tuple(plugin for plugin in ordered if _overrides(plugin, "request")),
            response=tuple(plugin for plugin in ordered if _overrides(plugin, "response")),
            log=tuple(plugin for plugin in ordered if _overrides(plugin, "log")),
            late_awaits=any(plugin.awaits and not plugin.tries_sync for plugin in access),
        )


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a plugin may need from the rest of the document when it is compiled: the consumers (their
    secrets resolved from this node's environment), for the authentication plugins."""

    consumers: Consumers = NO_CONSUMERS


NO_CONTEXT = PluginContext()

# Plugin name → compile function (the plugin's valid config and the document's context → an
# instance). A plugin module registers itself with `@register("name")` on import; the modules of
# PLUGIN_MODULES are imported at the end.
CompileFunction = Callable[[Mapping[str, Any], PluginContext], Plugin]
REGISTRY: dict[str, CompileFunction] = {}


def register(name: str) -> Callable[[CompileFunction], CompileFunction]:
    def add(compile_function: CompileFunction) -> CompileFunction:
        REGISTRY[name] = compile_function
        return compile_function

    return add


# What the plugins that hold network resources (forward_auth's client, the JWKS caches' clients and
# refresh tasks) release when the process stops: registered once per module on import, awaited by
# close_plugins() from ProxyApp.aclose. Those resources are per process, not per snapshot: a plugin
# instance is replaced by every snapshot, the connections it would own would leak with it.
ShutdownHook = Callable[[], Awaitable[None]]
_ON_SHUTDOWN: list[ShutdownHook] = []
logger = logging.getLogger("dataplane.plugins")


def on_shutdown(hook: ShutdownHook) -> ShutdownHook:
    _ON_SHUTDOWN.append(hook)
    return hook


async def close_plugins() -> None:
    """Await every shutdown hook; one that fails is logged and the others still run."""
    for hook in _ON_SHUTDOWN:
        try:
            await hook()
        except Exception:
            logger.exception("closing a plugin's resources failed")


class UnknownPlugin(ValueError):
    """A document names a plugin this node does not have: the snapshot is refused (never half-applied)."""


def compile_chain(
    endpoint: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None, context: PluginContext = NO_CONTEXT
) -> Chain | None:
    """The chain of one endpoint: `defaults` (the document's global `plugins`) under the endpoint's
    own (`plugins`: name → config, both canonical), merged by configdoc's rule (an endpoint's entry
    replaces the global one wholly; `enabled: false` drops the name) with every default filled in;
    None without any. Raises UnknownPlugin for a name no module here registered."""
    if not endpoint and not defaults:
        return None
    from .authentication import gate_for  # (a plugin module: imports this package)

    plugins: list[Plugin] = []
    effective = effective_plugins(defaults, endpoint)
    for name, config in effective.items():
        compile_function = REGISTRY.get(name)
        if compile_function is None:
            raise UnknownPlugin(f"plugin {name!r} is not one this data plane has")
        plugins.append(compile_function(config, context))
    gate = gate_for(plugins, effective, context)
    if gate is not None:
        plugins.append(gate)
    return Chain.of(plugins) if plugins else None


# The plugin modules of this package (one per plugin or family, each registering itself on import),
# sorted, one a line; imported here so REGISTRY is filled on import.
PLUGIN_MODULES: tuple[str, ...] = (
    "acl",
    "authentication",
    "basic_auth",
    "cors",
    "forward_auth",
    "headers",
    "ip_restriction",
    "jwt_auth",
    "key_auth",
    "rate_limit",
)

for _module in PLUGIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
