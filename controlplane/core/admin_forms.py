"""Admin form fields generated from configdoc's schema, so the admin shows every document field
with its default and range, and hands the services the document's own mapping.

Scalars become typed inputs; lists of words a comma-separated input; lists of free strings (paths,
where a comma is a legal character) a text area, one per line; free text a text area kept as typed;
nested objects (retries, tls, fallback, …) a JSON text area. Whatever the API stored, the form shows
it so that saving it unchanged hands the services the same document. Validation is configdoc's,
through the services.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django import forms

from configdoc.plugins import PLUGINS
from configdoc.schema import Field


def _help(spec: Field) -> str:
    parts = []
    if spec.minimum is not None or spec.maximum is not None:
        parts.append(f"range {spec.minimum if spec.minimum is not None else '…'}–{spec.maximum or '…'}")
    if spec.choices:
        parts.append("one of " + ", ".join(spec.choices))
    if spec.kind not in ("object",) and spec.default not in (None, [], ""):
        shown = ", ".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
        parts.append(f"default {shown}")
    return "; ".join(parts)


def _free_text(spec: Field) -> bool:
    """A string any character may be part of (no pattern): newlines, commas and edge spaces included."""
    return spec.kind == "str" and spec.pattern is None


def _one_per_line(spec: Field) -> bool:
    return spec.kind == "list" and spec.item is not None and _free_text(spec.item)


def form_field(name: str, spec: Field) -> forms.Field:
    label = name.replace("_", " ").capitalize()
    if spec.kind == "bool":
        return forms.BooleanField(required=False, label=label, initial=spec.default)
    if spec.kind == "enum":
        return forms.ChoiceField(choices=[(c, c) for c in spec.choices], label=label, help_text=_help(spec))
    if spec.kind in ("int", "number"):
        field_class = forms.IntegerField if spec.kind == "int" else forms.FloatField
        return field_class(required=False, label=label, help_text=_help(spec))
    if _one_per_line(spec):
        return forms.CharField(
            required=False,
            label=label,
            widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
            help_text="one per line; " + _help(spec),
        )
    if spec.kind in ("list", "statuses", "retry_on"):
        return forms.CharField(required=False, label=label, help_text="comma-separated; " + _help(spec))
    if spec.kind == "object":
        return forms.CharField(
            required=False,
            label=label,
            widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "style": "font-family: monospace"}),
            help_text="JSON object; keys left out take their defaults: "
            + ", ".join(f"{key} ({_help(sub) or 'optional'})" for key, sub in spec.fields.items()),
        )
    if _free_text(spec):
        # Not stripped: what the API stored (edge spaces, line breaks) must come back as it was shown.
        return forms.CharField(
            required=False,
            label=label,
            strip=False,
            widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
            help_text=_help(spec),
            max_length=spec.max_length,
        )
    return forms.CharField(required=False, label=label, help_text=_help(spec), max_length=spec.max_length)


def plugins_form_field(*, label: str = "Plugins") -> forms.CharField:
    """A `plugins` mapping (name -> config) as a JSON text area, its help listing every plugin and its
    fields from configdoc's schema (so a new plugin field is documented on the form, or a test fails)."""
    listed = "; ".join(
        f"{name} ({', '.join(f'{key}: {_help(field) or field.kind}' for key, field in spec.fields.items())})"
        for name, spec in sorted(PLUGINS.items())
    )
    return forms.CharField(
        required=False,
        label=label,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80, "style": "font-family: monospace"}),
        help_text="JSON object, plugin name → config ({} turns a plugin on with its defaults; keys left out "
        'take their defaults; an endpoint\'s {"enabled": false} turns a global plugin of that name off). '
        f"Plugins: {listed}",
    )


def plugins_text(plugins: Mapping[str, Any] | None) -> str:
    """The JSON a plugins text area shows: canonical sparse configs, keys sorted, ASCII only (so a
    header value in Latin-1 survives any browser's encoding), one plugin per line, `""` for none."""
    if not plugins:
        return ""
    return json.dumps(dict(plugins), sort_keys=True, indent=2)


def form_fields(schema: Mapping[str, Field], names: Iterable[str]) -> dict[str, forms.Field]:
    return {name: form_field(name, schema[name]) for name in names}


def initial_from(schema: Mapping[str, Field], document: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Form initial values from an effective (defaults filled) document."""
    initial: dict[str, Any] = {}
    for name in names:
        spec, value = schema[name], document.get(name)
        if _one_per_line(spec):
            initial[name] = "\n".join(value or [])
        elif spec.kind in ("list", "statuses", "retry_on"):
            initial[name] = ", ".join(str(v) for v in value or [])
        elif spec.kind == "object":
            initial[name] = json.dumps(value or {}, sort_keys=True)
        else:
            initial[name] = value
    return initial


def show_document(
    form: forms.BaseForm,
    schema: Mapping[str, Field],
    document: Mapping[str, Any],
    names: Iterable[str],
    given: Mapping[str, Any] | None = None,
) -> None:
    """Fill the form's inputs from an effective document.

    They go into the form's `initial`, not the fields': a ModelForm starts `initial` with the model's
    columns of the same names (tags as a Python list, breaker_policy as the policy's primary key), and
    that beats a field's own initial, so the inputs would show values the form cannot read back. Only
    what the caller passed in `given` (the add page's query string) is kept over the document.
    """
    for name, value in initial_from(schema, document, names).items():
        if name in form.fields and name not in (given or {}):
            form.initial[name] = value


def _word(value: str) -> Any:
    return int(value) if value.isdigit() else value


def document_from(schema: Mapping[str, Field], cleaned: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The document mapping from cleaned form data; empty inputs are left out (they take defaults)."""
    document: dict[str, Any] = {}
    for name in names:
        spec, value = schema[name], cleaned.get(name)
        if isinstance(value, str) and (_free_text(spec) or _one_per_line(spec)):
            value = value.replace("\r\n", "\n")  # a browser sends a text area's line breaks as CRLF
        if _one_per_line(spec):
            lines = [line.strip() for line in (value or "").split("\n") if line.strip()]
            if lines or spec.min_items:
                document[name] = lines
        elif spec.kind in ("list", "statuses", "retry_on"):
            words = [w.strip() for w in (value or "").split(",") if w.strip()]
            if words or spec.min_items:
                document[name] = [_word(w) for w in words] if spec.kind != "list" else words
        elif spec.kind == "object":
            if value:  # a dict by now: JsonObjectFieldsMixin.clean parsed it
                document[name] = value
        elif value is None or (value == "" and spec.kind == "str" and spec.default is None):
            if spec.kind == "bool":
                document[name] = False
        else:
            document[name] = value
    return document


class JsonObjectFieldsMixin:
    """Parses the JSON text areas, naming the field whose JSON is broken.

    The form's inputs are document fields, not model fields: nothing is copied onto the model
    instance (the service writes the row), so the model-form step that would is skipped.
    """

    json_fields: tuple[str, ...] = ()

    def _post_clean(self) -> None:
        return None

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        for name in self.json_fields:
            text = cleaned.get(name)
            if not text or not text.strip():
                cleaned[name] = None
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                self.add_error(name, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")  # type: ignore[attr-defined]
                continue
            if not isinstance(value, dict):
                self.add_error(name, "must be a JSON object")  # type: ignore[attr-defined]
                continue
            cleaned[name] = value
        return cleaned
