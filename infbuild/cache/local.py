"""A local, content-addressed cache folder: blobs/<sha256> hold file bytes once (read-only), entries/<key>.json
hold stamps. Restores link blobs into the stage folder where the file system allows (``links``). Writes are atomic
(temp file + rename; blobs before the entry that names them), so concurrent builds never see a torn entry; the
first entry written for a key stays (later writers adopt it); gc takes an exclusive lock, writers a shared one."""
from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..filelock import flocked
from .entry import BadEntry, Wanted, check_stamp, read_entry_json
from .links import LINK_TYPES, check_file, place


class LocalCache:
    kind = "local"

    def __init__(self, path: Path, writable: bool = True, link_types: tuple[str, ...] = LINK_TYPES) -> None:
        self.path = path
        self.writable = writable
        self.link_types = link_types  # how restores place files: links.place
        self.placed: dict[str, str] = {}  # file -> the link type the last restore used for it
        self.name = f"local:{path}"

    def _lock(self, exclusive: bool) -> AbstractContextManager[None]:
        return flocked(self.path / ".lock", shared=not exclusive)

    def _blob(self, sha: str) -> Path:
        return self.path / "blobs" / sha[:2] / sha

    def _entry(self, key: str) -> Path:
        return self.path / "entries" / f"{key}.json"

    def _write_temp(self, dest: Path, data: bytes) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _store_blob(self, source: Path, blob: Path) -> None:
        """A blob, read-only, from a stage's file: cloned or streamed (never a hard link to the stage's own file,
        which stays the user's to edit), then renamed into place."""
        blob.parent.mkdir(parents=True, exist_ok=True)
        tmp = blob.with_name(f".{blob.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            place(source, tmp, ("reflink", "copy"))
            os.chmod(tmp, 0o444)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)

    def _atomic_write(self, dest: Path, data: bytes) -> None:
        os.replace(self._write_temp(dest, data), dest)

    def where(self, key: str) -> str:
        """The entry's location, for messages."""
        return str(self._entry(key))

    def get(self, wanted: Wanted, staging: Path) -> dict[str, Any] | None:
        """The entry for ``wanted.key``, checked, its files placed into the empty folder ``staging`` (reflinked,
        hard-linked or copied: ``links.place``, never through memory): its stamp names this stage and its outputs,
        every file matches the stamp's size and sha256. None when absent; BadEntry when unusable."""
        path = self._entry(wanted.key)
        if not path.is_file():
            return None
        with self._lock(exclusive=False):
            stamp = check_stamp(read_entry_json(path.read_bytes), wanted.key)
            wanted.check(stamp)
            for name, meta in stamp["files"].items():
                blob = self._blob(meta["sha256"])
                try:
                    if blob.stat().st_size != meta["size"]:
                        raise BadEntry(f"{name}: blob has {blob.stat().st_size} bytes, the stamp says {meta['size']} "
                                       "(truncated?)")
                    dest = staging / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.placed[name] = place(blob, dest, self.link_types)
                except FileNotFoundError:
                    raise BadEntry(f"{name}: blob missing from the cache") from None
                except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                    raise BadEntry(f"{name}: cannot be written into the stage folder ({exc.strerror})") from None
                check_file(name, dest, meta)
            os.utime(path)  # last use, for gc
        return stamp

    def peek(self, key: str) -> dict[str, Any] | None:
        """The entry's stamp as stored (its files unchecked), or None when the key has no entry."""
        path = self._entry(key)
        if not path.exists():
            return None
        return check_stamp(read_entry_json(path.read_bytes), key)

    def put(self, key: str, stamp: dict[str, Any], folder: Path, replace: bool = False) -> bool:
        """Store the stage unless its key already has an entry (first writer wins; ``replace`` overrides).
        Returns whether this call wrote the entry. Blobs go first, the entry is linked in atomically."""
        with self._lock(exclusive=False):
            entry = self._entry(key)
            if entry.exists() and not replace:
                return False
            for name, meta in stamp["files"].items():
                blob = self._blob(meta["sha256"])
                if not blob.exists():
                    self._store_blob(folder / name, blob)
            if replace:
                self._atomic_write(entry, json.dumps(stamp, sort_keys=True).encode())
                return True
            tmp = self._write_temp(entry, json.dumps(stamp, sort_keys=True).encode())
            try:
                os.link(tmp, entry)  # fails if another build linked its entry in first
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            return True

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.path / "entries").glob("*.json")):
            try:
                stamp = json.loads(path.read_text(encoding="utf-8"))
                size = sum(m["size"] for m in stamp["files"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            out.append({"key": path.stem, "stage": stamp.get("stage"), "recipe": stamp.get("recipe"),
                        "target": stamp.get("target"), "size": size, "used": path.stat().st_mtime})
        return out

    def size(self) -> int:
        return sum(p.stat().st_size for p in (self.path / "blobs").rglob("*") if p.is_file())

    def gc(self, max_size: int) -> tuple[int, int]:
        """Evict least recently used entries until the blobs fit in max_size; returns (entries, bytes) freed."""
        with self._lock(exclusive=True):
            before = self.size()
            entries = sorted(self.entries(), key=lambda e: e["used"])
            removed = 0
            while entries and self._referenced_size() > max_size:
                victim = entries.pop(0)
                self._entry(victim["key"]).unlink(missing_ok=True)
                removed += 1
            referenced = self._referenced()
            for blob in (self.path / "blobs").rglob("*"):
                if blob.is_file() and blob.name not in referenced:
                    blob.unlink()
            for tmp in self.path.rglob(".*.tmp"):
                if time.time() - tmp.stat().st_mtime > 3600:
                    tmp.unlink(missing_ok=True)
            return removed, before - self.size()

    def _referenced(self) -> set[str]:
        refs: set[str] = set()
        for path in (self.path / "entries").glob("*.json"):
            try:
                refs |= {m["sha256"] for m in json.loads(path.read_text(encoding="utf-8"))["files"].values()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                path.unlink(missing_ok=True)  # a damaged entry is useless: drop it
        return refs

    def _referenced_size(self) -> int:
        return sum(self._blob(sha).stat().st_size for sha in self._referenced() if self._blob(sha).is_file())
