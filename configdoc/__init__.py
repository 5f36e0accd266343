"""The config document: the contract between the control plane and the data plane (ARCHITECTURE §3).

Pure Python (+ PyYAML); imports neither plane. Both planes validate with this package, so there is
one validator, not two.
"""

from .canonical import canonical_json, config_sha256
from .consumers import effective_consumers, secret_env_names
from .egress import is_denied_address, is_denied_target_host
from .plugins import PHASES, PLUGINS, PluginSpec, effective_plugins, required_format_version
from .problems import Problem
from .routes import (
    Match,
    Matchers,
    MatcherTable,
    RouteTable,
    Selection,
    UnsafePath,
    endpoint_key,
    matchers_of,
    request_host,
    route_keys,
    version_sort_key,
)
from .validate import (
    FORMAT_VERSION,
    LATEST_FORMAT_VERSION,
    READ_ONLY_KEYS,
    assemble_document,
    effective_breaker_policy,
    effective_endpoint,
    effective_health_check,
    normalize_breaker_policy,
    normalize_endpoint,
    validate_document,
)
from .yamlio import LoadResult, dump_document_yaml, load_document

__all__ = [
    "FORMAT_VERSION",
    "LATEST_FORMAT_VERSION",
    "LoadResult",
    "PHASES",
    "PLUGINS",
    "PluginSpec",
    "READ_ONLY_KEYS",
    "Match",
    "Problem",
    "MatcherTable",
    "Matchers",
    "RouteTable",
    "Selection",
    "matchers_of",
    "request_host",
    "UnsafePath",
    "assemble_document",
    "canonical_json",
    "config_sha256",
    "dump_document_yaml",
    "effective_breaker_policy",
    "effective_consumers",
    "effective_endpoint",
    "effective_health_check",
    "effective_plugins",
    "endpoint_key",
    "is_denied_address",
    "is_denied_target_host",
    "load_document",
    "normalize_breaker_policy",
    "normalize_endpoint",
    "required_format_version",
    "route_keys",
    "secret_env_names",
    "validate_document",
    "version_sort_key",
]
