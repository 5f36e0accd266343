from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dataplane.settings import Settings, SettingsError


def test_settings_default_to_loopback_listeners() -> None:
    settings = Settings.from_env({})
    assert settings.listen == ("127.0.0.1", 8080)
    assert settings.admin_listen == ("127.0.0.1", 9901)
    assert settings.seed is None
    assert settings.header_timeout == 10.0


def test_settings_read_every_documented_variable() -> None:
    settings = Settings.from_env(
        {
            "DATAPLANE_LISTEN": "127.0.0.1:7000",
            "DATAPLANE_ADMIN_LISTEN": "127.0.0.1:7001",
            "DATAPLANE_SEED": "etc/seed.yaml",
            "DATAPLANE_MOUNT_PREFIX": "/orchestrator/",
            "DATAPLANE_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
            "DATAPLANE_MAX_CONCURRENCY": "50",
            "DATAPLANE_HEADER_TIMEOUT": "2.5",
            "DATAPLANE_NODE_ID": "edge-1",
            "DATAPLANE_HIDE_RESPONSE_TIME": "true",
        }
    )
    assert settings.listen == ("127.0.0.1", 7000)
    assert settings.admin_listen == ("127.0.0.1", 7001)
    assert settings.seed == Path("etc/seed.yaml")
    assert settings.mount_prefix == "/orchestrator"
    assert settings.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert settings.max_concurrency == 50
    assert settings.header_timeout == 2.5
    assert settings.node_id == "edge-1"
    assert settings.hide_response_time is True


def test_command_line_flags_override_the_environment() -> None:
    settings = Settings.from_env({"DATAPLANE_LISTEN": "127.0.0.1:7000", "DATAPLANE_SEED": "a.yaml"})
    settings = settings.with_overrides(listen="127.0.0.1:7100", seed="b.yaml")
    assert settings.listen == ("127.0.0.1", 7100)
    assert settings.seed == Path("b.yaml")


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DATAPLANE_LISTEN", "8080"),
        ("DATAPLANE_MAX_CONCURRENCY", "many"),
        ("DATAPLANE_TRUSTED_PROXIES", "not-an-ip"),
        ("DATAPLANE_MOUNT_PREFIX", "orchestrator"),
        ("DATAPLANE_TRANSPORT", "curl"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_a_generated_node_id_differs_between_nodes() -> None:
    assert Settings.from_env({}).node_id != Settings.from_env({}).node_id


def test_a_generated_node_id_is_kept_in_the_cache_dir_across_restarts(tmp_path: Path) -> None:
    first = Settings.from_env({"DATAPLANE_CACHE_DIR": str(tmp_path / "cache")}).node_id
    again = Settings.from_env({"DATAPLANE_CACHE_DIR": str(tmp_path / "cache")}).node_id
    assert first == again
    assert (tmp_path / "cache" / "node_id").stat().st_mode & 0o777 == 0o600


def test_an_explicit_node_id_wins_over_the_kept_one(tmp_path: Path) -> None:
    Settings.from_env({"DATAPLANE_CACHE_DIR": str(tmp_path)})
    assert Settings.from_env({"DATAPLANE_CACHE_DIR": str(tmp_path), "DATAPLANE_NODE_ID": "edge-7"}).node_id == "edge-7"


def test_a_node_id_that_could_break_the_via_header_is_refused() -> None:
    with pytest.raises(SettingsError, match="DATAPLANE_NODE_ID"):
        Settings.from_env({"DATAPLANE_NODE_ID": "edge 1, 1.1 other"})


def test_the_upstream_client_is_native_by_default_and_aiohttp_or_httpx_on_request() -> None:
    assert Settings.from_env({}).transport == "native"
    assert Settings.from_env({"DATAPLANE_TRANSPORT": "aiohttp"}).transport == "aiohttp"
    assert Settings.from_env({"DATAPLANE_TRANSPORT": "httpx"}).transport == "httpx"
