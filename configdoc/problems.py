"""Validation problems: where (a path into the document, and a YAML line when known) and what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document or object.

    `path` names the offending value the way a person would write it: `endpoints[3].targets[0].url`
    for a whole document, `targets[0].url` for a single object, and `""` for the object itself.
    `line` is the 1-based YAML line of the value when the loader knows it.
    """

    path: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "line": self.line}

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


def child(path: str, key: object) -> str:
    """The path of mapping key `key` under `path`. A key with unprintable characters (NUL, a lone
    surrogate, a control character) is written with backslash escapes: a path is shown to people and
    sent in JSON answers, which cannot carry a lone surrogate."""
    name = str(key)
    if not name.isprintable():
        name = name.encode("unicode_escape").decode("ascii")
    return f"{path}.{name}" if path else name


def item(path: str, index: int) -> str:
    """The path of list element `index` under `path`."""
    return f"{path}[{index}]"
