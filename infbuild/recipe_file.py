"""Parse a YAML or JSON recipe file into plain data plus the line of every field.

A recipe file is untrusted input: reading and parsing it is bounded (file size, nesting depth, YAML alias
expansion), it yields JSON values only (no YAML timestamps, sets, binary, non-string keys), every number in
it is finite and fits 64 bits, and every problem comes back as a located ``Problem``, never an exception.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

FieldPath = tuple[str | int, ...]

MAX_RECIPE_BYTES = 128 * 1024
"""Largest recipe file read (128 KiB): real recipes are a few KB, and the pure-Python YAML parser needs up to
about 2 s per 100 KB (dense flow lists), so this bounds the time (~3 s) and memory (~100 MB) one file costs."""

MAX_DEPTH = 100
"""Deepest nesting of mappings and lists: keeps the schema check, keys and workers far from Python's recursion
limit (a recipe is about 4 levels deep; kwargs may nest a little more)."""

MAX_ALIAS_NODES = 10_000
"""Most nodes YAML aliases may add once expanded: a "billion laughs" document stays tiny on disk but expands to
10**9 nodes; counted while composing, with each anchor's expanded size computed once."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""Integers must fit 64 bits signed: numpy, torch, ONNX and trtexec all read them as int64."""

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")
_MAX_KEY_SHOWN = 80
_STR_TAG = "tag:yaml.org,2002:str"
_NOT_JSON_TAGS = ("timestamp", "binary", "set", "omap", "pairs")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')  # a string (closing quote optional: linear) or a bracket


def field_name(path: FieldPath) -> str:
    """Render ``("inputs", "x", "shape", 0)`` as ``inputs.x.shape[0]``; odd keys quoted: ``dims["a b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if len(text) > _MAX_KEY_SHOWN:
            text = text[:_MAX_KEY_SHOWN] + "..."
        if not _PLAIN_KEY.match(text):
            out += f"[{json.dumps(text, ensure_ascii=True)}]"
        else:
            out += f".{text}" if out else text
    return out


class RecipeFileError(Exception):
    """A recipe file that cannot be read or parsed within the limits, at a line."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


# --- reading ---------------------------------------------------------------------------------------------

def _kind(mode: int) -> str:
    """What a non-regular file is, for the message."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def _check_regular(mode: int) -> None:
    """Refuse anything but a regular file before reading it (a FIFO would block, /dev/zero never ends)."""
    if not stat.S_ISREG(mode):
        raise RecipeFileError(1, f"not a regular file ({_kind(mode)}); a recipe is a YAML or JSON file")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, at most MAX_RECIPE_BYTES: stat first, open non-blocking, re-check the opened file."""
    try:
        _check_regular(os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RecipeFileError(1, "cannot read recipe file: it does not exist (a dangling symlink?)") from None
    except OSError as exc:
        raise RecipeFileError(1, f"cannot read recipe file: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        _check_regular(os.fstat(handle.fileno()).st_mode)  # it may have been swapped since the stat
        data = handle.read(MAX_RECIPE_BYTES + 1)
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeFileError(1, f"recipe file is larger than {MAX_RECIPE_BYTES} bytes (the limit for one recipe)")
    return data


def decode(data: bytes) -> str:
    """UTF-8 text; a bad byte is reported at its own line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeFileError(line, f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column} ({exc.reason})") from None


# --- YAML ------------------------------------------------------------------------------------------------

def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """YAML types that JSON lacks (timestamps, sets, binary, ordered maps) are not recipe values."""
    raise yaml.constructor.ConstructorError(None, None, f"{_short_tag(node.tag)} values are not allowed in a recipe "
                                            "(JSON values only; quote it to make it a string)", node.start_mark)


def _guard_scalar(base: Any) -> Any:
    """Wrap a scalar constructor: a malformed value (``!!int ''``, ``!!bool maybe``, a 4300+ digit number)
    becomes a located YAML error instead of a ValueError, IndexError or KeyError."""
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return base(loader, node)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            detail = str(exc).split(";")[0] if isinstance(exc, ValueError) else f"{_short_tag(node.tag)} {node.value!r}"
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {_short_tag(node.tag)} value: "
                                                    f"{detail[:120]}", node.start_mark) from None
    return construct


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting and alias expansion while composing, and constructs JSON values only."""

    yaml_implicit_resolvers = {  # dates stay strings: `version: 2024-01-01` means the text
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._alias_nodes = 0
        self._open_anchors: set[str] = set()
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Compose one node, refusing too deep nesting, recursive aliases and too much alias expansion."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise RecipeFileError(event.start_mark.line + 1, f"nesting too deep: more than {MAX_DEPTH} levels")
        anchor = event.anchor
        self._depth += 1
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        """Add the aliased node's expanded size to the total; refuse past MAX_ALIAS_NODES."""
        line = event.start_mark.line + 1
        if event.anchor in self._open_anchors:
            raise RecipeFileError(line, f"alias *{event.anchor} refers to a node that contains it (a recursive "
                                  "structure, which JSON cannot hold)")
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # the composer reports the undefined alias
        self._alias_nodes += self._size(target)
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise RecipeFileError(line, f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (at alias "
                                  f"*{event.anchor}); a recipe may repeat at most {MAX_ALIAS_NODES} nodes through aliases")

    def _size(self, node: yaml.Node) -> int:
        """Nodes in ``node`` with every alias expanded; each distinct node is sized once (aliases share nodes)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._size(key) + self._size(value) for key, value in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return size

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Mapping keys must be strings, as in JSON: YAML reads ``1:``, ``yes:`` or ``null:`` otherwise."""
        self.flatten_mapping(node)
        for key_node, _ in node.value:
            if key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else key_node.id
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {json.dumps(str(shown)[:40])} is not a string (YAML reads it as "
                    f"{_short_tag(key_node.tag)}); quote it", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


for _tag in _NOT_JSON_TAGS:
    _RecipeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
for _tag in ("null", "bool", "int", "float"):
    _RecipeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}",
                                  _guard_scalar(yaml.SafeLoader.yaml_constructors[f"tag:yaml.org,2002:{_tag}"]))


class _Walker:
    """Walks a composed YAML node tree, recording lines and duplicate keys."""

    def __init__(self) -> None:
        self.lines: dict[FieldPath, int] = {}
        self.duplicates: list[tuple[FieldPath, int]] = []

    def walk(self, node: yaml.Node, path: FieldPath) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = path + (key,)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, path + (index,))


def _yaml_problem(exc: yaml.YAMLError, text: str) -> RecipeFileError:
    """A located syntax error from any YAML exception."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[:exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else 0
        return RecipeFileError(line, f"YAML syntax error: unacceptable character #x{char:04x}: {exc.reason}")
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["invalid YAML"])[0]
    context = getattr(exc, "context", None)
    kind = "YAML value error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
    return RecipeFileError(line, f"{kind}: {problem}" + (f" ({context})" if context else ""))


def _load_yaml(text: str, construct: bool = True) -> tuple[Any, _Walker]:
    """Compose once (bounded), record lines, then construct the data from the same nodes."""
    walker = _Walker()
    loader = None
    try:
        loader = _RecipeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, walker
        walker.walk(node, ())  # before constructing: merge keys (<<) rewrite the nodes
        return (loader.construct_document(node) if construct else None), walker
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    except RecursionError:
        raise RecipeFileError(1, f"nesting too deep: more than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def _positions(text: str) -> _Walker:
    """Field lines of a JSON text, read as YAML (JSON is nearly a subset); none where that fails."""
    try:
        return _load_yaml(text, construct=False)[1]
    except RecipeFileError:
        return _Walker()


# --- JSON ------------------------------------------------------------------------------------------------

def _json_too_deep(text: str) -> int | None:
    """Line where a JSON text nests deeper than MAX_DEPTH, found without recursion (json.loads would overflow)."""
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return text.count("\n", 0, match.start()) + 1
        elif token in "]}":
            depth -= 1
    return None


def _load_json(text: str) -> Any:
    """json.loads, bounded in depth; every failure is a located RecipeFileError."""
    line = _json_too_deep(text)
    if line is not None:
        raise RecipeFileError(line, f"nesting too deep: more than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeFileError(exc.lineno, f"JSON syntax error: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        long_number = re.search(r"\d{4300}", text)
        line = text.count("\n", 0, long_number.start()) + 1 if long_number else 1
        raise RecipeFileError(line, f"cannot read number: {str(exc).split(';')[0]}") from None
    except RecursionError:
        raise RecipeFileError(1, f"nesting too deep: more than {MAX_DEPTH} levels") from None


# --- values ----------------------------------------------------------------------------------------------

def _number_problem(value: Any) -> str | None:
    """Why a parsed number cannot be used (non-finite, or an integer beyond 64 bits); None when fine."""
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"{shown} is not allowed: numbers must be finite"
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        return f"integer out of range: integers must fit 64 bits ({INT_MIN}..{INT_MAX})"
    return None


def value_problems(data: Any, display: str, lines: dict[FieldPath, int]) -> list[Problem]:
    """Every non-finite or out-of-range number anywhere in the data, located (iterative: no recursion)."""
    problems: list[Problem] = []
    stack: list[tuple[FieldPath, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((path + (key,), item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((path + (index,), item) for index, item in enumerate(value))
        else:
            message = _number_problem(value)
            if message:
                problems.append(Problem(display, line_of(lines, path), field_name(path), message))
    return problems


def read_text(path: Path) -> str:
    """The file's text (bounded, never from a FIFO, device or folder), else a located RecipeFileError."""
    return decode(read_bytes(path))


def parse_text(text: str, suffix: str, display: str) -> tuple[Any, dict[FieldPath, int], list[Problem]]:
    """(data, field lines, problems) of a recipe's text: JSON for ``.json``, YAML otherwise."""
    try:
        if suffix == ".json":
            data = _load_json(text)
            walker = _positions(text)
        else:
            data, walker = _load_yaml(text)
    except RecipeFileError as exc:
        return None, {}, [Problem(display, exc.line, "", exc.message)]
    problems = [
        Problem(display, line, field_name(p), "duplicate key (the later value would silently win)")
        for p, line in walker.duplicates
    ]
    return data, walker.lines, problems + value_problems(data, display, walker.lines)


def line_of(lines: dict[FieldPath, int], path: FieldPath) -> int:
    """Line of the field, or of its nearest ancestor present in the file."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
