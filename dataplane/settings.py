"""Data-plane settings from a mapping (ARCHITECTURE §10), so tests pass a dict.

Command-line flags (`--listen`, `--seed`, `--workers`) override the variables; see `__main__.py`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path


class SettingsError(ValueError):
    """A variable has a value the data plane cannot use; the message names it."""


def parse_listen(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    # isascii: str.isdigit() also takes digits such as '²' that int() refuses.
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise SettingsError(f"{name} must be HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


_NODE_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def kept_node_id(cache_dir: Path) -> str:
    """The node id generated on first boot and kept in the cache dir (§4), so a restarted node
    reports as the same node."""
    path = cache_dir / "node_id"
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    except OSError as exc:
        raise SettingsError(f"DATAPLANE_CACHE_DIR: cannot read {path}: {exc}") from None
    if kept:
        if not _NODE_ID.match(kept):
            # Name the file, not DATAPLANE_NODE_ID: the operator never set that variable.
            raise SettingsError(
                f"DATAPLANE_CACHE_DIR: the kept node id in {path} must be letters, digits and ._- (at most 100),"
                f" not {kept!r}; delete the file to generate a new id, or set DATAPLANE_NODE_ID"
            )
        return kept
    node_id = f"{socket.gethostname().split('.')[0]}-{uuid.uuid4().hex[:12]}"
    node_id = re.sub(r"[^A-Za-z0-9._-]", "-", node_id)[:100]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = cache_dir / f".node_id.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(node_id + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise SettingsError(f"DATAPLANE_CACHE_DIR: cannot write {path}: {exc}") from None
    return node_id


# A duration over a day is surely a typo (a missing decimal point, milliseconds for seconds), and
# asyncio.sleep() on such a value would hold a draining process or a reporter as good as forever.
DAY = 86_400.0
# Requests in flight in one process; more than this is a typo, not a plan (each holds sockets and buffers).
MAX_CONCURRENCY = 1_000_000


def _parsed(environ: Mapping[str, str], name: str) -> tuple[str, float] | None:
    """The variable's text and value, None when unset or empty; nan when it is not a number.
    float() also parses 'nan' and 'inf': nan fails every comparison (so it would pass a bare range
    check) and inf overflows int() and the timers, so callers check `math.isfinite` first."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return raw, float(raw)
    except ValueError:
        return raw, math.nan


def _number(environ: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    """A finite number of seconds in [minimum, maximum]."""
    parsed = _parsed(environ, name)
    if parsed is None:
        return default
    raw, value = parsed
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise SettingsError(f"{name} must be a number of seconds from {minimum:g} to {maximum:g}, not {raw!r}")
    return value


def _count(environ: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """A whole number in [minimum, maximum]; '1e3' and '50.0' are whole, '10.5' is refused rather than
    silently rounded."""
    parsed = _parsed(environ, name)
    if parsed is None:
        return default
    raw, value = parsed
    if not (math.isfinite(value) and value.is_integer() and minimum <= value <= maximum):
        raise SettingsError(f"{name} must be a whole number from {minimum} to {maximum}, not {raw!r}")
    return int(value)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    """Anything but the listed words is refused: a typo such as 'ture' must not silently mean false."""
    raw = environ.get(name, "").strip()
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be 1, true, yes or on, or 0, false, no, off or empty, not {raw!r}")


ACCESS_LOG_FORMATS = ("text", "json", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# logging's own aliases: they worked before the level was checked here, so they still do.
_LOG_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def _log_level(environ: Mapping[str, str]) -> str:
    raw = environ.get("DATAPLANE_LOG_LEVEL", "").strip()
    level = raw.upper() or "INFO"
    level = _LOG_LEVEL_ALIASES.get(level, level)
    if level not in LOG_LEVELS:
        raise SettingsError(f"DATAPLANE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {raw!r}")
    return level


def _redis_url(environ: Mapping[str, str]) -> str | None:
    raw = environ.get("DATAPLANE_REDIS_URL", "").strip()
    if not raw:
        return None
    # The forms redis-py's from_url reads; anything else would only fail at the first counted request.
    if not re.match(r"^(redis|rediss|unix)://\S*$", raw):
        raise SettingsError("DATAPLANE_REDIS_URL must be a redis://, rediss:// or unix:// URL")  # may hold a password
    return raw


# Local rate-limit counters per process (ratelimit.LocalCounters): far above the callers one endpoint
# sees in a window, small enough (~400-650 bytes a key, bench/rate_limit.py) that a flood of distinct
# callers cannot grow a process by more than ~65 MB.
RATE_LIMIT_MAX_KEYS = 100_000


def _control_plane_url(environ: Mapping[str, str]) -> str | None:
    raw = environ.get("DATAPLANE_CONTROL_PLANE_URL", "").strip().rstrip("/")
    if not raw:
        return None
    if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", raw):
        raise SettingsError(f"DATAPLANE_CONTROL_PLANE_URL must be an http(s) URL, not {raw!r}")
    return raw


def _ratio(environ: Mapping[str, str], name: str, default: float) -> float:
    """A share from 0 to 1 (0.25, 1, 0): a percentage such as '25' is refused, not read as 25 times."""
    parsed = _parsed(environ, name)
    if parsed is None:
        return default
    raw, value = parsed
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise SettingsError(f"{name} must be a number from 0 to 1 (0.25 records a quarter of new traces), not {raw!r}")
    return value


# OTLP/HTTP's signal path (https://opentelemetry.io/docs/specs/otlp/#otlphttp-request): appended to a
# base URL, as the SDK does for OTEL_EXPORTER_OTLP_ENDPOINT.
OTLP_TRACES_PATH = "/v1/traces"


def _otlp_endpoint(environ: Mapping[str, str]) -> str | None:
    """The collector's OTLP/HTTP traces URL: `http://host:4318/v1/traces` as given, or a base URL
    (`http://host:4318`, no path) with `/v1/traces` added."""
    raw = environ.get("DATAPLANE_OTLP_ENDPOINT", "").strip()
    if not raw:
        return None
    found = re.match(r"^https?://[^/?#\s@]+(/[^?#\s]*)?$", raw)
    if not found:
        raise SettingsError(
            f"DATAPLANE_OTLP_ENDPOINT must be an http(s) URL such as http://127.0.0.1:4318/v1/traces, not {raw!r}"
        )
    if found.group(1) in (None, "/"):
        return raw.rstrip("/") + OTLP_TRACES_PATH
    return raw


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin_listen: tuple[str, int] = ("127.0.0.1", 9901)
    seed: Path | None = None
    mount_prefix: str = ""
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    max_concurrency: int = 10_000
    header_timeout: float = 10.0
    send_timeout: float = 30.0  # a client accepting no response bytes this long is cut off (server.py)
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    hide_response_time: bool = False
    drain_delay: float = 5.0
    # Once the listener has stopped, open WebSocket tunnels live this long more, then are closed (§13).
    tunnel_grace: float = 10.0
    # HTTP/2 to clients (§13, h2server.py): h2 by ALPN on the TLS listener, h2c with prior knowledge on the
    # plain one; at most `h2_max_streams` streams open at once per connection.
    http2: bool = True
    h2_max_streams: int = 100
    # The control-plane sync (§4, sync.py); unset URL → standalone on the seed, cache unused.
    control_plane_url: str | None = None
    cache_dir: Path | None = None
    token: str | None = field(default=None, repr=False)  # never in a log line
    transport: str = "native"  # the upstream client (transport.py): native, aiohttp or httpx
    report_interval: float = 10.0  # seconds between status reports to the control plane (§4)
    log_level: str = "INFO"  # DATAPLANE_LOG_LEVEL, validated here so a typo fails at start like the rest
    access_log: str = "text"  # DATAPLANE_ACCESS_LOG: text, json or off (accesslog.py)
    # TLS termination (§13, tls.py): a second proxy listener, off unless DATAPLANE_TLS_LISTEN is set;
    # DATAPLANE_TLS_CERTS is the folder of PEM files, polled for changes every `tls_poll` seconds.
    tls_listen: tuple[str, int] | None = None
    tls_certs: Path | None = None
    tls_poll: float = 5.0
    # rate_limit's `policy: redis` (ratelimit.py): the shared counters' server, and how long a count may
    # take before the plugin counts locally (fault_tolerant) or answers 503 rate_limit_unavailable. Half a
    # second, not less: the timeout runs on the event loop's clock, so a loaded node's own scheduling
    # delay counts against it, and a tighter one turned CPU load into 503s (docs/dataplane.md).
    redis_url: str | None = field(default=None, repr=False)  # may carry a password: never in a log line
    redis_timeout: float = 0.5
    rate_limit_max_keys: int = RATE_LIMIT_MAX_KEYS
    # Tracing (§13, tracing.py): off unless DATAPLANE_OTLP_ENDPOINT names a collector's OTLP/HTTP traces
    # URL; the share of new traces recorded (a continued trace follows its caller's sampled flag); how
    # long one export may take (retries included) before its spans count as dropped; how many recorded
    # requests' spans may wait for the exporter before the newest are dropped (counted).
    otlp_endpoint: str | None = None
    trace_sample: float = 1.0
    trace_export_timeout: float = 2.0
    trace_queue: int = 2048

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        prefix = environ.get("DATAPLANE_MOUNT_PREFIX", "").strip().rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise SettingsError(f"DATAPLANE_MOUNT_PREFIX must start with '/', not {prefix!r}")
        try:
            trusted = tuple(
                ipaddress.ip_network(item.strip(), strict=False)
                for item in environ.get("DATAPLANE_TRUSTED_PROXIES", "").split(",")
                if item.strip()
            )
        except ValueError as exc:
            raise SettingsError(f"DATAPLANE_TRUSTED_PROXIES: {exc}") from None
        seed = environ.get("DATAPLANE_SEED", "").strip()
        values = {
            "listen": parse_listen(environ.get("DATAPLANE_LISTEN", "127.0.0.1:8080"), "DATAPLANE_LISTEN"),
            "admin_listen": parse_listen(
                environ.get("DATAPLANE_ADMIN_LISTEN", "127.0.0.1:9901"), "DATAPLANE_ADMIN_LISTEN"
            ),
            "seed": Path(seed) if seed else None,
            "mount_prefix": prefix,
            "trusted_proxies": trusted,
            "max_concurrency": _count(environ, "DATAPLANE_MAX_CONCURRENCY", 10_000, minimum=1, maximum=MAX_CONCURRENCY),
            "header_timeout": _number(environ, "DATAPLANE_HEADER_TIMEOUT", 10.0, minimum=0.1, maximum=DAY),
            "send_timeout": _number(environ, "DATAPLANE_SEND_TIMEOUT", 30.0, minimum=0.1, maximum=DAY),
            "hide_response_time": _flag(environ, "DATAPLANE_HIDE_RESPONSE_TIME"),
            "drain_delay": _number(environ, "DATAPLANE_DRAIN_DELAY", 5.0, minimum=0, maximum=DAY),
            # At most uvicorn's graceful-shutdown limit (process.GRACEFUL_SHUTDOWN), after which it cancels.
            "tunnel_grace": _number(environ, "DATAPLANE_TUNNEL_GRACE", 10.0, minimum=0, maximum=25),
            "http2": _flag(environ, "DATAPLANE_HTTP2") if environ.get("DATAPLANE_HTTP2", "").strip() else True,
            "h2_max_streams": _count(environ, "DATAPLANE_H2_MAX_STREAMS", 100, minimum=1, maximum=10_000),
            "control_plane_url": _control_plane_url(environ),
            "token": environ.get("DATAPLANE_TOKEN", "").strip() or None,
            "report_interval": _number(environ, "DATAPLANE_REPORT_INTERVAL", 10.0, minimum=0.1, maximum=DAY),
            "log_level": _log_level(environ),
            "redis_url": _redis_url(environ),
            "redis_timeout": _number(environ, "DATAPLANE_REDIS_TIMEOUT", 0.5, minimum=0.001, maximum=60),
            "rate_limit_max_keys": _count(
                environ, "DATAPLANE_RATE_LIMIT_MAX_KEYS", RATE_LIMIT_MAX_KEYS, minimum=1, maximum=100_000_000
            ),
            "otlp_endpoint": _otlp_endpoint(environ),
            "trace_sample": _ratio(environ, "DATAPLANE_TRACE_SAMPLE", 1.0),
            "trace_export_timeout": _number(environ, "DATAPLANE_TRACE_EXPORT_TIMEOUT", 2.0, minimum=0.05, maximum=60),
            "trace_queue": _count(environ, "DATAPLANE_TRACE_QUEUE", 2048, minimum=1, maximum=1_000_000),
        }
        transport = environ.get("DATAPLANE_TRANSPORT", "").strip().lower() or "native"
        if transport not in ("native", "aiohttp", "httpx"):
            raise SettingsError(f"DATAPLANE_TRANSPORT must be native, aiohttp or httpx, not {transport!r}")
        values["transport"] = transport
        access_log = environ.get("DATAPLANE_ACCESS_LOG", "").strip().lower() or "text"
        if access_log not in ACCESS_LOG_FORMATS:
            raise SettingsError(f"DATAPLANE_ACCESS_LOG must be text, json or off, not {access_log!r}")
        values["access_log"] = access_log
        tls_listen = environ.get("DATAPLANE_TLS_LISTEN", "").strip()
        tls_certs = environ.get("DATAPLANE_TLS_CERTS", "").strip()
        if tls_listen and not tls_certs:
            raise SettingsError(
                "DATAPLANE_TLS_CERTS (a folder of PEM files) is required when DATAPLANE_TLS_LISTEN is set"
            )
        if tls_certs and not tls_listen:
            raise SettingsError("DATAPLANE_TLS_LISTEN is required when DATAPLANE_TLS_CERTS is set")
        values["tls_listen"] = parse_listen(tls_listen, "DATAPLANE_TLS_LISTEN") if tls_listen else None
        values["tls_certs"] = Path(tls_certs) if tls_certs else None
        values["tls_poll"] = _number(environ, "DATAPLANE_TLS_POLL", 5.0, minimum=0.1, maximum=DAY)
        if values["control_plane_url"] and not values["token"]:
            raise SettingsError("DATAPLANE_TOKEN is required when DATAPLANE_CONTROL_PLANE_URL is set")
        cache_dir = environ.get("DATAPLANE_CACHE_DIR", "").strip()
        values["cache_dir"] = Path(cache_dir) if cache_dir else None
        node_id = environ.get("DATAPLANE_NODE_ID", "").strip()
        if not node_id and cache_dir:
            node_id = kept_node_id(Path(cache_dir))
        if node_id:
            if not _NODE_ID.match(node_id):
                raise SettingsError(f"DATAPLANE_NODE_ID must be letters, digits and ._- (at most 100), not {node_id!r}")
            values["node_id"] = node_id
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(
        self, *, listen: str | None = None, admin_listen: str | None = None, seed: str | None = None
    ) -> Settings:
        """Command-line flags win over the environment."""
        result = self
        if listen:
            result = replace(result, listen=parse_listen(listen, "--listen"))
        if admin_listen:
            result = replace(result, admin_listen=parse_listen(admin_listen, "--admin-listen"))
        if seed:
            result = replace(result, seed=Path(seed))
        return result
