"""Content digests: sha256 of files (with a stat-keyed cache, so no-op builds don't re-read weights)
and of canonical JSON (sorted keys, compact) for stage keys."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .jsonio import read_mapping, write_atomic

_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class DigestCache:
    """sha256 of files keyed by (path, size, mtime_ns, inode, ctime_ns), like DVC's state DB.

    A touched file (new mtime) is re-hashed, and a re-hash that gives the same digest changes no key:
    mtimes never decide staleness, they only save re-reading unchanged files. ctime is in the key because
    an in-place edit that restores size and mtime (``cp -p``, ``touch -r``, tools that keep mtimes) still
    moves it: ``utime`` cannot set it back.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        if path is not None:
            self.entries = read_mapping(path)

    def sha256(self, file: Path) -> str:
        st = file.stat()
        name = str(file.resolve())
        stat_key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        hit = self.entries.get(name)
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == stat_key:
            return str(hit[4])
        value = sha256_file(file)
        self.entries[name] = [*stat_key, value]
        self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, self.entries, durable=False, indent=None)  # a cache: rebuilt when lost
            self.dirty = False
        except OSError:
            pass  # a cache that cannot be saved only costs a re-hash next time
