"""Traffic by consumer on the data plane (ARCHITECTURE §11): counted per (endpoint, consumer) as requests
end, through the real proxy app in-process (fake upstream); bounded to the top 100 per endpoint with
the rest as `other` and to a node-wide cap of pairs; sent in the status report per report epoch, with
a control plane faked by httpx.MockTransport (unit)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from configdoc.reports import validate_consumers
from dataplane import metrics as metrics_module
from dataplane.metrics import OTHER_CONSUMER, Metrics
from dataplane.report import bound_consumers, consumers_field
from dataplane.sync import Sync
from tests.dataplane.auth import ALICE_KEY, BOB_KEY, call, document
from tests.dataplane.harness import Gateway

KEY_AUTH = {"key_auth": {"key_names": ["X-API-Key"]}}


def alice() -> list[tuple[str, str]]:
    return [("X-API-Key", ALICE_KEY)]


def test_requests_are_counted_per_consumer_and_requests_without_one_are_not() -> None:
    gw = Gateway(document(KEY_AUTH), lambda request: httpx.Response(404 if "missing" in request.url.path else 200))
    assert call(gw, headers=alice()).status_code == 200
    assert call(gw, "/users/missing", headers=alice()).status_code == 404
    assert call(gw, headers=[("X-API-Key", BOB_KEY)]).status_code == 200
    assert call(gw).status_code == 401  # no credential: no consumer
    assert call(gw, "/open/x").status_code == 200  # an endpoint without authentication
    assert gw.runtime.metrics.consumers == {
        ("users:v1", "alice"): [1, 0, 1, 0, 0],
        ("users:v1", "bob"): [1, 0, 0, 0, 0],
    }


def test_a_consumers_429_rate_limited_answers_are_counted_among_its_4xx_and_apart() -> None:
    plugins = {**KEY_AUTH, "rate_limit": {"limits": [{"requests": 2, "per": "minute"}], "by": "consumer"}}
    gw = Gateway(document(plugins), lambda request: httpx.Response(404 if "missing" in request.url.path else 200))
    assert [call(gw, headers=alice()).status_code for _ in range(3)] == [200, 200, 429]
    assert call(gw, "/users/missing", headers=[("X-API-Key", BOB_KEY)]).status_code == 404
    assert gw.runtime.metrics.consumers == {
        ("users:v1", "alice"): [2, 0, 1, 0, 1],
        ("users:v1", "bob"): [0, 0, 1, 0, 0],
    }
    field = consumers_field(bound_consumers(gw.runtime.metrics.take_consumers()), 1)
    assert validate_consumers(field) == {}
    # Sent only when not 0, so a control plane older than the field takes the other consumers' counts.
    assert field["endpoints"]["users:v1"]["top"] == {
        "alice": {"2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0, "rate_limited": 1},
        "bob": {"2xx": 0, "3xx": 0, "4xx": 1, "5xx": 0},
    }


def test_the_anonymous_consumer_is_counted_under_its_username() -> None:
    gw = Gateway(
        document({"key_auth": {"key_names": ["X-API-Key"], "anonymous": "guest"}}), lambda _: httpx.Response(200)
    )
    assert call(gw).status_code == 200
    assert gw.runtime.metrics.consumers == {("users:v1", "guest"): [1, 0, 0, 0, 0]}


def test_a_refused_credential_names_no_consumer_and_is_not_counted() -> None:
    gw = Gateway(document(KEY_AUTH), lambda _: httpx.Response(200))
    assert call(gw, headers=[("X-API-Key", "wrong")]).status_code == 401
    assert gw.runtime.metrics.consumers == {}


def test_take_consumers_starts_a_new_epoch() -> None:
    metrics = Metrics()
    metrics.observe_consumer("users:v1", "alice", 503)
    assert metrics.take_consumers() == {("users:v1", "alice"): [0, 0, 0, 1, 0]}
    assert metrics.consumers == {}
    metrics.observe_consumer("users:v1", "alice", 101)  # an upgrade: no status class of the report
    assert metrics.consumers == {}


def test_beyond_the_node_wide_cap_of_pairs_new_consumers_count_as_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_CONSUMER_PAIRS", 3)
    metrics = Metrics()
    for consumer in ("a", "b", "c", "d", "e"):
        metrics.observe_consumer("users:v1", consumer, 200)
    metrics.observe_consumer("users:v1", "a", 200)  # one held already still counts under its name
    assert metrics.consumers == {
        ("users:v1", "a"): [2, 0, 0, 0, 0],
        ("users:v1", "b"): [1, 0, 0, 0, 0],
        ("users:v1", "c"): [1, 0, 0, 0, 0],
        ("users:v1", OTHER_CONSUMER): [2, 0, 0, 0, 0],
    }


def test_of_101_consumers_the_top_100_are_named_and_the_smallest_is_other() -> None:
    counts = {("users:v1", f"c{index:03d}"): [index + 1, 0, 0, 1, 0] for index in range(101)}
    counts[("orders:v1", "solo")] = [1, 0, 0, 0, 0]
    bounded = bound_consumers(counts)
    named = {consumer for endpoint, consumer in bounded if endpoint == "users:v1" and consumer != OTHER_CONSUMER}
    assert len(named) == 100 and "c000" not in named  # c000 had the fewest requests
    assert bounded[("users:v1", OTHER_CONSUMER)] == [1, 0, 0, 1, 0]
    assert bounded[("orders:v1", "solo")] == [1, 0, 0, 0, 0]
    field = consumers_field(bounded, 7)
    assert validate_consumers(field) == {}
    assert field["epoch"] == 7
    assert len(field["endpoints"]["users:v1"]["top"]) == 100
    assert field["endpoints"]["users:v1"]["other"] == {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1}
    assert field["endpoints"]["orders:v1"]["other"] == {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}


def test_ties_at_the_cut_are_broken_by_username_and_earlier_other_counts_are_kept() -> None:
    counts = {("users:v1", name): [1, 0, 0, 0, 0] for name in ("b", "a", "c")}
    counts[("users:v1", OTHER_CONSUMER)] = [5, 0, 0, 0, 0]
    counts[("", "nobody")] = [1, 0, 0, 0, 0]  # not routed: not an endpoint key, dropped
    assert bound_consumers(counts, limit=2) == {
        ("users:v1", "a"): [1, 0, 0, 0, 0],
        ("users:v1", "b"): [1, 0, 0, 0, 0],
        ("users:v1", OTHER_CONSUMER): [6, 0, 0, 0, 0],
    }


# --- the status report -------------------------------------------------------------------------------------


class ControlPlane:
    """Answers each status report with the next of `answers` (204 once they run out) and keeps the bodies."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.reports: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.reports.append(json.loads(request.content))
        return self.answers.pop(0) if self.answers else httpx.Response(204)


def reporting(tmp_path: Path, control_plane: ControlPlane) -> tuple[Gateway, Sync]:
    gw = Gateway(
        document(KEY_AUTH), lambda _: httpx.Response(200), control_plane_url="http://cp.test", token="gwdp_x",
        cache_dir=tmp_path,
    )  # fmt: skip
    return gw, Sync(gw.runtime, transport=httpx.MockTransport(control_plane))


def report(sync: Sync) -> bool:
    async def go() -> bool:
        async with httpx.AsyncClient(base_url="http://cp.test", transport=sync.transport) as client:
            sync.client = client
            return await sync.report()

    return asyncio.run(go())


def test_each_report_carries_the_traffic_by_consumer_since_the_previous_one(tmp_path: Path) -> None:
    control_plane = ControlPlane()
    gw, sync = reporting(tmp_path, control_plane)
    call(gw, headers=alice())
    call(gw, headers=alice())
    assert report(sync)
    first = control_plane.reports[-1]["consumers"]
    assert validate_consumers(first) == {}
    assert first == {
        "epoch": 1,
        "endpoints": {
            "users:v1": {
                "top": {"alice": {"2xx": 2, "3xx": 0, "4xx": 0, "5xx": 0}},
                "other": dict.fromkeys(("2xx", "3xx", "4xx", "5xx"), 0),
            }
        },
    }
    assert report(sync)  # nothing new: no consumers field at all
    assert "consumers" not in control_plane.reports[-1]
    call(gw, headers=[("X-API-Key", BOB_KEY)])
    assert report(sync)
    third = control_plane.reports[-1]["consumers"]
    assert third["epoch"] == 2
    assert list(third["endpoints"]["users:v1"]["top"]) == ["bob"]


def test_counts_of_a_report_the_control_plane_did_not_take_go_with_the_next(tmp_path: Path) -> None:
    control_plane = ControlPlane(httpx.Response(503, json={"error": "unavailable"}))
    gw, sync = reporting(tmp_path, control_plane)
    call(gw, headers=alice())
    assert not report(sync)
    call(gw, headers=alice())
    assert report(sync)
    sent = control_plane.reports[-1]["consumers"]
    assert sent["epoch"] == 2  # a new epoch: the control plane may have added none of epoch 1
    assert sent["endpoints"]["users:v1"]["top"]["alice"]["2xx"] == 2


def test_a_control_plane_older_than_the_field_still_stores_the_status(tmp_path: Path) -> None:
    refusal = {
        "error": "validation_error",
        "message": "consumers: unknown field",
        "fields": {"consumers": ["unknown field"]},
    }
    control_plane = ControlPlane(httpx.Response(400, json=refusal))
    gw, sync = reporting(tmp_path, control_plane)
    call(gw, headers=alice())
    assert report(sync)
    assert "consumers" in control_plane.reports[0] and "consumers" not in control_plane.reports[1]
    call(gw, headers=alice())
    assert report(sync)
    assert "consumers" not in control_plane.reports[2]
    assert len(control_plane.reports) == 3


def test_a_control_plane_older_than_the_429_counts_gets_the_consumers_without_them(tmp_path: Path) -> None:
    path = 'consumers.endpoints["users:v1"].top["alice"].rate_limited'
    refusal = {"error": "validation_error", "message": f"{path}: unknown field", "fields": {path: ["unknown field"]}}
    control_plane = ControlPlane(httpx.Response(400, json=refusal))
    plugins = {**KEY_AUTH, "rate_limit": {"limits": [{"requests": 1, "per": "minute"}], "by": "consumer"}}
    gw = Gateway(
        document(plugins), lambda _: httpx.Response(200), control_plane_url="http://cp.test", token="gwdp_x",
        cache_dir=tmp_path,
    )  # fmt: skip
    sync = Sync(gw.runtime, transport=httpx.MockTransport(control_plane))
    assert [call(gw, headers=alice()).status_code for _ in range(2)] == [200, 429]
    assert report(sync)
    first, second = control_plane.reports
    assert first["consumers"]["endpoints"]["users:v1"]["top"]["alice"]["rate_limited"] == 1
    assert second["consumers"]["endpoints"]["users:v1"]["top"]["alice"] == {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0}
    assert second["consumers"]["epoch"] == first["consumers"]["epoch"]  # the same counts, not yet added
    call(gw, headers=alice())
    assert report(sync)
    assert "rate_limited" not in control_plane.reports[2]["consumers"]["endpoints"]["users:v1"]["top"]["alice"]
    assert len(control_plane.reports) == 3
