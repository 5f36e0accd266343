"""The API's JSON parser: DRF's, under the nesting and text rules of configdoc.untrusted (docs/api.md).

DRF's own parser hands the body to `json.load`, so a body nested a few thousand levels deep (which
anyone can send to `auth/token/`) ends in a RecursionError and a 500, and a `"\\ud800"` escape becomes
a lone surrogate that fails later, when it is encoded for the database or for the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from configdoc.untrusted import JSONInputError, load_json


class JSONParser(parsers.JSONParser):
    """A body nested more than MAX_DEPTH levels → 400 `parse_error`; a lone surrogate in a key or a
    string → 400 `validation_error` naming where. NUL is left to the fields: each says whether it
    can hold one (the document's text fields and DRF's CharField refuse it)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return load_json(stream.read().decode(encoding), strict_constants=self.strict, allow_nul=True)
        except JSONInputError as error:
            if error.too_deep:
                raise ParseError(f"JSON parse error - the body {error.message}") from None
            raise ValidationError({error.path or "non_field_errors": [error.message]}) from None
        except ValueError as error:  # not JSON, or not in the declared encoding
            raise ParseError(f"JSON parse error - {error}") from None
