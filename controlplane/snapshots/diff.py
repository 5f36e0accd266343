"""Per-object, per-field differences between two sets of canonical document objects.

Objects are keyed `(kind, key)` as revisions record them (`("endpoint", "users:v1")`,
`("breaker_policy", "default")`). Fields are dotted paths into the canonical form; targets are
addressed by url (`targets[http://127.0.0.1:8010/api].weight`), because that is their identity (§2).
Every other list is one value: `methods: [GET] → [GET, POST]` reads better than per-index noise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from configdoc import endpoint_key
from controlplane.core.revisions import BREAKER_POLICY, CONSUMER, ENDPOINT, HEALTH_CHECK, PLUGINS, audit_view

ObjectKey = tuple[str, str]

UNSET: Any = object()  # a field absent on one side of a change, shown as "(unset)"


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.path, "before": jsonable(self.before), "after": jsonable(self.after)}


@dataclass(frozen=True)
class ObjectChange:
    kind: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    fields: list[FieldChange] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "create" if self.before is None else "delete" if self.after is None else "update"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "action": self.action,
            "fields": [f.as_dict() for f in self.fields],
        }

    def lines(self) -> list[str]:
        """Human-readable: `~ endpoint users:v1` then `    timeout: 30 → 10`."""
        mark = {"create": "+", "update": "~", "delete": "-"}[self.action]
        out = [f"{mark} {self.kind} {self.key}"]
        for change in self.fields:
            if self.action == "create":
                out.append(f"    {change.path}: {_show(change.after)}")
            elif self.action == "delete":
                out.append(f"    {change.path}: {_show(change.before)} (removed)")
            else:
                out.append(f"    {change.path}: {_show(change.before)} → {_show(change.after)}")
        return out


def _show(value: Any) -> str:
    if value is UNSET:
        return "(unset)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf fields of a canonical object as `{dotted.path: value}`; a target (by url) is one leaf."""
    out: dict[str, Any] = {}
    for key, entry in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(entry, Mapping) and entry:
            out.update(flatten(entry, path))
        elif key == "targets" and isinstance(entry, list) and not prefix:
            for target in entry:
                out[f"{path}[{target['url']}]"] = target
        else:
            out[path] = entry
    return out


def shown_changes(kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[FieldChange]:
    """`field_changes` as people may read them: a consumer's key and password hashes are never shown
    (§11); a credential whose hash alone changed is shown as changed, without either hash."""
    if kind != CONSUMER:
        return field_changes(before, after)
    changes = field_changes(audit_view(kind, before), audit_view(kind, after))
    hidden = [
        name
        for name in ("key_auth", "basic_auth")
        if (before or {}).get(name) != (after or {}).get(name) and not any(c.path == name for c in changes)
    ]
    changes += [FieldChange(name, "(hash)", "(another hash)") for name in hidden if before and after]
    return sorted(changes, key=lambda c: c.path)


def field_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[FieldChange]:
    old, new = flatten(before or {}), flatten(after or {})
    changes = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path, UNSET), new.get(path, UNSET)
        if a != b:
            changes.append(FieldChange(path, a, b))
    return changes


def diff_objects(
    before: Mapping[ObjectKey, dict[str, Any]], after: Mapping[ObjectKey, dict[str, Any]]
) -> list[ObjectChange]:
    """Every object created, updated or deleted going from `before` to `after`, in a stable order."""
    out = []
    for kind_key in sorted(before.keys() | after.keys()):
        old, new = before.get(kind_key), after.get(kind_key)
        if old != new:
            out.append(ObjectChange(kind_key[0], kind_key[1], old, new, shown_changes(kind_key[0], old, new)))
    return out


def document_objects(document: Mapping[str, Any]) -> dict[ObjectKey, dict[str, Any]]:
    """A canonical document's objects keyed as revisions record them."""
    objects: dict[ObjectKey, dict[str, Any]] = {}
    for policy in document.get("breaker_policies", []):
        objects[(BREAKER_POLICY, policy["name"])] = policy
    for endpoint in document.get("endpoints", []):
        objects[(ENDPOINT, endpoint_key(endpoint["name"], endpoint["version"]))] = endpoint
    for consumer in document.get("consumers", []):
        objects[(CONSUMER, consumer["username"])] = consumer
    if document.get("health_check"):
        objects[(HEALTH_CHECK, HEALTH_CHECK)] = document["health_check"]
    if document.get("plugins"):
        objects[(PLUGINS, PLUGINS)] = document["plugins"]
    return objects


def jsonable(value: Any) -> Any:
    """`(unset)` markers as None, for JSON answers."""
    return None if value is UNSET else value
