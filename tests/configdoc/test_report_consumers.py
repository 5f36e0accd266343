"""A status report's `consumers` (configdoc/reports.py validate_consumers): the shape, the caps, and
hostile input refused with a problem naming the field, never an exception."""

from __future__ import annotations

from typing import Any

import pytest

from configdoc.reports import MAX_CONSUMER_PAIRS, MAX_CONSUMERS_PER_ENDPOINT, validate_consumers


def counts(ok: int = 1, client: int = 0) -> dict[str, int]:
    return {"2xx": ok, "3xx": 0, "4xx": client, "5xx": 0}


def consumers(**endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": 3, "endpoints": {key.replace("_", ":"): value for key, value in endpoints.items()}}


def test_a_well_formed_consumers_field_has_no_problems() -> None:
    top = {"mobile-app": counts(5, 1), "partner@x.example": counts(2)}
    value = consumers(users_v1={"top": top, "other": counts(0)})
    assert validate_consumers(value) == {}
    assert validate_consumers({"epoch": 1, "endpoints": {}}) == {}


def test_exactly_one_hundred_consumers_per_endpoint_is_fine_and_one_more_is_refused_saying_so() -> None:
    top = {f"c{index}": counts() for index in range(MAX_CONSUMERS_PER_ENDPOINT)}
    assert validate_consumers(consumers(users_v1={"top": top, "other": counts(0)})) == {}
    top["one-more"] = counts()
    problems = validate_consumers(consumers(users_v1={"top": top, "other": counts(0)}))
    assert problems == {'consumers.endpoints["users:v1"].top': ["must list at most 100 consumers"]}


def test_more_consumers_than_the_node_wide_cap_are_refused_before_any_entry_is_looked_at() -> None:
    endpoints = {
        f"e{index}:v1": {"top": {f"c{n}": "not counts" for n in range(100)}, "other": counts(0)}
        for index in range(MAX_CONSUMER_PAIRS // 100 + 1)
    }
    problems = validate_consumers({"epoch": 1, "endpoints": endpoints})
    assert problems == {"consumers.endpoints": [f"must list at most {MAX_CONSUMER_PAIRS} consumers in all"]}


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ([], "consumers", "must be an object with epoch and endpoints"),
        ({"epoch": 0, "endpoints": {}}, "consumers.epoch", "must be a whole number >= 1"),
        ({"epoch": True, "endpoints": {}}, "consumers.epoch", "must be a whole number >= 1"),
        ({"epoch": 1.5, "endpoints": {}}, "consumers.epoch", "must be a whole number >= 1"),
        ({"epoch": 1}, "consumers.endpoints", "this field is required"),
        ({"epoch": 1, "endpoints": {}, "extra": 1}, "consumers.extra", "unknown field"),
        ({"epoch": 1, "endpoints": []}, "consumers.endpoints", "must be an object mapping endpoint keys to objects"),
        (consumers(users_v1=[]), 'consumers.endpoints["users:v1"]', "must be an object with top and other"),
        (consumers(users_v1={"top": {}}), 'consumers.endpoints["users:v1"].other', "this field is required"),
        (
            consumers(users_v1={"top": [], "other": counts()}),
            'consumers.endpoints["users:v1"].top',
            "must be an object mapping consumer usernames to counts",
        ),
        (
            consumers(users_v1={"top": {"a": {**counts(), "4xx": -1}}, "other": counts()}),
            'consumers.endpoints["users:v1"].top["a"].4xx',
            "must be a whole number >= 0",
        ),
        (
            consumers(users_v1={"top": {"a": {**counts(), "2xx": 1e300}}, "other": counts()}),
            'consumers.endpoints["users:v1"].top["a"].2xx',
            "must be a whole number >= 0",
        ),
        (
            consumers(users_v1={"top": {"a": {"2xx": 1}}, "other": counts()}),
            'consumers.endpoints["users:v1"].top["a"].3xx',
            "this field is required",
        ),
        (
            consumers(users_v1={"top": {"a": counts()}, "other": {**counts(), "1xx": 1}}),
            'consumers.endpoints["users:v1"].other.1xx',
            "unknown field",
        ),
    ],
)
def test_a_malformed_consumers_field_is_refused_naming_the_field(value: Any, path: str, message: str) -> None:
    assert message in validate_consumers(value).get(path, []), validate_consumers(value)


@pytest.mark.parametrize(
    "username",
    ["", "a" * 65, "with space", "nul\x00byte", "lone\ud800surrogate", "line\nbreak", "trailing\n", "ümlaut", "a/b"],
)
def test_a_username_the_config_would_not_allow_is_refused(username: str) -> None:
    problems = validate_consumers(consumers(users_v1={"top": {username: counts()}, "other": counts()}))
    assert list(problems) == ['consumers.endpoints["users:v1"].top']
    assert "must be a consumer username" in problems['consumers.endpoints["users:v1"].top'][0]


@pytest.mark.parametrize("key", ["users", "users:v1:x", "", "us ers:v1", "users:\x00"])
def test_a_key_that_is_not_an_endpoint_key_is_refused(key: str) -> None:
    problems = validate_consumers({"epoch": 1, "endpoints": {key: {"top": {}, "other": counts()}}})
    assert problems == {f'consumers.endpoints["{key}"]': ["the key must be an endpoint key name:version"]}


def test_many_bad_entries_are_refused_with_a_bounded_list_of_problems() -> None:
    top = {f"c{index}": {"2xx": -1} for index in range(100)}
    endpoints = {f"e{index}:v1": {"top": top, "other": counts()} for index in range(50)}
    problems = validate_consumers({"epoch": 1, "endpoints": endpoints})
    assert 0 < len(problems) <= 50 + 5  # the last entry looked at may add a few: one per field
    assert "more problems not listed" in problems["consumers"][0]


def test_deeply_nested_counts_are_refused_not_recursed_into() -> None:
    nested: Any = counts()
    for _ in range(10_000):
        nested = {"2xx": nested}
    problems = validate_consumers(consumers(users_v1={"top": {"a": nested}, "other": counts()}))
    assert 'consumers.endpoints["users:v1"].top["a"].2xx' in problems


# --- rate_limited: a consumer's 429s -----------------------------------------------------------------------


def test_rate_limited_is_optional_and_counted_among_the_4xx() -> None:
    limited = counts(5, 3) | {"rate_limited": 3}
    value = consumers(users_v1={"top": {"alice": limited, "bob": counts(2)}, "other": counts(0) | {"rate_limited": 0}})
    assert validate_consumers(value) == {}


@pytest.mark.parametrize(
    ("rate_limited", "message"),
    [
        (-1, "must be a whole number >= 0"),
        (True, "must be a whole number >= 0"),
        (1.5, "must be a whole number >= 0"),
        ("3", "must be a whole number >= 0"),
        (None, "must be a whole number >= 0"),
        ({"n": 1}, "must be a whole number >= 0"),
        ("\x00", "must be a whole number >= 0"),
        ("\ud800", "must be a whole number >= 0"),
        (10**30, "must be at most 4xx (each 429 is a 4xx answer)"),
        (4, "must be at most 4xx (each 429 is a 4xx answer)"),
    ],
)
def test_a_hostile_rate_limited_count_is_refused_naming_the_field(rate_limited: Any, message: str) -> None:
    value = consumers(users_v1={"top": {"alice": counts(5, 3) | {"rate_limited": rate_limited}}, "other": counts(0)})
    assert validate_consumers(value) == {'consumers.endpoints["users:v1"].top["alice"].rate_limited': [message]}


def test_rate_limited_in_other_is_checked_too_and_no_other_extra_field_is_taken() -> None:
    value = consumers(users_v1={"top": {}, "other": counts(0) | {"rate_limited": 1}})
    assert validate_consumers(value) == {
        'consumers.endpoints["users:v1"].other.rate_limited': ["must be at most 4xx (each 429 is a 4xx answer)"]
    }
    value = consumers(users_v1={"top": {"alice": counts() | {"rate_limited_x": 0, "429": 1}}, "other": counts(0)})
    assert validate_consumers(value) == {
        'consumers.endpoints["users:v1"].top["alice"].429': ["unknown field"],
        'consumers.endpoints["users:v1"].top["alice"].rate_limited_x': ["unknown field"],
    }
