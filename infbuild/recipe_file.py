"""Parse a YAML or JSON recipe file into plain data plus the line of every field."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

FieldPath = tuple[str | int, ...]


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")


def field_name(path: FieldPath) -> str:
    """Render ``("inputs", "x", "shape", 0)`` as ``inputs.x.shape[0]``; odd keys quoted: ``dims["a b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            out += f"[{json.dumps(str(part), ensure_ascii=True)}]"
        else:
            out += f".{part}" if out else str(part)
    return out


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


def _positions(text: str) -> _Walker:
    walker = _Walker()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return walker
    if node is not None:
        walker.walk(node, ())
    return walker


def parse(path: Path, display: str) -> tuple[Any, dict[FieldPath, int], list[Problem]]:
    """Return (data, field lines, problems) for one recipe file; data is None when unparsable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, {}, [Problem(display, 1, "", f"cannot read recipe file: {exc}")]
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, {}, [Problem(display, exc.lineno, "", f"JSON syntax error: {exc.msg} (column {exc.colno})")]
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
            return None, {}, [Problem(display, line, "", message)]
        except RecursionError:
            return None, {}, [Problem(display, 1, "", "YAML nesting too deep")]
    try:
        walker = _positions(text)
    except RecursionError:
        walker = _Walker()
    problems = [
        Problem(display, line, field_name(p), "duplicate key (the later value would silently win)")
        for p, line in walker.duplicates
    ]
    return data, walker.lines, problems


def line_of(lines: dict[FieldPath, int], path: FieldPath) -> int:
    """Line of the field, or of its nearest ancestor present in the file."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
