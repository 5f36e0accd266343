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
    assert settings.send_timeout == 30.0


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
            "DATAPLANE_SEND_TIMEOUT": "7.5",
            "DATAPLANE_TUNNEL_GRACE": "3",
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
    assert settings.send_timeout == 7.5
    assert settings.tunnel_grace == 3.0
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
        ("DATAPLANE_LISTEN", "127.0.0.1:8²"),
        # float() parses these; they must not reach int(), the timers or the reporter (nan passes every `<`).
        ("DATAPLANE_MAX_CONCURRENCY", "inf"),
        ("DATAPLANE_MAX_CONCURRENCY", "nan"),
        ("DATAPLANE_MAX_CONCURRENCY", "1e400"),
        ("DATAPLANE_MAX_CONCURRENCY", "0"),
        ("DATAPLANE_HEADER_TIMEOUT", "nan"),
        ("DATAPLANE_HEADER_TIMEOUT", "inf"),
        ("DATAPLANE_HEADER_TIMEOUT", "0.01"),
        ("DATAPLANE_SEND_TIMEOUT", "nan"),
        ("DATAPLANE_SEND_TIMEOUT", "inf"),
        ("DATAPLANE_SEND_TIMEOUT", "0"),
        ("DATAPLANE_SEND_TIMEOUT", "-5"),
        ("DATAPLANE_SEND_TIMEOUT", "30s"),
        ("DATAPLANE_DRAIN_DELAY", "nan"),
        ("DATAPLANE_DRAIN_DELAY", "inf"),
        ("DATAPLANE_DRAIN_DELAY", "-1"),
        ("DATAPLANE_DRAIN_DELAY", "soon"),
        ("DATAPLANE_TUNNEL_GRACE", "nan"),
        ("DATAPLANE_TUNNEL_GRACE", "-1"),
        ("DATAPLANE_TUNNEL_GRACE", "60"),  # past uvicorn's 30 s shutdown limit
        ("DATAPLANE_REPORT_INTERVAL", "nan"),
        ("DATAPLANE_REPORT_INTERVAL", "-inf"),
        ("DATAPLANE_LOG_LEVEL", "bogus"),
        ("DATAPLANE_LOG_LEVEL", "10"),
        ("DATAPLANE_HIDE_RESPONSE_TIME", "maybe"),
        ("DATAPLANE_HIDE_RESPONSE_TIME", "ture"),
        ("DATAPLANE_REDIS_URL", "http://127.0.0.1:6379"),
        ("DATAPLANE_REDIS_URL", "127.0.0.1:6379"),
        ("DATAPLANE_REDIS_TIMEOUT", "0"),
        ("DATAPLANE_REDIS_TIMEOUT", "nan"),
        ("DATAPLANE_REDIS_TIMEOUT", "61"),
        ("DATAPLANE_RATE_LIMIT_MAX_KEYS", "0"),
        ("DATAPLANE_RATE_LIMIT_MAX_KEYS", "1.5"),
        ("DATAPLANE_RATE_LIMIT_MAX_KEYS", "inf"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_a_nan_report_interval_is_refused_with_a_control_plane_too() -> None:
    with pytest.raises(
        SettingsError, match="DATAPLANE_REPORT_INTERVAL must be a number of seconds from 0.1 to 86400, not 'nan'"
    ):
        Settings.from_env(
            {
                "DATAPLANE_CONTROL_PLANE_URL": "http://127.0.0.1:8000",
                "DATAPLANE_TOKEN": "gwdp_x",
                "DATAPLANE_REPORT_INTERVAL": "nan",
            }
        )


@pytest.mark.parametrize(
    "variable",
    ["DATAPLANE_HEADER_TIMEOUT", "DATAPLANE_SEND_TIMEOUT", "DATAPLANE_DRAIN_DELAY", "DATAPLANE_REPORT_INTERVAL"],
)
def test_a_duration_over_a_day_is_refused_as_a_typo(variable: str) -> None:
    assert getattr(Settings.from_env({variable: "86400"}), variable.removeprefix("DATAPLANE_").lower()) == 86400
    with pytest.raises(SettingsError, match=f"{variable} must be a number of seconds from .* to 86400, not '86401'"):
        Settings.from_env({variable: "86401"})


def test_a_drain_delay_of_zero_stops_at_once() -> None:
    assert Settings.from_env({"DATAPLANE_DRAIN_DELAY": "0"}).drain_delay == 0


def test_max_concurrency_is_a_whole_number_up_to_a_million() -> None:
    assert Settings.from_env({"DATAPLANE_MAX_CONCURRENCY": "1e3"}).max_concurrency == 1000
    assert Settings.from_env({"DATAPLANE_MAX_CONCURRENCY": "1000000"}).max_concurrency == 1_000_000
    for value in ("10.5", "1000001"):
        with pytest.raises(
            SettingsError, match=f"DATAPLANE_MAX_CONCURRENCY must be a whole number from 1 to 1000000, not '{value}'"
        ):
            Settings.from_env({"DATAPLANE_MAX_CONCURRENCY": value})


@pytest.mark.parametrize("value", ["1", "true", "YES", "On"])
def test_a_flag_is_true_for_the_usual_words(value: str) -> None:
    assert Settings.from_env({"DATAPLANE_HIDE_RESPONSE_TIME": value}).hide_response_time is True


@pytest.mark.parametrize("value", ["", " ", "0", "false", "NO", "Off"])
def test_a_flag_is_false_for_the_usual_words_or_empty(value: str) -> None:
    assert Settings.from_env({"DATAPLANE_HIDE_RESPONSE_TIME": value}).hide_response_time is False


def test_a_flag_that_is_neither_says_which_words_it_takes() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATAPLANE_HIDE_RESPONSE_TIME": "maybe"})
    assert str(refused.value) == (
        "DATAPLANE_HIDE_RESPONSE_TIME must be 1, true, yes or on, or 0, false, no, off or empty, not 'maybe'"
    )


def test_the_log_level_is_info_by_default_and_any_case_of_the_five_names() -> None:
    assert Settings.from_env({}).log_level == "INFO"
    assert Settings.from_env({"DATAPLANE_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert Settings.from_env({"DATAPLANE_LOG_LEVEL": " Critical "}).log_level == "CRITICAL"
    assert Settings.from_env({"DATAPLANE_LOG_LEVEL": "warn"}).log_level == "WARNING"  # logging's alias, kept
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATAPLANE_LOG_LEVEL": "bogus"})
    assert str(refused.value) == "DATAPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'bogus'"


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


def test_a_bad_kept_node_id_is_blamed_on_its_file_not_on_the_variable(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("bad id/with slash\n")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATAPLANE_CACHE_DIR": str(tmp_path)})
    message = str(refused.value)
    assert str(tmp_path / "node_id") in message
    assert "'bad id/with slash'" in message
    assert not message.startswith("DATAPLANE_NODE_ID")


def test_a_bad_kept_node_id_does_not_matter_when_the_variable_names_the_node(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("bad id/with slash\n")
    assert Settings.from_env({"DATAPLANE_CACHE_DIR": str(tmp_path), "DATAPLANE_NODE_ID": "edge-7"}).node_id == "edge-7"


def test_rate_limit_settings_default_to_no_redis_half_a_second_and_100000_keys() -> None:
    settings = Settings.from_env({})
    assert (settings.redis_url, settings.redis_timeout, settings.rate_limit_max_keys) == (None, 0.5, 100_000)
    settings = Settings.from_env(
        {
            "DATAPLANE_REDIS_URL": "redis://:pw@127.0.0.1:6379/3",
            "DATAPLANE_REDIS_TIMEOUT": "0.05",
            "DATAPLANE_RATE_LIMIT_MAX_KEYS": "1e6",
        }
    )
    assert (settings.redis_url, settings.redis_timeout, settings.rate_limit_max_keys) == (
        "redis://:pw@127.0.0.1:6379/3",
        0.05,
        1_000_000,
    )
    assert "pw" not in repr(settings)


def test_a_bad_redis_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATAPLANE_REDIS_URL": "http://user:s3cret@127.0.0.1"})
    assert "s3cret" not in str(refused.value)


def test_http2_is_on_with_100_streams_by_default_and_can_be_turned_off() -> None:
    default = Settings.from_env({})
    assert (default.http2, default.h2_max_streams) == (True, 100)
    chosen = Settings.from_env({"DATAPLANE_HTTP2": "off", "DATAPLANE_H2_MAX_STREAMS": "32"})
    assert (chosen.http2, chosen.h2_max_streams) == (False, 32)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DATAPLANE_HTTP2", "maybe"), ("DATAPLANE_H2_MAX_STREAMS", "0"), ("DATAPLANE_H2_MAX_STREAMS", "100001")],
)
def test_a_bad_http2_setting_is_refused_with_its_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})
