"""Recipe files already parsed and checked against the schema, by content: a no-op build re-parses none of them
(the pure-Python YAML parser and jsonschema are most of its cost). The semantic checks, which look at the
project's files, run every time.

An entry is keyed by the file's bytes and suffix, and the whole cache by the schema and the parsing code, so an
edited recipe, schema or parser is checked afresh. It lives in ``artifacts/.infbuild/`` with the build's other
bookkeeping (the digest cache, the locks): trusted local state, like doit's DB, never shared through caches.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .jsonio import read_or_none, write_atomic
from .recipe_file import FieldPath

MAX_ENTRIES = 1000  # recipes of a project; older entries go first


def content_key(text: str, suffix: str) -> str:
    return hashlib.sha256(f"{suffix}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


class CheckedRecipes:
    def __init__(self, path: Path | None, version: str) -> None:
        """``version``: the digest of what decides what passes (the schema, the parser, the loader)."""
        self.path = path
        self.version = version
        self.entries: dict[str, Any] = {}
        self.dirty = False
        if path is None:
            return
        data = read_or_none(path)
        if isinstance(data, dict) and data.get("version") == self.version and isinstance(data.get("entries"), dict):
            self.entries = data["entries"]

    def get(self, key: str) -> tuple[Any, dict[FieldPath, int]] | None:
        """(data, field lines) of a recipe text that parsed and passed the schema, or None."""
        entry = self.entries.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("lines"), list):
            return None
        try:
            lines = {tuple(p): int(line) for p, line in entry["lines"]}
        except (TypeError, ValueError):
            return None
        return entry.get("data"), lines

    def put(self, key: str, data: Any, lines: dict[FieldPath, int]) -> None:
        """Remember a recipe text that parsed and passed the schema (JSON values only, which is all a recipe holds)."""
        try:
            if json.loads(json.dumps(data)) != data:
                return
        except (TypeError, ValueError, RecursionError):
            return
        self.entries.pop(key, None)
        self.entries[key] = {"data": data, "lines": [[list(p), line] for p, line in lines.items()]}
        while len(self.entries) > MAX_ENTRIES:
            self.entries.pop(next(iter(self.entries)))
        self.dirty = True

    def save(self) -> None:
        """Write the cache, into a bookkeeping folder that a build already made (checking recipes alone, as
        `infbuild validate` does, creates nothing)."""
        if not self.dirty or self.path is None or not self.path.parent.is_dir():
            return
        try:
            write_atomic(self.path, {"version": self.version, "entries": self.entries})
        except OSError:
            pass  # a read-only artifacts folder: recipes are simply checked again next time
        self.dirty = False
