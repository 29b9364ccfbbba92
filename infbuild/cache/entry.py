"""What a cache entry is (a stamp plus its files' bytes), and the checks that make entries safe to use."""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any

STAMP_FIELDS = ("key", "stage", "files", "fingerprint")


class BadEntry(Exception):
    """A cache entry that must not be used (corrupt, truncated, tampered or hostile): treated as a miss."""


def safe_name(name: Any) -> str:
    """A file name inside a stage folder: relative, no '..', no absolute path, no backslashes or NULs."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BadEntry(f"invalid file name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise BadEntry(f"file name {name!r} would escape the stage folder")
    return str(path)


def check_stamp(stamp: Any, key: str) -> dict[str, Any]:
    if not isinstance(stamp, dict) or any(f not in stamp for f in STAMP_FIELDS):
        raise BadEntry("entry stamp is malformed")
    if stamp["key"] != key:
        raise BadEntry(f"entry is for key {str(stamp['key'])[:12]}, not {key[:12]}")
    if not isinstance(stamp["files"], dict) or not stamp["files"]:
        raise BadEntry("entry lists no files")
    for name, meta in stamp["files"].items():
        safe_name(name)
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("size"), int):
            raise BadEntry(f"entry file {name!r} has no sha256/size")
    return stamp


def check_bytes(name: str, data: bytes, meta: dict[str, Any]) -> None:
    if len(data) != meta["size"]:
        raise BadEntry(f"{name}: {len(data)} bytes, the stamp says {meta['size']} (truncated?)")
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise BadEntry(f"{name}: sha256 differs from the stamp (corrupted or tampered)")
