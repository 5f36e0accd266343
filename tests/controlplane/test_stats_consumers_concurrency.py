"""Several web processes ingesting traffic by consumer at once (threads with their own database
connections here): no count is lost, no error, and the cap of 100 named consumers per endpoint and
minute holds even when each node brings new consumers in the same instant."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from controlplane.stats.models import ConsumerTrafficMinute
from controlplane.stats.services import stats_ingest
from tests.controlplane.test_stats_consumers import NOW, counts, report

pytestmark = pytest.mark.django_db(transaction=True)
REPORTS = 20


def run_at_once(*nodes: Callable[[], None]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(len(nodes))

    def run(node: Callable[[], None]) -> None:
        try:
            start.wait()
            node()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def test_concurrent_reports_for_the_same_consumers_lose_no_count() -> None:
    def node(name: str) -> Callable[[], None]:
        def send() -> None:
            for epoch in range(1, REPORTS + 1):
                stats_ingest(
                    report=report(epoch, name, alice=counts(1), bob=counts(server=1), other=counts(1)), now=NOW
                )

        return send

    run_at_once(node("edge-a"), node("edge-b"), node("edge-c"))
    found = {row.consumer: row for row in ConsumerTrafficMinute.objects.all()}
    assert found["alice"].requests_2xx == 3 * REPORTS
    assert found["bob"].requests_5xx == 3 * REPORTS
    assert found[""].requests_2xx == 3 * REPORTS


def test_concurrent_nodes_bringing_new_consumers_never_pass_the_cap_and_lose_nothing() -> None:
    def node(name: str) -> Callable[[], None]:
        return lambda: stats_ingest(
            report=report(1, name, **{f"{name}-{n:02d}": counts(1) for n in range(60)}), now=NOW
        )

    run_at_once(node("edge-a"), node("edge-b"), node("edge-c"))
    rows = list(ConsumerTrafficMinute.objects.all())
    assert len([row for row in rows if row.consumer]) == 100
    assert sum(row.requests_2xx for row in rows) == 180
