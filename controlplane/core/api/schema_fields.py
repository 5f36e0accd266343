"""DRF serializer fields derived from configdoc's schema (`configdoc.schema.Field` trees).

One schema for every surface (ARCHITECTURE §11): the API's serializers (and so the OpenAPI document
drf-spectacular makes from them) and the admin's forms (core.admin_forms) are built from the same
`Field`s the validator walks, so a field added to configdoc appears everywhere, with its help text,
choices, default, range and nullability, or tests/controlplane/test_schema_surfaces.py fails.

Validation stays configdoc's (through the services): these serializers describe the representation
and the request body; `DocumentObjectSerializer` hands the body to the services as it came.

    serializer_field(PRESERVE_HOST)          -> BooleanField(default=False, help_text=...)
    plugin_serializer_class(PLUGINS["cors"]) -> CorsPluginSerializer (OpenAPI component `CorsPlugin`)
    plugins_field()                          -> PluginsSerializer: one optional key per plugin
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from configdoc.plugins import PLUGINS, PluginSpec
from configdoc.schema import Field


def _number(value: float | None) -> float | int | None:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def help_text(spec: Field) -> str:
    """One line for people: the schema's own help, then what type and range do not show."""
    parts = [spec.help] if spec.help else []
    if spec.pattern is not None and spec.pattern_help:
        parts.append(f"use {spec.pattern_help}")
    if spec.kind == "statuses":
        parts.append('HTTP statuses or classes like "5xx"')
    if spec.kind == "retry_on":
        parts.append('"connect_error", "timeout", "5xx" or statuses 400-599')
    if spec.kind == "object":
        parts.append("keys left out take their defaults")
    return "; ".join(parts)


def _common(spec: Field, *, required: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"help_text": help_text(spec) or None}
    if spec.nullable:
        kwargs["allow_null"] = True
    if spec.kind == "object":
        kwargs["required"] = required
    elif spec.default is not None or spec.nullable:
        # A default makes the key optional; a copy, so no caller shares (and mutates) the schema's list.
        kwargs["default"] = copy.deepcopy(spec.default)
    else:
        kwargs["required"] = required
    return {key: value for key, value in kwargs.items() if value is not None or key == "default"}


def serializer_field(
    spec: Field, *, required: bool = False, name: str | None = None, **overrides: Any
) -> serializers.Field:  # type: ignore[type-arg]
    """The DRF field describing one configdoc `Field`; a nested object becomes a nested serializer
    whose OpenAPI component is `name`."""
    return _field(spec, {**_common(spec, required=required), **overrides}, name=name)


def _element(spec: Field, *, name: str | None = None) -> serializers.Field:  # type: ignore[type-arg]
    """A list's element or a map's value: no default, no help of its own beyond its rule. An object
    element (a consumer's credentials) is component `name`."""
    kwargs: dict[str, Any] = {}
    if spec.nullable:
        kwargs["allow_null"] = True
    if spec.help:
        kwargs["help_text"] = spec.help
    return _field(spec, kwargs, name=name)


def _field(spec: Field, kwargs: dict[str, Any], *, name: str | None) -> serializers.Field:  # type: ignore[type-arg]
    kind = spec.kind
    if kind == "bool":
        return serializers.BooleanField(**kwargs)
    if kind in ("int", "number"):
        bounds: dict[str, Any] = {"min_value": _number(spec.minimum), "max_value": _number(spec.maximum)}
        if spec.exclusive_minimum:
            bounds["min_value"] = None  # "greater than", which DRF cannot say; the help and configdoc do
        bounds = {key: value for key, value in bounds.items() if value is not None}
        if kind == "int":
            return serializers.IntegerField(**bounds, **kwargs)
        return serializers.FloatField(**bounds, **kwargs)
    if kind == "enum":
        return serializers.ChoiceField(choices=list(spec.choices), **kwargs)
    if kind == "str":
        text = {"allow_blank": spec.pattern is None, **kwargs}
        if spec.max_length is not None:
            text["max_length"] = spec.max_length
        if spec.pattern is not None:
            return serializers.RegexField(spec.pattern, **text)
        return serializers.CharField(trim_whitespace=False, **text)
    if kind in ("statuses", "retry_on"):
        return serializers.ListField(child=serializers.JSONField(), **_sizes(spec), **kwargs)
    if kind == "list":
        assert spec.item is not None, "a list field names its element"
        element = _element(spec.item, name=f"{name}Item" if name else None)
        return serializers.ListField(child=element, **_sizes(spec), **kwargs)
    if kind == "map":
        assert spec.item is not None, "a map field names its value"
        return serializers.DictField(child=_element(spec.item), **kwargs)
    if kind == "object":
        return object_serializer_class(name or "Object", spec.fields)(**kwargs)
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover - a schema mistake


def _sizes(spec: Field) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    if spec.min_items:
        sizes["min_length"] = spec.min_items
    if spec.max_items is not None:
        sizes["max_length"] = spec.max_items
    return sizes


# One class per component name: drf-spectacular names components by class, and two classes of one
# name would be reported as a collision.
_CLASSES: dict[str, tuple[Mapping[str, Field], type[serializers.Serializer]]] = {}  # type: ignore[type-arg]


def object_serializer_class(name: str, fields: Mapping[str, Field], doc: str = "") -> type[serializers.Serializer]:  # type: ignore[type-arg]
    """A Serializer class with one field per key of `fields` (its OpenAPI component is `name`)."""
    known = _CLASSES.get(name)
    if known is not None:
        assert known[0] == fields, f"two schemas named {name}"
        return known[1]
    declared: dict[str, Any] = {
        key: _field(spec, _common(spec, required=False), name=f"{name}{_camel(key)}") for key, spec in fields.items()
    }
    declared["__doc__"] = doc or f"{name} (configdoc schema)."
    declared["__module__"] = __name__
    made = type(f"{name}Serializer", (serializers.Serializer,), declared)
    _CLASSES[name] = (fields, made)
    return made


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def plugin_serializer_class(spec: PluginSpec) -> type[serializers.Serializer]:  # type: ignore[type-arg]
    """The config of plugin `spec` as a typed serializer (component `<Name>Plugin`)."""
    kind = "access plugin" if spec.access else "plugin"
    doc = f"{spec.description} ({kind}, phase {spec.phase})"
    return object_serializer_class(f"{_camel(spec.name)}Plugin", spec.fields, doc)


_PLUGINS_DOC = (
    "Plugins by name (ARCHITECTURE §11): each key turns that plugin on with its config ({} = every "
    "default). On an endpoint, an entry replaces the document's global entry of the same name "
    "wholly, and {enabled: false} turns a global one off. Unknown names are refused."
)


@functools.cache
def plugins_serializer_class(*, removable: bool = False) -> type[serializers.Serializer]:  # type: ignore[type-arg]
    """The `plugins` mapping, one optional typed key per plugin. `removable`: a PATCH of the global
    plugins, where `null` for a name removes that plugin (component `PatchedPlugins`)."""
    declared: dict[str, Any] = {
        name: plugin_serializer_class(spec)(
            required=False,
            help_text=spec.description + (" null removes it." if removable else ""),
            allow_null=removable,
        )
        for name, spec in sorted(PLUGINS.items())
    }
    declared["__doc__"] = _PLUGINS_DOC + (" null for a name removes that plugin." if removable else "")
    declared["__module__"] = __name__
    return type("PatchedPluginsSerializer" if removable else "PluginsSerializer", (serializers.Serializer,), declared)


def plugins_field(**kwargs: Any) -> serializers.Serializer:  # type: ignore[type-arg]
    """A `plugins` mapping (the endpoint's or the document's) as a typed nested serializer."""
    return plugins_serializer_class()(**kwargs)


__all__ = [
    "help_text",
    "object_serializer_class",
    "plugin_serializer_class",
    "plugins_field",
    "plugins_serializer_class",
    "serializer_field",
]
