"""Reading and writing the document as YAML (ARCHITECTURE §3).

`load_document` is `yaml.safe_load` with guards a config file from a stranger needs:

- a size cap (`MAX_DOCUMENT_BYTES`): a larger input is refused before parsing;
- an alias cap: at most `MAX_ALIASES` alias uses, and the document fully expanded (every alias
  copied out, as a validator walking it would see it) at most `MAX_EXPANDED_NODES` nodes, so a
  billion-laughs file is refused after composing a few dozen nodes, not after exhausting memory;
- a depth cap: at most `MAX_DEPTH` levels of mappings and lists, composed or expanded through
  aliases (PyYAML composes recursively: a deeper file would end in a RecursionError);
- characters YAML does not allow (NUL and other control characters) reported with their line;
- a line for every mapping key and list item, so every problem says where it is.

JSON is YAML, so a JSON document loads too. A document without `format_version` is the seed (v0)
format and is mapped by `configdoc.seed` first. `dump_document_yaml` writes a canonical document as
stable, sparse YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import seed
from .consumers import BASIC_AUTH_CREDENTIAL_FIELDS, CONSUMER_FIELDS, JWT_CREDENTIAL_FIELDS, KEY_AUTH_CREDENTIAL_FIELDS
from .plugins import PLUGINS
from .problems import Problem, child, item
from .schema import (
    BREAKER_POLICY_FIELDS,
    CACHE_FIELDS,
    ENDPOINT_FIELDS,
    FALLBACK_FIELDS,
    HEALTH_CHECK_FIELDS,
    OUTLIER_FIELDS,
    RETRIES_FIELDS,
    TARGET_FIELDS,
    TLS_FIELDS,
)
from .untrusted import MAX_DEPTH, too_deep_message
from .validate import DOCUMENT_KEYS, FORMAT_VERSION, _with_lines, validate_document

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 1_000_000


@dataclass(frozen=True)
class LoadResult:
    """The canonical document (`{}` when there are problems), every problem, and warnings."""

    document: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class DocumentTooLarge(yaml.YAMLError):
    """Raised while composing when the aliases would expand the document past the caps."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class GuardedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts aliases as it composes and refuses past `MAX_ALIASES`.

    Booleans are YAML 1.2's `true`/`false` only: under YAML 1.1 the key `on` of `retries: {on: [...]}`
    (§3) would load as the boolean True, and `yes`/`no`/`off` would silently become booleans too.
    Here they stay strings, so a value like `enabled: yes` is reported, not guessed.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                raise DocumentTooLarge(f"more than {MAX_ALIASES} aliases", self._next_line())
        # `depth` counts the mappings and lists being composed around this node (configdoc.untrusted's rule).
        if self.depth >= MAX_DEPTH and self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            raise DocumentTooLarge(f"the document {too_deep_message()}", self._next_line())
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def _next_line(self) -> int | None:
        """The 1-based line where the next event starts (PyYAML's parser always marks its events)."""
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML leaves it unannotated
        return None if event.start_mark is None else event.start_mark.line + 1


GuardedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def _construct_str(loader: GuardedLoader, node: yaml.ScalarNode) -> str:
    """A string, with escaped surrogate pairs joined. JSON (which loads as YAML here) writes a character
    outside the BMP as a pair of escapes, `"\\ud83d\\ude80"` for U+1F680, as `json.dumps` does by default;
    YAML reads each escape as a code point of its own, which would leave two lone surrogates. A lone
    one stays, for validation to refuse."""
    return _join_surrogate_pairs(loader.construct_scalar(node))


def _join_surrogate_pairs(value: str) -> str:
    if _SURROGATE.search(value):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return value


GuardedLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the tree with every alias copied out; refuses cycles, and stops past the size cap or
    past MAX_DEPTH levels (aliases nest anchored values: each within the cap, together deeper)."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) → (nodes, mappings and lists nested from it down)
    active: set[int] = set()

    def too_deep(node: yaml.Node) -> DocumentTooLarge:
        message = f"the document {too_deep_message()} (with its aliases expanded)"
        return DocumentTooLarge(message, node.start_mark.line + 1)

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        """`level`: the mappings and lists around `node`."""
        if level > MAX_DEPTH:
            raise too_deep(node)
        known = measured.get(id(node))
        if known is not None:
            if level + known[1] > MAX_DEPTH:
                raise too_deep(node)
            return known
        if id(node) in active:
            raise DocumentTooLarge("an alias refers to itself", node.start_mark.line + 1)
        active.add(id(node))
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total, below = 1, 0
        if isinstance(node, yaml.CollectionNode):
            below = 1
            for child_node in children:
                nodes, levels = measure(child_node, level + 1)
                total += nodes
                below = max(below, levels + 1)
        active.discard(id(node))
        if level + below > MAX_DEPTH:
            raise too_deep(node)
        if total > MAX_EXPANDED_NODES:
            raise DocumentTooLarge(
                f"the document expands to more than {MAX_EXPANDED_NODES} values through its aliases",
                node.start_mark.line + 1,
            )
        measured[id(node)] = (total, below)
        return total, below

    return measure(root, 0)[0]


def _record_lines(node: yaml.Node, path: str, lines: dict[str, int], problems: list[Problem]) -> None:
    """`path → 1-based line` of every mapping key and list item; duplicate keys are problems."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = _join_surrogate_pairs(str(key_node.value)) if isinstance(key_node, yaml.ScalarNode) else "?"
            where = child(path, key)
            line = key_node.start_mark.line + 1
            if where in seen and key != "<<":
                problems.append(Problem(where, "duplicate key (a later value would silently win)", line))
            seen.add(where)
            lines.setdefault(where, line)
            _record_lines(value_node, where, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, entry in enumerate(node.value):
            where = item(path, index)
            lines.setdefault(where, entry.start_mark.line + 1)
            _record_lines(entry, where, lines, problems)


def _parse(text: str | bytes) -> tuple[Any, dict[str, int], list[Problem]]:
    size = len(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        return None, {}, [Problem("", f"the document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes")]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, {}, [Problem("", f"the document is not UTF-8 (byte {exc.start})")]
    try:
        # The reader refuses characters YAML does not allow (NUL, other control characters, lone
        # surrogates) as soon as it is built.
        loader = GuardedLoader(text)
    except yaml.reader.ReaderError as exc:
        at = text.count("\n", 0, exc.position) + 1
        return None, {}, [Problem("", f"not valid YAML: character {_character(exc.character)} is not allowed", at)]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        _expanded_size(node)
        lines: dict[str, int] = {"": node.start_mark.line + 1}
        problems: list[Problem] = []
        _record_lines(node, "", lines, problems)
        data = loader.construct_document(node)
    except DocumentTooLarge as exc:
        return None, {}, [Problem("", f"refused: {exc}", exc.line)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        return None, {}, [Problem("", f"not valid YAML: {message}", line)]
    except yaml.YAMLError as exc:
        return None, {}, [Problem("", f"not valid YAML: {exc}")]
    finally:
        loader.dispose()
    return data, lines, problems


def _character(character: int | bytes) -> str:
    return f"U+{character:04X}" if isinstance(character, int) else repr(character)


def _to_seed_path(path: str, paths: Mapping[str, str]) -> str:
    for v1 in sorted(paths, key=len, reverse=True):
        if path == v1 or path.startswith((v1 + ".", v1 + "[")):
            return paths[v1] + path[len(v1) :]
    return path


def load_document(
    text: str | bytes, *, allow_link_local: bool = False, max_format_version: int = FORMAT_VERSION
) -> LoadResult:
    """Parse, map (seed format) and validate a document; every problem carries its YAML line.
    `max_format_version`: the newest format the caller applies (see `validate_document`)."""
    data, lines, problems = _parse(text)
    if problems:
        return LoadResult({}, problems)
    if data is None:
        return LoadResult({}, [Problem("", "the document is empty", lines.get(""))])
    if not seed.is_seed_document(data):
        document, found = validate_document(
            data, allow_link_local=allow_link_local, lines=lines, max_format_version=max_format_version
        )
        return LoadResult(document, found)
    v1, problems, warnings, paths = seed.to_v1(data)
    document, found = validate_document(v1, allow_link_local=allow_link_local)
    # Problems and warnings name the seed file's own keys, so they match what the person sees.
    renamed = [Problem(_to_seed_path(p.path, paths), p.message) for p in [*problems, *found]]
    located = _with_lines(renamed, lines)
    return LoadResult(document if not located else {}, located, _with_lines(warnings, lines))


# --- writing ---------------------------------------------------------------------------------------

_ORDER: dict[str, tuple[str, ...]] = {
    "": DOCUMENT_KEYS,
    "consumers[]": tuple(CONSUMER_FIELDS),
    "consumers[].key_auth[]": tuple(KEY_AUTH_CREDENTIAL_FIELDS),
    "consumers[].jwt[]": tuple(JWT_CREDENTIAL_FIELDS),
    "consumers[].basic_auth[]": tuple(BASIC_AUTH_CREDENTIAL_FIELDS),
    "breaker_policies[]": tuple(BREAKER_POLICY_FIELDS),
    "breaker_policies[].fallback": tuple(FALLBACK_FIELDS),
    "breaker_policies[].cache": tuple(CACHE_FIELDS),
    "health_check": tuple(HEALTH_CHECK_FIELDS),
    "endpoints[]": tuple(ENDPOINT_FIELDS),
    "endpoints[].targets[]": tuple(TARGET_FIELDS),
    "endpoints[].retries": tuple(RETRIES_FIELDS),
    "endpoints[].outlier": tuple(OUTLIER_FIELDS),
    "endpoints[].tls": tuple(TLS_FIELDS),
    "endpoints[].health_check": tuple(HEALTH_CHECK_FIELDS),
    **{
        f"{where}.{name}": tuple(spec.fields)
        for name, spec in PLUGINS.items()
        for where in ("plugins", "endpoints[].plugins")
    },
}


def _ordered(value: Any, shape: str) -> Any:
    """Keys in the schema's order (the order §3 documents them in), unknown keys sorted after."""
    if isinstance(value, Mapping):
        order = _ORDER.get(shape, ())
        keys = [k for k in order if k in value] + sorted(k for k in value if k not in order)
        return {k: _ordered(value[k], child(shape, k)) for k in keys}
    if isinstance(value, list):
        return [_ordered(entry, shape + "[]") for entry in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Block style with list items indented under their key, the way people write YAML."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def dump_document_yaml(document: Mapping[str, Any]) -> str:
    """A canonical document as YAML: keys in schema order, sparse as given, same input → same text."""
    return yaml.dump(
        _ordered(document, ""),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=120,
    )
