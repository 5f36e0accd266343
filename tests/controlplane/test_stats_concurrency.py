"""Two web processes ingesting at once (threads with their own database connections here) add both
nodes' deltas to the same minute and hour rows: nothing is lost to a race (PostgreSQL row locks)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from controlplane.stats import services
from controlplane.stats.models import TrafficHour, TrafficMinute
from controlplane.stats.services import stats_ingest
from tests.controlplane.test_stats import NOW, entry, report

pytestmark = pytest.mark.django_db(transaction=True)
REPORTS = 25


def test_concurrent_ingests_into_the_same_rows_lose_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Widen the window between reading a row and writing it back, where an unlocked update would be lost.
    merge = services.merge_histograms

    def slow_merge(histograms: Any) -> list[int]:
        time.sleep(0.002)
        return merge(histograms)

    monkeypatch.setattr(services, "merge_histograms", slow_merge)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def node(name: str) -> None:
        try:
            start.wait()
            for n in range(1, REPORTS + 1):
                stats_ingest(report=report(name, users_v1=entry(n, server=n), orders_v1=entry(n)), now=NOW)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=node, args=(name,)) for name in ("edge-a", "edge-b", "edge-c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for model in (TrafficMinute, TrafficHour):
        rows = {row.endpoint_key: row for row in model.objects.all()}
        assert {key: row.requests_2xx for key, row in rows.items()} == {
            "orders:v1": 3 * REPORTS,
            "users:v1": 3 * REPORTS,
        }
        assert rows["users:v1"].requests_5xx == 3 * REPORTS
        assert sum(rows["orders:v1"].duration_buckets) == 3 * REPORTS
