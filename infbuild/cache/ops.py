"""Restore a stage's outputs from the first cache that has its key, or store them after a build.
Every problem with a cache is a warning (reported once) and a local build, never a failed build."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InfbuildError
from ..worker import say
from .entry import BadEntry

_warned: set[str] = set()
_down: set[str] = set()  # caches that failed to answer: not asked again by this process


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        say(f"warning: {message}")


@dataclass
class CacheOutcome:
    cache: str
    stamp: dict[str, Any]
    seconds: float


def restore(caches: Sequence[Any], key: str, staging: Path) -> CacheOutcome | None:
    """Write the cached files for ``key`` into ``staging`` (checked against the cached stamp) and say whence."""
    for cache in caches:
        if cache.name in _down:
            continue
        started = time.perf_counter()
        try:
            found = cache.get(key)
        except BadEntry as exc:
            warn_once(f"cache {cache.name}: entry {key[:12]} unusable ({exc}); building instead")
            continue
        except (InfbuildError, OSError) as exc:
            _down.add(cache.name)
            warn_once(f"cache {cache.name} unavailable ({exc}); building locally")
            continue
        if found is None:
            continue
        stamp, files = found
        for name, data in files.items():
            dest = staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return CacheOutcome(cache.name, stamp, time.perf_counter() - started)
    return None


@dataclass
class Stored:
    written: list[str]  # the caches this call wrote the entry to
    held_by: Any = None  # the first writable cache that already held an entry for the key (its writer won)


def store(caches: Sequence[Any], key: str, stamp: dict[str, Any], folder: Path, replace: bool = False) -> Stored:
    """Put a built stage into every writable cache that has no entry for its key yet (first writer wins)."""
    outcome = Stored([])
    for cache in caches:
        if not cache.writable or cache.name in _down:
            continue
        try:
            if cache.put(key, stamp, folder, replace=replace):
                outcome.written.append(cache.name)
            elif outcome.held_by is None:
                outcome.held_by = cache
        except (InfbuildError, OSError) as exc:
            _down.add(cache.name)
            warn_once(f"cache {cache.name}: could not store {stamp.get('stage')}:{stamp.get('recipe')} ({exc})")
    return outcome


def same_files(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two stamps name the same files with the same contents."""
    return {n: m.get("sha256") for n, m in a["files"].items()} == {n: m.get("sha256") for n, m in b["files"].items()}


def differs_from(cache: Any, key: str, stamp: dict[str, Any]) -> bool:
    """Whether the cache's entry for ``key`` is anything but the files ``stamp`` names (unreadable or gone
    included: then adopting it fails and ours replaces it)."""
    try:
        held = cache.peek(key)
    except (BadEntry, InfbuildError, OSError):
        return True
    return held is None or not same_files(held, stamp)
