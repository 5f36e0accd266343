"""Limits on text and structure from outside, shared by every parser that reads it (docs/api.md).

- Nesting: at most `MAX_DEPTH` objects and lists inside one another. A real document is about six deep; a
  body thousands deep exists to exhaust the parser's recursion (a RecursionError, so a 500).
- Text: no NUL (PostgreSQL's text and jsonb cannot hold U+0000) and no lone surrogate (JSON's
  `"\\ud800"` escape decodes to one in Python; it is not Unicode text, and encoding it to UTF-8, for the
  database or for an answer, fails).

`load_json` parses a JSON body under both rules; `text_problem` is the text rule for one string, used
by the document's validation for every string field, so every surface gives the same message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .problems import child, item

MAX_DEPTH = 64

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
_MAYBE_BAD = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})|[\x00\ud800-\udfff]")


class JSONInputError(ValueError):
    """The JSON is refused: `path` names where (`""` for the whole body), `message` says why."""

    def __init__(self, path: str, message: str, *, too_deep: bool = False) -> None:
        super().__init__(f"{path or '(body)'}: {message}")
        self.path = path
        self.message = message
        self.too_deep = too_deep


def text_problem(value: str, *, allow_nul: bool = False) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    found = _BAD_CHARACTER.search(value)
    if found is None:
        return None
    character = found.group()
    if character == "\x00":
        return None if allow_nul else "must not contain NUL characters (\\u0000)"
    return f"must not contain a lone surrogate (\\u{ord(character):04x}): text must be valid Unicode"


def too_deep_message() -> str:
    return f"is nested more than {MAX_DEPTH} levels deep"


def _walk(value: Any, path: str, depth: int) -> Iterator[tuple[str, Any, int]]:
    """(path, value, depth) of every value, parents before children; iterative, so any depth is safe."""
    stack: list[tuple[str, Any, int]] = [(path, value, depth)]
    while stack:
        where, current, level = stack.pop()
        yield where, current, level
        if isinstance(current, Mapping):
            for key, entry in reversed(list(current.items())):
                stack.append((child(where, key), entry, level + 1))
        elif isinstance(current, list):
            for index in range(len(current) - 1, -1, -1):
                stack.append((item(where, index), current[index], level + 1))


def find_problem(value: Any, *, allow_nul: bool = False) -> JSONInputError | None:
    """The first object or list inside MAX_DEPTH others, or the first key or string breaking the text rule."""
    for where, current, level in _walk(value, "", 0):
        if level >= MAX_DEPTH and isinstance(current, Mapping | list):
            return JSONInputError(where, too_deep_message(), too_deep=True)
        if isinstance(current, str):
            message = text_problem(current, allow_nul=allow_nul)
            if message:
                return JSONInputError(where, message)
        elif isinstance(current, Mapping):
            for key in current:
                message = text_problem(key, allow_nul=allow_nul) if isinstance(key, str) else None
                if message:
                    return JSONInputError(child(where, key), f"the key {message}")
    return None


# Once the text is known to be JSON, every string in it is terminated, so this removes the strings
# (which may hold brackets) and everything else but brackets in one linear pass.
_NOT_A_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[^\[\]{}"]+')
_INNERMOST_PAIR = re.compile(r"\[\]|\{\}")


def _nested_too_deep(text: str) -> bool:
    """Whether the JSON `text` nests more than MAX_DEPTH levels, without walking the parsed value
    in Python (a 3 MB status report is a few hundred thousand values)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _NOT_A_BRACKET.sub("", text)
    # Each pass strips the innermost level: a body within the limit is empty after MAX_DEPTH passes.
    for _ in range(MAX_DEPTH):
        if not brackets:
            return False
        brackets = _INNERMOST_PAIR.sub("", brackets)
    return bool(brackets)


def load_json(text: str, *, strict_constants: bool = False, allow_nul: bool = False, limit_depth: bool = True) -> Any:
    """`json.loads` under the nesting and text rules; JSONInputError names where a rule is broken,
    ValueError (json.JSONDecodeError) is the body not being JSON. `strict_constants` refuses NaN and
    Infinity, which are not JSON. With `limit_depth=False` only a body too deep to parse at all is
    refused: for a caller that checks every level of the shape it expects without recursing."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        value = json.loads(text, parse_constant=refuse_constant if strict_constants else None)
    except RecursionError:
        # The C decoder stops at the interpreter's recursion limit (about 1000 levels), far past ours.
        raise JSONInputError("", too_deep_message(), too_deep=True) from None
    if limit_depth and _nested_too_deep(text):
        problem = find_problem(value, allow_nul=allow_nul)
        raise problem if problem is not None else JSONInputError("", too_deep_message(), too_deep=True)
    # Only these escapes decode to a bad character (the parser refuses a raw NUL, and a UTF-8 decoder
    # never yields a surrogate), so most bodies need no walk.
    if _MAYBE_BAD.search(text):
        problem = find_problem(value, allow_nul=allow_nul)
        if problem is not None:
            raise problem
    return value
