"""``infbuild cache push|pull``: move stages between artifacts/ and the caches with the engine's own steps."""
from __future__ import annotations

from ..cache import store
from ..keys import UpstreamMissing
from ..stamp import read_stamp
from .context import BuildContext
from .execute import entry_of, restore_stage


def push(ctx: BuildContext) -> int:
    """Store every up-to-date cacheable stage in the writable caches; the number newly stored."""
    moved = 0
    for p in ctx.planned.values():
        if p.not_buildable or not p.stage.cacheable or ctx.staleness(p) is not None:
            continue
        stamp = read_stamp(p.folder)
        if stamp is not None:
            moved += bool(store(ctx.caches, stamp.key, entry_of(p.folder, stamp), p.folder).written)
    return moved


def pull(ctx: BuildContext) -> int:
    """Restore every stale cacheable stage whose key a cache holds (in build order); the number restored."""
    moved = 0
    for p in ctx.planned.values():
        if p.not_buildable or not p.stage.cacheable or ctx.staleness(p) is None:
            continue
        try:
            key, inputs = ctx.key(p)
        except UpstreamMissing:
            continue
        moved += restore_stage(ctx, p, key, inputs, ctx.caches) is not None
    return moved
