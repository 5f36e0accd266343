"""The control-plane sync loop (dataplane/sync.py, ARCHITECTURE §4) against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import gzip
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from configdoc import canonical_json, config_sha256
from dataplane.app import build
from dataplane.runtime import Runtime
from dataplane.settings import Settings
from dataplane.sync import BACKOFF_CAP, Sync, cache_path, read_cache, write_cache
from tests.dataplane.harness import document, endpoint

URL = "http://127.0.0.1:9999"


def snapshot_body(*endpoints: dict[str, Any], revision: int = 1, state_seq: int = 0, **extra: Any) -> bytes:
    config = document(*endpoints)
    data = {
        "config": config,
        "config_sha256": config_sha256(config),
        "format_version": 1,
        "generated_at": "2026-01-01T00:00:00Z",
        "revision": revision,
        "state": {"breakers": {}, "targets": {}},
        "state_seq": state_seq,
        **extra,
    }
    return canonical_json(data)


def etag(body: bytes) -> str:
    data = json.loads(body)
    return f'"{data["config_sha256"]}.{data["state_seq"]}"'


def settings_for(tmp_path: Path, **fields: Any) -> Settings:
    values: dict[str, Any] = {
        "control_plane_url": URL,
        "token": "gwdp_test",
        "cache_dir": tmp_path / "cache",
        "node_id": "node-1",
    }
    values.update(fields)
    return Settings(**values)


class Recorder:
    """A scripted control plane: answers GETs from `answers` in turn, records every request."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response] | httpx.Response) -> None:
        self.answers = list(answers)
        self.gets: list[httpx.Request] = []
        self.reports: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.url.path == "/api/v1/dataplane/status"
            self.reports.append(json.loads(request.content))
            return httpx.Response(204)
        assert request.url.path == "/api/v1/dataplane/config"
        self.gets.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(304)
        return answer(request) if callable(answer) else answer


def ok(body: bytes, *, gzipped: bool = False) -> httpx.Response:
    headers = {"ETag": etag(body) if body.startswith(b"{") else '"bad.0"'}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        return httpx.Response(200, headers=headers, content=gzip.compress(body))
    return httpx.Response(200, headers=headers, content=body)


async def polls(sync: Sync, recorder: Recorder, count: int) -> list[float]:
    async with sync._client() as client:
        sync.client = client
        return [await sync.poll_once() for _ in range(count)]


def make(tmp_path: Path, recorder: Recorder, **fields: Any) -> tuple[Runtime, Sync]:
    runtime, _, _ = build(settings_for(tmp_path, **fields))
    return runtime, Sync(runtime, transport=httpx.MockTransport(recorder))


def test_a_200_is_applied_and_cached_and_the_request_carries_the_protocol_headers(tmp_path: Path) -> None:
    body = snapshot_body(endpoint("users"), revision=3)
    recorder = Recorder(ok(body, gzipped=True))
    runtime, sync = make(tmp_path, recorder)
    assert runtime.snapshot is None  # nothing to boot from: not ready

    delays = asyncio.run(polls(sync, recorder, 2))

    assert delays == [0.0, 0.0]
    assert runtime.snapshot is not None and runtime.snapshot.revision == 3
    assert list(runtime.snapshot.endpoints) == ["users:v1"]
    assert sync.result == "applied" and sync.error is None
    first, second = recorder.gets
    assert first.headers["authorization"] == "Bearer gwdp_test"
    assert first.headers["x-gateway-format"] == "2"
    assert "gzip" in first.headers["accept-encoding"]
    assert "if-none-match" not in first.headers and "wait" not in first.url.params
    assert second.headers["if-none-match"] == etag(body)
    assert 30 <= float(second.url.params["wait"]) <= 35
    path = cache_path(sync.settings)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    cached = read_cache(path, URL)
    assert cached is not None and cached.config_sha256 == runtime.snapshot.config_sha256
    assert runtime.metrics.control_plane_connected._value.get() == 1


def test_an_empty_config_from_the_control_plane_replaces_the_seed_and_makes_the_node_ready(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(document(endpoint("seeded"))))
    recorder = Recorder(ok(snapshot_body(revision=2)))
    runtime, sync = make(tmp_path, recorder, seed=seed)
    assert runtime.snapshot is not None and list(runtime.snapshot.endpoints) == ["seeded:v1"]
    assert sync.etag is None  # a seed is not from the control plane: fetch at once

    asyncio.run(polls(sync, recorder, 1))

    assert runtime.ready and runtime.snapshot.endpoints == {} and runtime.snapshot.revision == 2


def test_a_bad_snapshot_is_rejected_reported_and_the_old_one_kept(tmp_path: Path) -> None:
    good = snapshot_body(endpoint("users"), revision=1)
    forged = json.loads(snapshot_body(endpoint("users"), revision=2))
    forged["config_sha256"] = "0" * 64
    bad = canonical_json(forged)
    recorder = Recorder(ok(good), httpx.Response(200, headers={"ETag": '"forged.0"'}, content=bad))
    runtime, sync = make(tmp_path, recorder)

    async def go() -> None:
        async with sync._client() as client:
            sync.client = client
            await sync.poll_once()
            await sync.poll_once()
            assert await sync.report()
            await sync.poll_once()

    asyncio.run(go())

    assert runtime.snapshot is not None and runtime.snapshot.revision == 1
    assert sync.result == "rejected" and "config_sha256" in (sync.error or "")
    report = recorder.reports[-1]
    assert report["result"] == "rejected" and "config_sha256" in report["error"]
    assert report["revision"] == 1 and report["config_sha256"] == runtime.snapshot.config_sha256
    # The rejected ETag is remembered: the next poll waits for a change instead of refetching it.
    assert recorder.gets[2].headers["if-none-match"] == '"forged.0"'
    # The cache still holds the good one.
    path = cache_path(sync.settings)
    assert path is not None
    cached = read_cache(path, URL)
    assert cached is not None and cached.revision == 1


def test_a_304_keeps_the_current_snapshot_and_polls_again_at_once(tmp_path: Path) -> None:
    body = snapshot_body(endpoint("users"))
    recorder = Recorder(ok(body), httpx.Response(304), httpx.Response(304))
    runtime, sync = make(tmp_path, recorder)
    before: list[Any] = []

    async def go() -> list[float]:
        async with sync._client() as client:
            sync.client = client
            await sync.poll_once()
            before.append(runtime.snapshot)
            return [await sync.poll_once(), await sync.poll_once()]

    assert asyncio.run(go()) == [0.0, 0.0]
    assert runtime.snapshot is before[0]
    assert [r.headers["if-none-match"] for r in recorder.gets[1:]] == [etag(body)] * 2


def test_errors_back_off_exponentially_capped_and_jittered_while_the_node_keeps_its_config(tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    body = snapshot_body(endpoint("users"))
    recorder = Recorder(ok(body), *([down] * 5), httpx.Response(503, json={"error": "unavailable"}), *([down] * 6))
    runtime, _ = make(tmp_path, recorder)
    sleeps: list[float] = []

    class Done(Exception):
        pass

    async def sleep(delay: float) -> None:
        if delay == 0:
            return
        sleeps.append(delay)
        assert runtime.metrics.control_plane_connected._value.get() == 0
        if len(sleeps) == 12:
            raise Done

    sync = Sync(runtime, transport=httpx.MockTransport(recorder), sleep=sleep, report=False)
    with pytest.raises(Done):
        asyncio.run(sync.run())

    assert runtime.snapshot is not None and runtime.snapshot.revision == 1
    ceilings = [min(BACKOFF_CAP, 0.5 * 2**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(sleeps, ceilings, strict=True)), sleeps
    assert max(sleeps) <= BACKOFF_CAP and sleeps[-1] >= BACKOFF_CAP / 2


def test_a_control_plane_serving_no_format_this_node_reads_is_reported_as_rejected(tmp_path: Path) -> None:
    body = snapshot_body(endpoint("users"), revision=1)
    unsupported = httpx.Response(409, json={"error": "format_unsupported", "message": "it serves format 2"})
    recorder = Recorder(ok(body), unsupported, unsupported, unsupported)
    runtime, sync = make(tmp_path, recorder)

    async def go() -> list[float]:
        async with sync._client() as client:
            sync.client = client
            await sync.poll_once()
            delays = [await sync.poll_once() for _ in range(3)]
            assert await sync.report()
            return delays

    delays = asyncio.run(go())
    assert runtime.snapshot is not None and runtime.snapshot.revision == 1  # still serving what it had
    report = recorder.reports[-1]
    assert report["result"] == "rejected" and report["error"] == "format_unsupported: it serves format 2"
    assert runtime.metrics.control_plane_connected._value.get() == 1  # it answered: not an outage
    assert 0 < delays[0] < delays[1] < delays[2]  # backs off, growing (0.25-0.5 s, 0.5-1 s, 1-2 s)


def test_a_success_after_errors_resets_the_back_off(tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    recorder = Recorder(down, down, down, httpx.Response(304), down)
    runtime, sync = make(tmp_path, recorder)
    delays = asyncio.run(polls(sync, recorder, 5))
    assert delays[3] == 0.0 and delays[4] <= 0.5


def test_run_reports_after_an_apply_with_the_required_fields(tmp_path: Path) -> None:
    body = snapshot_body(endpoint("users"), revision=7, state_seq=2)
    recorder = Recorder(ok(body))
    runtime, _ = make(tmp_path, recorder)

    async def go() -> None:
        sync = Sync(runtime, transport=httpx.MockTransport(recorder), wait=0.01)
        task = asyncio.create_task(sync.run())
        for _ in range(1000):
            if recorder.reports:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    report = recorder.reports[0]
    assert set(report) == {
        "node_id",
        "boot_id",
        "hostname",
        "version",
        "revision",
        "config_sha256",
        "state_seq",
        "result",
        "error",
        "breakers",
        "counters",
    }
    assert report["node_id"] == "node-1" and report["result"] == "applied" and report["error"] is None
    assert report["revision"] == 7 and report["state_seq"] == 2 and len(report["config_sha256"]) == 64
    assert report["breakers"] == {} and report["counters"] == {}


def test_a_non_closed_breaker_is_in_the_report(tmp_path: Path) -> None:
    from dataplane.breaker import State

    recorder = Recorder(ok(snapshot_body(endpoint("users"), endpoint("orders"))))
    runtime, sync = make(tmp_path, recorder)
    asyncio.run(polls(sync, recorder, 1))
    runtime.states["orders:v1"].breaker.force(State.OPEN)
    assert sync.status()["breakers"] == {
        "orders:v1": {"state": "open", "forced": "open", "reset_generation": 0, "transitions": []}
    }


# --- boot and cache ----------------------------------------------------------------------------------


def cached(tmp_path: Path, body: bytes, url: str = URL) -> Path:
    path = cache_path(settings_for(tmp_path))
    assert path is not None
    write_cache(path, body, url)
    return path


def test_boot_prefers_the_verified_cache_over_the_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(document(endpoint("seeded"))))
    body = snapshot_body(endpoint("cached"), revision=5)
    cached(tmp_path, body)
    runtime, _, _ = build(settings_for(tmp_path, seed=seed))
    assert runtime.snapshot is not None and list(runtime.snapshot.endpoints) == ["cached:v1"]
    sync = Sync(runtime)
    assert sync.etag == etag(body)  # the cached snapshot is what we run: ask only for changes


def test_a_tampered_cache_is_ignored_and_the_seed_used(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(document(endpoint("seeded"))))
    path = cached(tmp_path, snapshot_body(endpoint("cached")))
    record = json.loads(path.read_text())
    record["body"] = record["body"].replace("cached", "evil")
    path.write_text(json.dumps(record))
    runtime, _, _ = build(settings_for(tmp_path, seed=seed))
    assert runtime.snapshot is not None and list(runtime.snapshot.endpoints) == ["seeded:v1"]


@pytest.mark.parametrize(
    "state",
    [
        {"breakers": {"users:v1": "open"}},
        {"breakers": {"users:v1": {"force": "open", "until": "tomorrow"}}},
        {"breakers": {"users:v1": {"force": "sideways"}}},
        {"breakers": {"users:v1": {"reset_generation": -1}}},
        {"targets": {"users:v1": "unhealthy"}},
        {"targets": []},
    ],
)
def test_a_verified_cache_with_a_malformed_state_is_ignored_and_the_seed_used(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """Its sha256 only proves the file is intact, not that it is well formed: the state is checked too."""
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(document(endpoint("seeded"))))
    cached(tmp_path, snapshot_body(endpoint("users"), state=state))
    runtime, _, _ = build(settings_for(tmp_path, seed=seed))
    assert runtime.snapshot is not None and list(runtime.snapshot.endpoints) == ["seeded:v1"]


def test_a_snapshot_with_a_malformed_state_is_rejected_and_the_old_one_kept(tmp_path: Path) -> None:
    good = snapshot_body(endpoint("users"), revision=1)
    state = {"breakers": {"users:v1": {"force": "open", "until": "x"}}}
    bad = snapshot_body(endpoint("users"), revision=2, state=state)
    recorder = Recorder(ok(good), ok(bad))
    runtime, sync = make(tmp_path, recorder)
    asyncio.run(polls(sync, recorder, 2))
    assert runtime.snapshot is not None and runtime.snapshot.revision == 1
    assert sync.result == "rejected" and "state.breakers['users:v1'].until" in (sync.error or "")


def test_a_cache_from_another_control_plane_is_ignored(tmp_path: Path) -> None:
    cached(tmp_path, snapshot_body(endpoint("cached")), url="http://127.0.0.1:1111")
    runtime, _, _ = build(settings_for(tmp_path))
    assert runtime.snapshot is None and not runtime.ready


def test_standalone_uses_the_seed_and_never_the_cache(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(document(endpoint("seeded"))))
    cached(tmp_path, snapshot_body(endpoint("cached")))
    runtime, _, _ = build(settings_for(tmp_path, seed=seed, control_plane_url=None))
    assert runtime.snapshot is not None and list(runtime.snapshot.endpoints) == ["seeded:v1"]


def test_the_sync_settings_come_from_the_environment(tmp_path: Path) -> None:
    from dataplane.settings import SettingsError

    settings = Settings.from_env(
        {
            "DATAPLANE_CONTROL_PLANE_URL": "http://127.0.0.1:8000/",
            "DATAPLANE_TOKEN": "gwdp_secret",
            "DATAPLANE_NODE_ID": "edge-1",
        }
    )
    assert settings.control_plane_url == "http://127.0.0.1:8000" and settings.token == "gwdp_secret"
    assert "gwdp_secret" not in repr(settings)
    with pytest.raises(SettingsError, match="DATAPLANE_TOKEN"):
        Settings.from_env({"DATAPLANE_CONTROL_PLANE_URL": "http://127.0.0.1:8000"})
    with pytest.raises(SettingsError, match="DATAPLANE_CONTROL_PLANE_URL"):
        Settings.from_env({"DATAPLANE_CONTROL_PLANE_URL": "127.0.0.1:8000", "DATAPLANE_TOKEN": "x"})
