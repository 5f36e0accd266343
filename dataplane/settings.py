"""Data-plane settings from a mapping (ARCHITECTURE §10), so tests pass a dict.

Command-line flags (`--listen`, `--seed`, `--workers`) override the variables; see `__main__.py`.
"""

from __future__ import annotations

import ipaddress
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
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
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


def _number(environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, not {raw!r}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _control_plane_url(environ: Mapping[str, str]) -> str | None:
    raw = environ.get("DATAPLANE_CONTROL_PLANE_URL", "").strip().rstrip("/")
    if not raw:
        return None
    if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", raw):
        raise SettingsError(f"DATAPLANE_CONTROL_PLANE_URL must be an http(s) URL, not {raw!r}")
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
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    hide_response_time: bool = False
    drain_delay: float = 5.0
    # The control-plane sync (§4, sync.py); unset URL → standalone on the seed, cache unused.
    control_plane_url: str | None = None
    cache_dir: Path | None = None
    token: str | None = field(default=None, repr=False)  # never in a log line
    transport: str = "native"  # the upstream client (transport.py): native, aiohttp or httpx
    report_interval: float = 10.0  # seconds between status reports to the control plane (§4)

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
            "max_concurrency": int(_number(environ, "DATAPLANE_MAX_CONCURRENCY", 10_000, minimum=1)),
            "header_timeout": _number(environ, "DATAPLANE_HEADER_TIMEOUT", 10.0, minimum=0.1),
            "hide_response_time": _flag(environ, "DATAPLANE_HIDE_RESPONSE_TIME"),
            "drain_delay": _number(environ, "DATAPLANE_DRAIN_DELAY", 5.0),
            "control_plane_url": _control_plane_url(environ),
            "token": environ.get("DATAPLANE_TOKEN", "").strip() or None,
            "report_interval": _number(environ, "DATAPLANE_REPORT_INTERVAL", 10.0, minimum=0.1),
        }
        transport = environ.get("DATAPLANE_TRANSPORT", "").strip().lower() or "native"
        if transport not in ("native", "aiohttp", "httpx"):
            raise SettingsError(f"DATAPLANE_TRANSPORT must be native, aiohttp or httpx, not {transport!r}")
        values["transport"] = transport
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

    def with_overrides(self, *, listen: str | None = None, seed: str | None = None) -> Settings:
        """Command-line flags win over the environment."""
        result = self
        if listen:
            result = replace(result, listen=parse_listen(listen, "--listen"))
        if seed:
            result = replace(result, seed=Path(seed))
        return result
