"""schemathesis's command line, with a CPython 3.11.7 bug worked around: `ast.parse` called from two of
its worker threads at once can raise `SystemError: AST constructor recursion depth mismatch`
(fixed in later CPython releases). Hypothesis parses a lambda's source only to describe the filter in
a strategy's repr, so a failure there is answered with hypothesis's own "unknown" description instead
of ending the run as a schemathesis "Runtime Error" that says nothing about the API under test."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _described(f: Any, *args: Any, **kwargs: Any) -> str:
    try:
        return str(_describe(f, *args, **kwargs))
    except SystemError:
        return "lambda *args: <unknown>"


lambda_sources._lambda_description = _described

from schemathesis.cli import schemathesis  # noqa: E402 - after the patch

if __name__ == "__main__":
    sys.exit(schemathesis())
