"""What every cache is (the local folder and OCI registries alike): the interface the engine and the CLI use."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from .entry import Wanted


class Cache(Protocol):
    name: str  # "local:/path" or "oci:registry/repository", as configured
    kind: str  # "local" (this machine's: also trusts its own key) or "oci" (shared)
    writable: bool

    def where(self, key: str) -> str:
        """Where the entry for ``key`` lives (for messages)."""

    def get(self, wanted: Wanted, staging: Path) -> dict[str, Any] | None:
        """The entry's stamp when it is exactly ``wanted``, its files placed into the empty folder ``staging``
        (streamed or linked, checked against the stamp); None on a miss; BadEntry when it must not be used (the
        caller empties ``staging``); InfbuildError/OSError when the cache cannot answer."""

    def peek(self, key: str) -> dict[str, Any] | None:
        """The entry's stamp (checked, files not fetched), or None."""

    def put(self, key: str, stamp: dict[str, Any], folder: Path, replace: bool = False) -> bool:
        """Store the folder's stamped files under ``key`` (``stamp`` may carry the folder's signature under
        ``"signature"``); False when an entry was there first (kept unless ``replace``)."""

    def entries(self) -> list[dict[str, Any]]:
        """Every entry: key, stage, recipe, target, size."""

    def size(self) -> int | None:
        """Bytes held, or None when the cache cannot tell."""

    def gc(self, max_size: int) -> tuple[int, int] | None:
        """Evict least recently used entries down to ``max_size``: (entries removed, bytes freed); None when this
        kind of cache is not pruned by infbuild."""
