"""Writes of the stats app: turn a node's cumulative counters into deltas and add them to the
endpoint's minute and hour rows; prune old rows.

Delta rules, per (node_id, boot_id) against the highest counters seen from that boot
(NodeCounterBaseline):

- a boot never seen before (a new node, or a node that restarted and so has a new boot_id): the
  counters are the delta, as they count from zero at boot;
- the same boot: each counter's growth is its delta; a counter that went down was reset (treated as a
  restart of that counter: its value is the delta);
- a report in which no counter grew but some went down is an older report delivered late
  (out of order): it adds nothing and the baseline stays;
- reports of an older boot arriving after a newer boot's are taken against that older boot's own
  baseline, so nothing is counted twice.

Traffic by consumer (a report's optional `consumers`, ARCHITECTURE §11) is not cumulative: each
report carries what its node counted since its previous report, numbered by an `epoch` that grows
within a boot. It is added once per (node, boot, epoch): an epoch not above the baseline's
`consumer_epoch` (a report delivered twice, or late) adds nothing. At most CONSUMERS_PER_MINUTE named
consumers per endpoint and minute are kept; once a minute has that many, a consumer new to it is
added to that minute's `other` row.

Race safety: the baseline row and every traffic row touched are locked (SELECT … FOR UPDATE) in one
transaction, in a fixed order (baseline, then minute rows, then hour rows, each by endpoint key,
then the consumer rows: first each endpoint's `other` row, by endpoint key, which serializes the
ingests adding consumers to one endpoint's minute, then its consumers' rows), so two web processes
ingesting at once add both deltas and cannot deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from configdoc.reports import BUCKET_COUNT, MAX_CONSUMERS_PER_ENDPOINT, RATE_LIMITED, STATUS_CLASSES, merge_histograms

from .models import ConsumerTrafficMinute, NodeCounterBaseline, TrafficBucket, TrafficHour, TrafficMinute
from .selectors import truncate

# One period's rows: the functions below take either model, and their rows are of that model.
_Row = TypeVar("_Row", TrafficMinute, TrafficHour)

MINUTE_RETENTION = timedelta(hours=24)
HOUR_RETENTION = timedelta(days=30)
BASELINE_RETENTION = timedelta(hours=24)
PRUNE_BATCH = 5000
# Named consumers kept per endpoint and minute (ARCHITECTURE §11: the top 100, the rest as `other`).
CONSUMERS_PER_MINUTE = MAX_CONSUMERS_PER_ENDPOINT


def _flatten(counters: Mapping[str, Any]) -> dict[tuple[str, ...], float]:
    """Every scalar counter of a report's `counters`, by path (endpoint key, field, ...)."""
    flat: dict[tuple[str, ...], float] = {}
    for key, entry in counters.items():
        for status_class, count in entry.get("requests", {}).items():
            flat[(key, "requests", status_class)] = count
        for code, count in entry.get("errors", {}).items():
            flat[(key, "errors", code)] = count
        for field in ("retries", "breaker_trips"):
            flat[(key, field)] = entry.get(field, 0)
        for field in ("duration", "upstream_duration"):
            histogram = entry.get(field) or {}
            for index, count in enumerate(histogram.get("buckets", [])):
                flat[(key, field, str(index))] = count
            flat[(key, field, "sum")] = histogram.get("sum", 0.0)
    return flat


def _unflatten(flat: Mapping[tuple[str, ...], float]) -> dict[str, dict[str, Any]]:
    """Deltas back in the counters shape, for the endpoints with any non-zero delta."""
    result: dict[str, dict[str, Any]] = {}
    for path, value in flat.items():
        if not value:
            continue
        key = path[0]
        entry = result.setdefault(
            key,
            {
                "requests": dict.fromkeys(STATUS_CLASSES, 0),
                "errors": {},
                "retries": 0,
                "breaker_trips": 0,
                "duration": {"buckets": [0] * BUCKET_COUNT, "sum": 0.0},
                "upstream_duration": {"buckets": [0] * BUCKET_COUNT, "sum": 0.0},
            },
        )
        field = path[1]
        if field in ("requests", "errors"):
            entry[field][path[2]] = entry[field].get(path[2], 0) + int(value)
        elif field in ("retries", "breaker_trips"):
            entry[field] += int(value)
        elif path[2] == "sum":
            entry[field]["sum"] += float(value)
        else:
            entry[field]["buckets"][int(path[2])] += int(value)
    return result


def counter_deltas(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], bool]:
    """(deltas in the counters shape, whether `current` becomes the new baseline).

    `previous` is the baseline of the same boot, None for a boot never seen. See the module docstring."""
    now = _flatten(current)
    if previous is None:
        return _unflatten(now), True
    before = _flatten(previous)
    grew = any(value > before.get(path, 0) for path, value in now.items())
    shrank = any(value < before.get(path, 0) for path, value in now.items()) or any(
        path not in now and value for path, value in before.items()
    )
    if shrank and not grew:
        return {}, False  # a late, older report of this boot
    deltas = {}
    for path, value in now.items():
        old = before.get(path, 0)
        deltas[path] = value - old if value >= old else value
    return _unflatten(deltas), True


# Traffic rows written per statement: one report adds to as many rows as endpoints with traffic.
ROW_BATCH = 500
_ROW_FIELDS = [
    *(f"requests_{status_class}" for status_class in STATUS_CLASSES),
    "errors",
    "retries",
    "breaker_trips",
    "duration_buckets",
    "duration_sum",
    "upstream_buckets",
    "upstream_sum",
]


def _add_to(model: type[_Row], start: datetime, deltas: dict[str, dict[str, Any]]) -> None:
    """Add `deltas` to the endpoints' rows of the period at `start`, in a few statements per ROW_BATCH
    endpoints rather than a few per endpoint (a node reporting traffic on 10,000 endpoints)."""
    keys = sorted(deltas)
    if not keys:
        return
    # The existing rows locked in endpoint-key order (the module's lock order); then, only in a period's
    # first report for an endpoint, its missing row inserted (a concurrent ingest inserting the same
    # one is ignored) and locked. Added to in Python and written back.
    locked = model.objects.select_for_update().filter(start=start).order_by("endpoint_key")
    rows = list(locked.filter(endpoint_key__in=keys))
    missing = sorted(set(keys).difference(row.endpoint_key for row in rows))
    if missing:
        _insert_missing(model, start, missing)
        rows += locked.filter(endpoint_key__in=missing)
    for row in rows:
        delta = deltas[row.endpoint_key]
        for status_class in STATUS_CLASSES:
            field = f"requests_{status_class}"
            setattr(row, field, getattr(row, field) + delta["requests"].get(status_class, 0))
        errors = dict(row.errors or {})
        for code, count in delta["errors"].items():
            errors[code] = errors.get(code, 0) + count
        row.errors = errors
        row.retries += delta["retries"]
        row.breaker_trips += delta["breaker_trips"]
        row.duration_buckets = merge_histograms([row.duration_buckets, delta["duration"]["buckets"]])
        row.duration_sum += delta["duration"]["sum"]
        row.upstream_buckets = merge_histograms([row.upstream_buckets, delta["upstream_duration"]["buckets"]])
        row.upstream_sum += delta["upstream_duration"]["sum"]
    if connection.vendor == "postgresql":
        _write_rows(model, rows)
    else:  # the embedded SQLite default: one node, a handful of endpoints
        model.objects.bulk_update(rows, _ROW_FIELDS, batch_size=ROW_BATCH)


def _insert_missing(model: type[_Row], start: datetime, keys: list[str]) -> None:
    """Insert empty rows for `keys` at `start`; one that exists meanwhile (a concurrent ingest) is
    skipped. On PostgreSQL one `INSERT … SELECT FROM unnest(keys)`: Django's bulk_create spends seconds
    preparing 10,000 rows' fields in Python."""
    if connection.vendor != "postgresql":
        new_rows = [model(endpoint_key=key, start=start) for key in keys]
        model.objects.bulk_create(new_rows, ignore_conflicts=True, batch_size=ROW_BATCH)
        return
    blank = model(endpoint_key="", start=start)  # the model's own defaults, so they cannot drift
    names = ["endpoint_key", "start", *_ROW_FIELDS]
    columns = ", ".join(_quoted_column(model, name) for name in names)
    values = ["k", "%s::timestamptz"]
    params: list[Any] = [start]
    for name, kind in zip(_ROW_FIELDS, _ROW_TYPES, strict=True):
        value = getattr(blank, name)
        values.append(f"%s::{kind}")
        params.append(json.dumps(value) if kind == "jsonb" else value)
    params.append(keys)
    with connection.cursor() as cursor:
        cursor.execute(  # identifiers from the model's meta, quoted; every value is a parameter
            f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) "  # noqa: S608
            f"SELECT {', '.join(values)} FROM unnest(%s::text[]) AS k ON CONFLICT DO NOTHING",
            params,
        )


def _quoted_column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.column:
        raise TypeError(f"{model.__name__}.{name} is not a column")
    return connection.ops.quote_name(field.column)


# The column types of _ROW_FIELDS (JSON goes as text and is cast in the SET), for `_write_rows`.
_ROW_TYPES = ["bigint"] * len(STATUS_CLASSES) + ["jsonb", "bigint", "bigint", "jsonb", "double precision"]
_ROW_TYPES += ["jsonb", "double precision"]


def _write_rows(model: type[TrafficBucket], rows: list[Any]) -> None:
    """Write the rows' _ROW_FIELDS back with one `UPDATE … FROM unnest(<one array per column>)`.
    Django's bulk_update builds a CASE per field with a WHEN per row, whose compilation grows with the
    square of the rows (120 s for a report with traffic on 10,000 endpoints); a VALUES list with a
    parameter per cell still costs seconds in the driver's query building. Twelve array parameters
    cost neither. The rows are locked already (SELECT … FOR UPDATE above), so this only writes."""
    table = connection.ops.quote_name(model._meta.db_table)
    columns = [_quoted_column(model, name) for name in _ROW_FIELDS]
    aliases = [f"v{index}" for index in range(len(columns))]
    assignments = ", ".join(
        f"{column} = v.{alias}" + ("::jsonb" if kind == "jsonb" else "")
        for column, alias, kind in zip(columns, aliases, _ROW_TYPES, strict=True)
    )
    arrays = ", ".join(["%s::bigint[]"] + [f"%s::{'text' if kind == 'jsonb' else kind}[]" for kind in _ROW_TYPES])
    params: list[list[Any]] = [[row.pk for row in rows]]
    for name, kind in zip(_ROW_FIELDS, _ROW_TYPES, strict=True):
        values = [getattr(row, name) for row in rows]
        params.append([json.dumps(value) for value in values] if kind == "jsonb" else values)
    with connection.cursor() as cursor:
        cursor.execute(  # identifiers from the model's meta, quoted; every value is a parameter
            f"UPDATE {table} AS t SET {assignments} "  # noqa: S608
            f"FROM unnest({arrays}) AS v(id, {', '.join(aliases)}) WHERE t.id = v.id",
            params,
        )


def _baseline_for_update(node_id: str, boot_id: str) -> tuple[NodeCounterBaseline, bool]:
    try:
        with transaction.atomic():
            return NodeCounterBaseline.objects.select_for_update().get_or_create(node_id=node_id, boot_id=boot_id)
    except IntegrityError:
        return NodeCounterBaseline.objects.select_for_update().get(node_id=node_id, boot_id=boot_id), False


@transaction.atomic
def stats_ingest(*, report: Mapping[str, Any], now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Add a validated status report's counter deltas to the current minute and hour rows; returns the
    deltas. Call before the node's row is overwritten with this report."""
    now = now or timezone.now()
    baseline, created = _baseline_for_update(report["node_id"], report["boot_id"])
    deltas, advance = counter_deltas(None if created else baseline.counters, report.get("counters") or {})
    if advance:
        baseline.counters = report.get("counters") or {}
        baseline.updated_at = now
        baseline.save(update_fields=["counters", "updated_at"])
    if deltas:
        _add_to(TrafficMinute, truncate(now, "minute"), deltas)
        _add_to(TrafficHour, truncate(now, "hour"), deltas)
    consumers = report.get("consumers")
    if consumers and consumers["epoch"] > baseline.consumer_epoch:
        baseline.consumer_epoch = consumers["epoch"]
        baseline.save(update_fields=["consumer_epoch"])
        _add_consumers(truncate(now, "minute"), consumers["endpoints"])
    return deltas


# A consumer row's counts, in the order of `_class_list`: the status classes, then the 429 rate_limited.
_CLASS_FIELDS = [f"requests_{status_class}" for status_class in STATUS_CLASSES] + ["rate_limited"]


def _class_list(counts: Mapping[str, int]) -> list[int]:
    """A report's consumer counts as [2xx, 3xx, 4xx, 5xx, rate_limited] (rate_limited 0 when a node
    older than the field left it out)."""
    return [int(counts.get(status_class, 0)) for status_class in STATUS_CLASSES] + [int(counts.get(RATE_LIMITED, 0))]


def _add_consumers(start: datetime, endpoints: Mapping[str, Any]) -> None:
    """Add a validated report's `consumers.endpoints` to the minute at `start` (see the module docstring)."""
    keys = sorted(key for key, entry in endpoints.items() if entry["top"] or any(entry["other"].values()))
    if not keys:
        return
    other = ConsumerTrafficMinute.OTHER
    rows = ConsumerTrafficMinute.objects.filter(start=start, endpoint_key__in=keys)
    # Each endpoint's `other` row first (inserted if missing, a concurrent insert ignored), locked in
    # endpoint-key order: whoever holds it is the only one adding consumers to that endpoint's minute.
    ConsumerTrafficMinute.objects.bulk_create(
        [ConsumerTrafficMinute(endpoint_key=key, start=start, consumer=other) for key in keys],
        ignore_conflicts=True,
        batch_size=ROW_BATCH,
    )
    list(rows.filter(consumer=other).select_for_update().order_by("endpoint_key").values_list("pk", flat=True))
    named: dict[str, set[str]] = {key: set() for key in keys}
    for key, consumer in rows.exclude(consumer=other).values_list("endpoint_key", "consumer"):
        named[key].add(consumer)
    additions: dict[tuple[str, str], list[int]] = {}
    for key in keys:
        entry = endpoints[key]
        spill = _class_list(entry["other"])
        known = named[key]
        # The biggest consumers first, so a minute that fills up keeps the top ones by name.
        ranked = sorted(entry["top"].items(), key=lambda item: (-sum(item[1][c] for c in STATUS_CLASSES), item[0]))
        for consumer, counts in ranked:
            row = _class_list(counts)
            if not any(row):
                continue  # takes no place among the minute's named consumers
            if consumer in known or len(known) < CONSUMERS_PER_MINUTE:
                known.add(consumer)
                additions[(key, consumer)] = row
            else:
                spill = [a + b for a, b in zip(spill, row, strict=True)]
        additions[(key, other)] = spill
    _upsert_consumer_rows(start, additions)


def _upsert_consumer_rows(start: datetime, additions: dict[tuple[str, str], list[int]]) -> None:
    """Add to (or create) each (endpoint, consumer) row of the minute, in (endpoint, consumer) order. On
    PostgreSQL one `INSERT … ON CONFLICT DO UPDATE` adding to the row (atomic per row) for any number of
    rows; elsewhere (the embedded SQLite default: one node, few consumers) a statement or two per row."""
    order = sorted(additions)
    if connection.vendor != "postgresql":
        for key, consumer in order:
            counts = additions[(key, consumer)]
            increments = {field: models.F(field) + count for field, count in zip(_CLASS_FIELDS, counts, strict=True)}
            found = ConsumerTrafficMinute.objects.filter(endpoint_key=key, start=start, consumer=consumer)
            if not found.update(**increments):
                ConsumerTrafficMinute.objects.create(
                    endpoint_key=key, start=start, consumer=consumer, **dict(zip(_CLASS_FIELDS, counts, strict=True))
                )
        return
    model = ConsumerTrafficMinute
    table = connection.ops.quote_name(model._meta.db_table)
    names = ["endpoint_key", "consumer", *_CLASS_FIELDS]
    columns = [_quoted_column(model, name) for name in names]
    start_column = _quoted_column(model, "start")
    counts_set = ", ".join(f"{column} = {table}.{column} + EXCLUDED.{column}" for column in columns[2:])
    params: list[Any] = [start, [key for key, _ in order], [consumer for _, consumer in order]]
    for index in range(len(_CLASS_FIELDS)):
        params.append([additions[pair][index] for pair in order])
    with connection.cursor() as cursor:
        cursor.execute(  # identifiers from the model's meta, quoted; every value is a parameter
            f"INSERT INTO {table} ({start_column}, {', '.join(columns)}) "  # noqa: S608
            f"SELECT %s::timestamptz, v.* FROM unnest(%s::text[], %s::text[], "
            f"{', '.join(['%s::bigint[]'] * len(_CLASS_FIELDS))}) AS v "
            f"ON CONFLICT ({columns[0]}, {start_column}, {columns[1]}) DO UPDATE SET {counts_set}",
            params,
        )


def _delete_before(queryset_model: Any, field: str, cutoff: datetime) -> int:
    """Delete rows older than `cutoff` in batches of PRUNE_BATCH, so one run never holds a long lock."""
    deleted = 0
    while True:
        ids = list(queryset_model.objects.filter(**{f"{field}__lt": cutoff}).values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += queryset_model.objects.filter(pk__in=ids).delete()[0]


def stats_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete minute rows (by endpoint and by consumer) older than 24 h, hour rows older than 30 days and
    baselines of boots silent for a day."""
    now = now or timezone.now()
    return {
        "minutes": _delete_before(TrafficMinute, "start", now - MINUTE_RETENTION),
        "consumer_minutes": _delete_before(ConsumerTrafficMinute, "start", now - MINUTE_RETENTION),
        "hours": _delete_before(TrafficHour, "start", now - HOUR_RETENTION),
        "baselines": _delete_before(NodeCounterBaseline, "updated_at", now - BASELINE_RETENTION),
    }
