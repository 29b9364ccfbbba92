"""What a cache entry is (a stamp plus its files' bytes), and the checks that make entries safe to use."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable

from ..artifacts import Outputs, unsafe_name
from ..packages import changes
from ..stamp import Stamp, stamp_problem

STAMP_FIELDS = ("key", "stage", "recipe", "target", "files", "fingerprint")


class BadEntry(Exception):
    """A cache entry that must not be used (corrupt, truncated, tampered or hostile): treated as a miss."""


def safe_name(name: Any) -> str:
    """A file name inside a stage folder (see ``unsafe_name``), else BadEntry."""
    why = unsafe_name(name)
    if why:
        raise BadEntry(why)
    return str(name)


@dataclass(frozen=True)
class Wanted:
    """The stage being built: an entry is a hit only when its stamp says it is exactly this stage's output."""

    key: str
    stage: str
    recipe: str
    target: str
    outputs: Outputs

    def check(self, stamp: dict[str, Any]) -> None:
        why = stamp_problem(Stamp.from_json(stamp), self.stage, self.recipe, self.target, self.outputs)
        upgraded = changes(stamp.get("packages"))
        if why or upgraded:
            raise BadEntry(why or f"built with other package versions than this host's: {', '.join(upgraded)}")


MAX_STAMP_BYTES = 16 << 20  # a stamp lists file names and digests: anything larger is not one


def read_entry_json(read: Callable[[], bytes]) -> Any:
    """Parse an entry's stamp JSON; anything unreadable, oversized or too deeply nested is a BadEntry."""
    try:
        raw = read()
    except OSError as exc:
        raise BadEntry(f"entry unreadable: {exc.strerror or exc}") from None
    if len(raw) > MAX_STAMP_BYTES:
        raise BadEntry(f"entry stamp is {len(raw)} bytes, more than a stamp can be")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BadEntry("entry is not valid JSON") from None


def check_stamp(stamp: Any, key: str) -> dict[str, Any]:
    if not isinstance(stamp, dict) or any(f not in stamp for f in STAMP_FIELDS):
        raise BadEntry("entry stamp is malformed")
    if stamp["key"] != key:
        raise BadEntry(f"entry is for key {str(stamp['key'])[:12]}, not {key[:12]}")
    if not isinstance(stamp["files"], dict) or not stamp["files"]:
        raise BadEntry("entry lists no files")
    for name, meta in stamp["files"].items():
        safe_name(name)
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("size"), int) \
                or isinstance(meta.get("size"), bool) or meta["size"] < 0:
            raise BadEntry(f"entry file {name!r} has no sha256/size")
    folders = {str(parent) for name in stamp["files"] for parent in PurePosixPath(name).parents}
    clash = sorted(folders & set(stamp["files"]))
    if clash:
        raise BadEntry(f"entry lists {clash[0]!r} both as a file and as a folder")
    return stamp


def check_bytes(name: str, data: bytes, meta: dict[str, Any]) -> None:
    if len(data) != meta["size"]:
        raise BadEntry(f"{name}: {len(data)} bytes, the stamp says {meta['size']} (truncated?)")
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise BadEntry(f"{name}: sha256 differs from the stamp (corrupted or tampered)")
