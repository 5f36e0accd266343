"""Claiming due targets (ARCHITECTURE §7): concurrent claimers on their own database connections split
the due targets and never get the same one twice in one interval."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from controlplane.core.actors import Actor
from controlplane.health.models import TargetHealth
from controlplane.health.services import check_plans, health_rows_ensure, targets_claim_due
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body

CLAIMERS = 4
TARGETS = 60


def make_targets(interval: int = 30, timeout: int = 5) -> None:
    targets = [{"url": f"http://127.0.0.1:9/t{i}"} for i in range(TARGETS)]
    body = endpoint_body(
        "many", targets=targets, health_check={"path": "/health", "interval": interval, "timeout": timeout}
    )
    endpoint_create(data=body, actor=Actor.system("test"))


def claim_concurrently(now: datetime, *, limit: int) -> list[list[int]]:
    """Each claimer runs in its own thread, so on its own database connection, all released at once."""
    plans = check_plans()
    barrier = threading.Barrier(CLAIMERS)
    claims: list[list[int]] = [[] for _ in range(CLAIMERS)]
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            barrier.wait(10)
            # Several rounds each, so claimers overlap and also come back after the others committed.
            for _ in range(5):
                claims[index].extend(targets_claim_due(plans, now=now, owner=f"claimer-{index}", limit=limit))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return claims


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_get_the_same_target_in_one_interval() -> None:
    make_targets()
    now = datetime.now(UTC)
    health_rows_ensure(now=now)
    claims = claim_concurrently(now, limit=7)
    claimed = [target for claim in claims for target in claim]
    assert len(claimed) == len(set(claimed)) == TARGETS
    assert sum(1 for claim in claims if claim) > 1, "the work should be split between claimers"
    owners = dict(TargetHealth.objects.values_list("target_id", "lease_owner"))
    for index, claim in enumerate(claims):
        assert all(owners[target] == f"claimer-{index}" for target in claim)


@pytest.mark.django_db(transaction=True)
def test_targets_come_back_after_the_interval_and_not_before() -> None:
    make_targets(interval=30)
    now = datetime.now(UTC)
    health_rows_ensure(now=now)
    assert len([t for c in claim_concurrently(now, limit=100) for t in c]) == TARGETS
    assert [t for c in claim_concurrently(now + timedelta(seconds=29), limit=100) for t in c] == []
    # The leases (timeout 5 s + margin) ran out long ago: a crashed claimer's targets are not forgotten.
    again = [t for c in claim_concurrently(now + timedelta(seconds=30), limit=100) for t in c]
    assert sorted(again) == sorted(check_plans())


@pytest.mark.django_db(transaction=True)
def test_an_unexpired_lease_holds_a_target_even_when_it_is_due() -> None:
    make_targets(interval=5)
    now = datetime.now(UTC)
    health_rows_ensure(now=now)
    plans = check_plans()
    assert len(targets_claim_due(plans, now=now, owner="slow", limit=100)) == TARGETS
    # Interval 5 s has passed but the lease (timeout 5 s + 15 s margin) still holds the targets.
    assert targets_claim_due(plans, now=now + timedelta(seconds=6), owner="other", limit=100) == []
    assert len(targets_claim_due(plans, now=now + timedelta(seconds=26), owner="other", limit=100)) == TARGETS


@pytest.mark.django_db(transaction=True)
def test_without_a_given_time_the_databases_clock_decides_and_new_targets_are_due_at_once() -> None:
    make_targets()
    health_rows_ensure()
    plans = check_plans()
    assert len(targets_claim_due(plans, owner="a", limit=100)) == TARGETS
    assert targets_claim_due(plans, owner="b", limit=100) == []


def release_leases() -> None:
    """What recording a batch's results does to the schedule: the leases go, next_check_at stays."""
    TargetHealth.objects.update(lease_until=None, lease_owner="")


def next_checks() -> set[datetime]:
    return set(TargetHealth.objects.values_list("next_check_at", flat=True))


@pytest.mark.django_db
def test_the_next_check_is_one_interval_after_the_due_time_not_after_a_late_claim() -> None:
    make_targets(interval=10, timeout=2)
    due = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    health_rows_ensure(now=due)
    plans = check_plans()
    # Claimed 0.6 s late (a dispatcher tick, a busy worker): still due again at due + 10 s.
    assert len(targets_claim_due(plans, now=due + timedelta(seconds=0.6), owner="w", limit=100)) == TARGETS
    assert next_checks() == {due + timedelta(seconds=10)}
    release_leases()
    assert targets_claim_due(plans, now=due + timedelta(seconds=9.9), owner="w", limit=100) == []
    assert len(targets_claim_due(plans, now=due + timedelta(seconds=10), owner="w", limit=100)) == TARGETS
    assert next_checks() == {due + timedelta(seconds=20)}


@pytest.mark.django_db
def test_a_claim_later_than_the_slack_schedules_from_the_claim_so_checks_never_crowd() -> None:
    make_targets(interval=10, timeout=2)
    due = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    health_rows_ensure(now=due)
    plans = check_plans()
    claimed_at = due + timedelta(seconds=4)
    targets_claim_due(plans, now=claimed_at, owner="w", limit=100)
    # due + 10 s would be only 6 s after this probe: the next is 9 s (0.9 x interval) after it instead.
    assert next_checks() == {claimed_at + timedelta(seconds=9)}


@pytest.mark.django_db
def test_after_an_outage_overdue_targets_are_checked_once_not_in_a_burst() -> None:
    make_targets(interval=10, timeout=2)
    due = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    health_rows_ensure(now=due)
    plans = check_plans()
    targets_claim_due(plans, now=due, owner="w", limit=100)
    release_leases()
    # The workers were down for an hour: 360 intervals missed. One check each, then the normal cycle.
    back = due + timedelta(hours=1)
    assert len(targets_claim_due(plans, now=back, owner="w", limit=100)) == TARGETS
    release_leases()
    for seconds in (0, 2, 4, 6, 8):
        assert targets_claim_due(plans, now=back + timedelta(seconds=seconds), owner="w", limit=100) == []
    assert len(targets_claim_due(plans, now=back + timedelta(seconds=9), owner="w", limit=100)) == TARGETS


@pytest.mark.django_db
def test_a_dispatcher_ticking_every_two_seconds_with_late_claims_keeps_the_interval_on_average() -> None:
    make_targets(interval=10, timeout=2)
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    health_rows_ensure(now=start)
    plans = check_plans()
    # Ticks every 2 s, each claim late by a known 0..0.9 s (the worker still busy with its last batch).
    delays = [0.3, 0.9, 0.1, 0.6, 0.8, 0.0, 0.5, 0.7, 0.2, 0.4]
    claims: dict[int, list[datetime]] = {}
    for tick in range(100):  # 200 s
        now = start + timedelta(seconds=2 * tick + delays[tick % len(delays)])
        for target_id in targets_claim_due(plans, now=now, owner="w", limit=100):
            claims.setdefault(target_id, []).append(now)
        release_leases()
    assert sorted(claims) == sorted(plans)
    for times in claims.values():
        # Claiming from the claim time would have made this 18 (each cycle 10 s + the delay, up to the
        # next tick); from the due time every one of the 20 intervals in 200 s gets its check.
        assert len(times) == 20
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 9
