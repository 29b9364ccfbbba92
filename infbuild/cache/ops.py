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


def store(caches: Sequence[Any], key: str, stamp: dict[str, Any], folder: Path) -> list[str]:
    """Put a built stage into every writable cache; returns the names it went to."""
    stored = []
    for cache in caches:
        if not cache.writable or cache.name in _down:
            continue
        try:
            cache.put(key, stamp, folder)
            stored.append(cache.name)
        except (InfbuildError, OSError) as exc:
            _down.add(cache.name)
            warn_once(f"cache {cache.name}: could not store {stamp.get('stage')}:{stamp.get('recipe')} ({exc})")
    return stored
