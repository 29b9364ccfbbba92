"""Restore a stage's outputs from the first cache that has its key, or store them after a build.
Every problem with a cache is a warning (reported once) and a local build, never a failed build."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..console import say
from ..errors import InfbuildError
from ..stamp import Stamp
from .base import Cache
from .entry import SIGNATURE_FIELD, BadEntry, Wanted, signature_problem

if TYPE_CHECKING:
    from ..signing.trust import Trust

_warned: set[str] = set()
_down: set[str] = set()  # caches that failed to answer: not asked again by this process


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        say(f"warning: {message}")


@dataclass
class CacheOutcome:
    cache: str  # the cache's name
    stamp: Stamp  # the entry's stamp (checked)
    seconds: float
    signature: dict[str, Any] | None = None  # the entry's stage.sig, when a key this cache trusts signed it


def unusable(cache: Cache, key: str, why: object) -> str:
    """The warning for an entry that is a miss: which cache, which entry, why, and what happens instead."""
    return f"cache {cache.name}: entry {cache.where(key)} unusable ({why}); building instead"


def trusted_by(cache: Cache, trust: Trust | None) -> dict[str, Any]:
    """The keys whose signatures a cache's entries may carry: a local cache also trusts this machine's key."""
    if trust is None:
        return {}
    return trust.for_local() if cache.kind == "local" else trust.for_shared()


def restore(caches: Sequence[Cache], wanted: Wanted, staging: Path, trust: Trust | None = None) -> CacheOutcome | None:
    """Write the cached files of the stage ``wanted`` names into the empty folder ``staging``, from the first
    cache whose entry is exactly that stage's output (its stamp's stage, recipe, target, key and outputs) with
    every byte checked — and, when ``trust`` is enforced, signed by a key that cache is trusted with, checked before
    any file is fetched; say whence. Anything else is a miss, warned about once, and ``staging`` is left empty."""
    for cache in caches:
        if cache.name in _down:
            continue
        started = time.perf_counter()
        keys = trusted_by(cache, trust)
        try:
            stamp = cache.get(replace(wanted, trusted=keys, require_signature=bool(trust and trust.enforced)), staging)
            if stamp is None:
                continue
        except BadEntry as exc:
            _empty(staging)
            warn_once(unusable(cache, wanted.key, exc))
            continue
        except (InfbuildError, OSError) as exc:
            _empty(staging)
            _down.add(cache.name)
            warn_once(f"cache {cache.name} unavailable ({exc}); building locally")
            continue
        signature = stamp.pop(SIGNATURE_FIELD, None)
        kept = signature if signature is not None and signature_problem({**stamp, SIGNATURE_FIELD: signature}, keys) is None \
            else None  # kept only when a key this cache is trusted with signed it
        if kept is None:
            warn_once(f"cache {cache.name}: restoring entries no trusted key signed, on their consistency alone: anyone "
                      "who can write this cache can run code here (set trusted_keys: see the README's trust model)")
        return CacheOutcome(cache.name, Stamp.from_json(stamp), time.perf_counter() - started, kept)
    return None


def _empty(staging: Path) -> None:
    for child in staging.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@dataclass
class Stored:
    written: list[str]  # the caches this call wrote the entry to
    held_by: Cache | None = None  # the first writable cache that already held an entry for the key (its writer won)


def store(caches: Sequence[Cache], key: str, stamp: dict[str, Any], folder: Path, replace: bool = False) -> Stored:
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


def differs_from(cache: Cache, key: str, stamp: Stamp) -> bool:
    """Whether the cache's entry for ``key`` is anything but the files ``stamp`` names (unreadable or gone
    included: then adopting it fails and ours replaces it)."""
    try:
        held = cache.peek(key)
    except (BadEntry, InfbuildError, OSError):
        return True
    return held is None or {n: m.get("sha256") for n, m in held["files"].items()} != stamp.digests()
