"""Shared artifact caches keyed by stage key (like Bazel's action cache and DVC's run cache): a local
content-addressed folder and OCI registries. Entries are untrusted: every file is checked against the
cached stamp before anything reaches artifacts/, and a bad entry is a miss, never a crash."""
from .base import Cache
from .config import configured_caches
from .entry import Wanted
from .ops import CacheOutcome, Stored, differs_from, restore, store, unusable

__all__ = ["Cache", "CacheOutcome", "Stored", "Wanted", "configured_caches", "differs_from", "restore", "store",
           "unusable"]
