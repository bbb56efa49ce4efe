"""Reading ``topology.yaml`` with line numbers, and turning it into a :class:`Topology`.

The file is read with ruamel.yaml's round-trip loader, which keeps the position of every
key, value and list item, so that each problem (a YAML error, a duplicate key, a pydantic
error, a semantic problem found by :mod:`bus.topology.validate`) points at its line.

``load_topology(path)`` returns a :class:`Topology` that carries the schema catalog it
was validated against (``topology.catalog``, ``topology.schema_for(event_type)``), or
raises :class:`TopologyInvalid` with every problem.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bus.topology.exceptions import Problem, TopologyInvalid
from bus.topology.filters import KEBAB_CASE, SNAKE_CASE, TOPIC_PREFIX
from bus.topology.models import Connector, Department, EventType, Subscription, Topology

Loc = Sequence[str | int]

SECTIONS: dict[str, type[BaseModel]] = {
    "departments": Department,
    "event_types": EventType,
    "subscriptions": Subscription,
    "connectors": Connector,
}


# -- reading YAML -----------------------------------------------------------------------


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that keeps timestamps and dates as the strings written,
    so that the validator checks them (with their offset) instead of YAML guessing."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


@dataclass
class Document:
    """A parsed YAML file: the round-trip tree (positions) and problems found while reading."""

    path: Path
    data: Any
    problems: list[Problem] = field(default_factory=list)

    @property
    def file(self) -> str:
        return str(self.path)

    def problem(self, loc: Loc, message: str, *, at_key: bool = False) -> Problem:
        line, col = self.position(loc, at_key=at_key)
        return Problem(self.file, line, col, message)

    def position(self, loc: Loc, *, at_key: bool = False) -> tuple[int, int]:
        """1-based line and column of the deepest node of ``loc`` that exists in the file
        (the key itself with ``at_key``). Parts that name no node (union tags) are skipped."""
        node = self.data
        line, col = _start(node)
        for i, part in enumerate(loc):
            if not _has(node, part):
                continue
            line, col = _mark(node, part, at_key=at_key and i == len(loc) - 1) or (line, col)
            node = node[part]
        return line + 1, col + 1

    def matched(self, loc: Loc) -> list[str | int]:
        """The parts of ``loc`` that name nodes of the file (union tags left out)."""
        return _existing(self.data, loc)


def _hashable(part: object) -> bool:
    return isinstance(part, (str, int))


def _mark(node: Any, part: str | int, *, at_key: bool) -> tuple[int, int] | None:
    """0-based position of a key, value or item from ruamel's line/column records; None for
    nodes without one (keys merged in with ``<<``)."""
    lc = getattr(node, "lc", None)
    try:
        if isinstance(node, list):
            return tuple(lc.item(part)) if lc else None
        return tuple(lc.key(part) if at_key else lc.value(part)) if lc else None
    except (KeyError, IndexError, TypeError):
        return None


def _start(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    return (lc.line, lc.col) if lc is not None and lc.line is not None else (0, 0)


def read_document(path: Path | str) -> Document:
    """Read and parse ``path``. Raises :class:`TopologyInvalid` when the file cannot be read
    or is not YAML; duplicate keys are recorded in ``Document.problems``."""
    path = Path(path)
    text = _read_text(path)
    yaml = YAML()  # round-trip: keeps every position
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = True  # found on the composed nodes instead, first value kept
    try:
        duplicates = _duplicate_keys(path, yaml.compose(text))
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        raise TopologyInvalid(str(path), [_yaml_problem(path, exc)]) from exc
    except YAMLError as exc:
        raise TopologyInvalid(str(path), [Problem(str(path), 1, 1, f"invalid YAML: {exc}")]) from exc
    if data is None:
        raise TopologyInvalid(str(path), [Problem(
            str(path), 1, 1, "the file is empty; start it with `version: 1`, `city:`, `departments:` ... "
            "(see the shipped topology.yaml)")])
    if not isinstance(data, CommentedMap):
        line, col = _start(data)
        raise TopologyInvalid(str(path), [Problem(
            str(path), line + 1, col + 1,
            f"the top level is {describe_value(data)}; it must be a mapping of keys: {', '.join(_keys(Topology))}")])
    return Document(path, data, duplicates)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise TopologyInvalid(str(path), [Problem(
            str(path), 1, 1, f"file not found: {path}; pass the path of the city's topology.yaml")]) from exc
    except OSError as exc:
        raise TopologyInvalid(str(path), [Problem(
            str(path), 1, 1, f"cannot read the file: {exc.strerror or exc}; check the path and its permissions")
        ]) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TopologyInvalid(str(path), [Problem(
            str(path), 1, 1,
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}, line {line}); "
            "save it as UTF-8")]) from exc


def _yaml_problem(path: Path, exc: MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    what = exc.problem or exc.context or "invalid YAML"
    context = ""
    if exc.context and exc.context_mark is not None and exc.problem:
        context = f" ({exc.context} at line {exc.context_mark.line + 1})"
    hint = "indent with spaces, not tabs" if "\\t" in what or "tab" in what else (
        "check the indentation, the colons after keys and the closing brackets and quotes")
    return Problem(str(path), line, col, f"invalid YAML: {what}{context}; {hint}")


def _duplicate_keys(path: Path, root: Node | None) -> list[Problem]:
    """Every key written twice in one mapping, at the second occurrence."""
    found: list[Problem] = []
    seen_nodes: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value != "<<":
                    if key.value in first:
                        mark = key.start_mark
                        found.append(Problem(
                            str(path), mark.line + 1, mark.column + 1,
                            f"duplicate key {key.value!r}: it is already set at line {first[key.value]} of this "
                            "mapping; keep only one of them (until then the first is used)"))
                    else:
                        first[key.value] = key.start_mark.line + 1
                stack.extend([key, value])
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return found


def to_plain(node: Any) -> Any:
    """The round-trip tree as plain Python (dict, list, str, int, float, bool, None)."""
    if isinstance(node, dict):
        return {to_plain(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


# -- structure: pydantic ----------------------------------------------------------------


@dataclass
class Parsed:
    """What pydantic made of a document: the whole topology when it is valid, and in any
    case each section's valid items with their index, for the semantic checks."""

    document: Document
    plain: dict[str, Any]
    topology: Topology | None
    items: dict[str, list[tuple[int, Any]]]
    problems: list[Problem]

    @property
    def schemas_dir(self) -> str:
        if self.topology is not None:
            return self.topology.schemas_dir
        value = self.plain.get("schemas_dir", "schemas")
        return value if isinstance(value, str) else "schemas"

    def names(self, section: str) -> list[tuple[int, str]]:
        """(index, name) of every item of a section that has a string name, valid or not."""
        items = self.plain.get(section)
        if not isinstance(items, list):
            return []
        return [(i, item["name"]) for i, item in enumerate(items)
                if isinstance(item, dict) and isinstance(item.get("name"), str)]


def parse_structure(document: Document) -> Parsed:
    plain = to_plain(document.data)
    problems: list[Problem] = []
    topology: Topology | None = None
    try:
        topology = Topology.model_validate(plain)
    except ValidationError as exc:
        problems = [_pydantic_problem(document, err) for err in exc.errors()]
    if topology is not None:
        items = {section: list(enumerate(getattr(topology, section))) for section in SECTIONS}
    else:
        items = {section: _valid_items(plain.get(section), model) for section, model in SECTIONS.items()}
    return Parsed(document, plain, topology, items, problems)


def _valid_items(values: Any, model: type[BaseModel]) -> list[tuple[int, Any]]:
    """Each item of a section that validates, possibly after leaving out its invalid parts."""
    if not isinstance(values, list):
        return []
    salvaged = ((i, salvage(value, model)) for i, value in enumerate(values))
    return [(i, item) for i, item in salvaged if item is not None]


def salvage(value: Any, model: type[BaseModel], attempts: int = 5) -> BaseModel | None:
    """``value`` validated as ``model`` after removing the parts pydantic rejects (a bad
    compatibility falls back to its default, a bad filter condition is left out...), so the
    semantic checks still see the rest of an item whose problems are already reported.
    None when a required part is itself wrong."""
    data = copy.deepcopy(value)
    for _ in range(attempts):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            paths = {tuple(_existing(data, err["loc"])) for err in exc.errors()}
        if () in paths:
            return None
        for path in sorted(paths, key=_sort_key, reverse=True):
            _delete(data, path)
    return None


def _existing(data: Any, loc: Loc) -> list[str | int]:
    """The parts of ``loc`` that name nodes of ``data`` (other parts skipped)."""
    node, out = data, []
    for part in loc:
        if _has(node, part):
            node = node[part]
            out.append(part)
    return out


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return _hashable(part) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _sort_key(path: tuple[str | int, ...]) -> list[tuple[int, str, int]]:
    return [(1, "", p) if isinstance(p, int) else (0, str(p), 0) for p in path]


def _delete(data: Any, path: tuple[str | int, ...]) -> None:
    with contextlib.suppress(KeyError, IndexError, TypeError):  # already gone with its parent
        node = data
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
_PATTERNS = {
    SNAKE_CASE: ("snake_case: lowercase letters, digits and _, starting with a letter", "_"),
    KEBAB_CASE: ("lowercase letters, digits and -, starting with a letter", "-"),
    TOPIC_PREFIX: ("lowercase letters, digits, '.', '_' and '-'", "_"),
}


def _pydantic_problem(document: Document, err: ErrorDetails) -> Problem:
    loc = err["loc"]
    kind = err["type"]
    if kind == "extra_forbidden":
        return document.problem(loc, _unknown_key(loc), at_key=True)
    if kind == "missing":
        return document.problem(loc[:-1], _missing_key(loc))
    return document.problem(loc, _value_message(document, err))


def _unknown_key(loc: Loc) -> str:
    key = loc[-1]
    owner = _type_at(loc[:-1])
    allowed = _keys(owner) if _is_model(owner) else []
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = f"; the keys allowed here are: {', '.join(allowed)}" if allowed else "; remove it"
    return f"unknown key {key!r}{hint}{listed}"


def _missing_key(loc: Loc) -> str:
    key = loc[-1]
    info = _field_info(loc)
    if info is None:
        return f"missing required key {key!r}"
    example = info.examples[0] if info.examples else "..."
    return f"missing required key {key!r}: add `{key}: {_yaml_scalar(example)}` ({_sentence(info.description)})"


def _value_message(document: Document, err: ErrorDetails) -> str:
    loc, kind, value = err["loc"], err["type"], err["input"]
    label = _label(document.matched(loc))
    if kind in _EXPECTED:
        return f"{label}: expected {_EXPECTED[kind]}, got {describe_value(value)}{_example(loc)}"
    if kind == "literal_error":
        allowed = [str(a) for a in get_args(_strip_optional(_type_at(loc)))] or [err.get("ctx", {}).get("expected", "")]
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{label}: {value!r} is not allowed{hint}; write one of: {', '.join(allowed)}"
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        rule, sep = _PATTERNS.get(pattern, (f"text matching {pattern}", "_"))
        fixed = re.sub(r"[^a-z0-9]+", sep, str(value).lower()).strip(sep).lstrip("0123456789" + sep) or "name"
        return f"{label}: {value!r} is not valid here; write {rule}, e.g. {fixed!r}"
    if kind == "too_short":
        return f"{label}: the list is empty; give at least one item or leave the key out"
    if kind in ("filter_operator", "filter_shape", "start", "connector_side"):
        return err["msg"]
    return f"{label}: {err['msg'][:1].lower()}{err['msg'][1:]}"


def _label(parts: list[str | int]) -> str:
    """``fields[2]`` for (..., 'fields', 2); the last key with the indexes after it."""
    keys = [i for i, p in enumerate(parts) if isinstance(p, str)]
    if not keys:
        return "this item"
    start = keys[-1]
    return str(parts[start]) + "".join(f"[{p}]" for p in parts[start + 1:])


def _example(loc: Loc) -> str:
    """``; write e.g. `partitions: 6``` when ``loc`` ends at a field that has examples."""
    info = _field_info(loc) if loc else None
    if info is None or not info.examples:
        return ""
    return f"; write e.g. `{loc[-1]}: {_yaml_scalar(info.examples[0])}`"


def describe_value(value: Any) -> str:
    """A YAML value in words, for error messages ("the text 'x'", "a list")."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _sentence(text: str | None) -> str:
    text = (text or "").rstrip(".")
    return text[:1].lower() + text[1:]


# -- walking the model types along an error's loc ---------------------------------------


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _keys(model: Any) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _strip_optional(tp: Any) -> Any:
    """Annotated[...] without a discriminator, and ``X | None``, reduced to ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            inner, *meta = get_args(tp)
            if any(isinstance(m, Discriminator) for m in meta):
                return inner
            tp = inner
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1 or len(rest) == len(get_args(tp)):
                return tp
            tp = rest[0]
        else:
            return tp


def _tag(member: Any) -> str | None:
    if get_origin(member) is Annotated:
        for meta in get_args(member)[1:]:
            tag = getattr(meta, "tag", None)
            if isinstance(tag, str):
                return tag
    return None


def _step(tp: Any, part: str | int) -> Any:
    tp = _strip_optional(tp)
    if _is_model(tp):
        return next((f.annotation for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
    origin = get_origin(tp)
    if origin is list and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    if origin in (Union, types.UnionType):
        return next((m for m in get_args(tp) if _tag(m) == part), None)
    return None


def _type_at(loc: Loc) -> Any:
    tp: Any = Topology
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return None
    return _strip_optional(tp)


def _field_info(loc: Loc) -> FieldInfo | None:
    owner = _type_at(loc[:-1])
    if not _is_model(owner):
        return None
    return next((f for n, f in owner.model_fields.items() if (f.alias or n) == loc[-1]), None)

